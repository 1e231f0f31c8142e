"""Part B deliverables after training: the single-step denoiser's figures, sample grids and scores, the CFG sweep."""
