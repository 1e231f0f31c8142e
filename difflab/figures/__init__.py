"""Figures and what the report renders of them: image grids, GIFs, loss curves, manifests, DVCLive curves."""
