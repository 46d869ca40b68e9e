"""Intermediate QA tasks: features and settings (features), generative QA (generative), the official
metrics (metrics), model loading, objectives and evaluation (pipeline)."""
