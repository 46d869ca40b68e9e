"""Training: the one loop (`loop`), the objectives' protocol (`objectives`), batching, seeds / device /
precision (`runtime`), data parallelism (`distributed`), the loop's flags (`args`) and resuming (`resume`)."""
