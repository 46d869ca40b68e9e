"""Training: the one loop (`loop`), its step plan, optimizer and learning-rate schedule (`schedule`),
inference over a set of rows (`inference`), the objectives' protocol (`objectives`), batching, seeds /
device / precision (`runtime`), data parallelism (`distributed`), the loop's flags (`args`) and
resuming (`resume`)."""
