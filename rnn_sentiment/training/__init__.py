"""Training layer: the training loop, its saved state, pretraining and diagnostics."""
