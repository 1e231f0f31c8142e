"""Diffusion Lab: the library behind the DVC stages (see README.md, Layout)."""
