"""The choices of `python -m task2vec` (standard library only: the command builds its parser,
checks the flags and holds its output folder before torch and transformers load)."""
from __future__ import annotations

# lm: next-token loss on the task's text; task: the task's own head (span or classes).
OBJECTIVES = ("lm", "task")
# mc: labels sampled from the probe; empirical: the data's labels; minibatch_sq: squared
# minibatch-mean gradients (task2vec.fisher).
ESTIMATORS = ("mc", "empirical", "minibatch_sq")
