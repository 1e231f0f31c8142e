"""Sampling the Part B models: DDPM ancestral, DDIM, DPM-Solver++ (diffusers) and flow Euler / Heun, with
classifier-free guidance."""
