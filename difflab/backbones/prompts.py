"""The prompts a Part A run embeds (params.yaml `part_a.<backbone>.prompts`): all that embed_prompts reads."""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Prompts:
    """samples: A.0; photo: the prompt of A.1.3-1.6 ("a high quality photo"); sdedit: the generic prompt of A.1.7,
    1.7.1 and 1.7.2 (on MNIST the unconditional one, so an edit can become another digit); edits: A.1.7.3, one per
    test image; anagrams: (view, upright prompt, transformed prompt); hybrids: (low-pass, high-pass prompt);
    three_band: (low, middle, high frequency prompt)."""
    samples: tuple[str, ...]
    photo: str
    sdedit: str
    edits: tuple[str, ...]
    anagrams: tuple[tuple[str, str, str], ...]
    hybrids: tuple[tuple[str, str], ...]
    three_band: tuple[tuple[str, str, str], ...] = ()

    @classmethod
    def from_params(cls, params: dict) -> "Prompts":
        """The prompts of the chosen backbone: all that embed_prompts reads of `part_a`."""
        a = params["part_a"]
        p = a[a["backbone"]]["prompts"]
        return cls(tuple(p["samples"]), p["photo"], p["sdedit"], tuple(p["edits"]),
                   tuple(tuple(x) for x in p["anagrams"]), tuple(tuple(x) for x in p["hybrids"]),
                   tuple(tuple(x) for x in p["three_band"]))

    def all(self) -> list[str]:
        """Every prompt Part A embeds, "" (unconditional) first, without repeats."""
        found = ["", *self.samples, self.photo, self.sdedit, *self.edits, *(p for a in self.anagrams for p in a[1:]),
                 *(p for h in self.hybrids for p in h), *(p for h in self.three_band for p in h)]
        return list(dict.fromkeys(found))
