"""The MNIST backbone's prompt grammar: pure Python, so params validation can check prompts without torch."""
from __future__ import annotations

DIGIT_WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
PROMPT_FORMS = "'7', 'seven', 'a handwritten 7' or 'a handwritten seven' (any case), or '' for no digit"


def parse_prompt(prompt: str) -> int | None:
    """The digit a prompt names, or None for the empty (unconditional) prompt."""
    text = " ".join(str(prompt).lower().split())
    if not text:
        return None
    text = text.removeprefix("a handwritten ")
    if len(text) == 1 and text.isdigit():
        return int(text)
    if text in DIGIT_WORDS:
        return DIGIT_WORDS.index(text)
    raise ValueError(f"the MNIST backbone cannot read the prompt {prompt!r}: name a digit as {PROMPT_FORMS}")
