"""Which sampler, and how many steps, each generative family uses (params.yaml `sample`), and how captions name it.
Plain Python, so the report can word its captions without importing the samplers."""
from __future__ import annotations

from dataclasses import dataclass


VARIANCE_NAMES = {"beta": " (σ² = β_t)", "posterior": " (σ² = β̃_t, the posterior variance)"}  # sample.ddpm_variance


@dataclass(frozen=True)
class SamplerChoice:
    """Which sampler and how many steps for each generative family (params.yaml `sample`), and the ancestral
    sampler's noise variance: beta (sigma^2 = beta_t, the spec's) or posterior (beta_tilde_t)."""
    ddpm_sampler: str = "ddpm"
    ddpm_steps: int = 0          # 0 = all T steps
    flow_sampler: str = "euler"
    flow_steps: int = 50
    ddpm_variance: str = "beta"

    @classmethod
    def from_params(cls, sample: dict) -> "SamplerChoice":
        return cls(sample["ddpm_sampler"], sample["ddpm_steps"], sample["flow_sampler"], sample["flow_steps"],
                   sample.get("ddpm_variance", "beta"))

    def steps(self, family: str, num_ts: int = 300) -> int:
        """Steps for a family ("ddpm" with T = num_ts timesteps, or "flow")."""
        return (self.ddpm_steps or num_ts) if family == "ddpm" else self.flow_steps

    def frame_every(self, family: str, num_ts: int = 300, frames: int = 30) -> int:
        """Record every k-th step so that a sampling GIF has about `frames` frames."""
        return max(1, self.steps(family, num_ts) // frames)

    def describe(self, family: str, num_ts: int = 300) -> str:
        """A caption fragment, e.g. 'DPM-Solver++ sampling, 30 steps' or 'DDPM ancestral sampling (σ² = β_t), 300
        steps'."""
        if family == "ddpm":
            name = {"ddpm": "DDPM ancestral", "ddim": "DDIM", "dpmsolver": "DPM-Solver++",
                    "dpmsolver_sde": "SDE-DPM-Solver++"}[self.ddpm_sampler]
            variance = VARIANCE_NAMES[self.ddpm_variance] if self.ddpm_sampler == "ddpm" else ""
            return f"{name} sampling{variance}, {self.steps(family, num_ts)} steps"
        return f"{self.flow_sampler.capitalize()} integration of the flow, {self.flow_steps} steps"
