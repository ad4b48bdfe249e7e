"""Inference layer: load a model, the scoring engines, batch scoring, evaluation, explanations."""
