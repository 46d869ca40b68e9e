"""The choices of maml_qa.py's meta-learning flags (standard library only: the script builds its
parser, checks the flags and holds its run folder before torch and transformers load)."""
from __future__ import annotations

INNER_OPTIMIZERS = ("adam", "adamw", "sgd")
INNER_STATE_CHOICES = ("reset", "carry")
SAMPLING_CHOICES = ("uniform", "proportional")
