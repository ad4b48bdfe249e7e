"""Data layer: reading review files and sources, the generated corpora, and batching."""
