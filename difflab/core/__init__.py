"""The diffusion math and models: one noise schedule (diffusers' timesteps 0..T-1), the CS180 UNet, the model
families (single-step denoiser, DDPM, flow matching) and model files."""
