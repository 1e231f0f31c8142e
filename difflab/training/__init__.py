"""The Part B training loop: resumable, DVCLive-logged, with opt-in recipe changes (EMA, warm-up)."""
