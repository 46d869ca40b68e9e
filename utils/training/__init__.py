"""Training: the one loop (`loop`), its checkpoint folders and exact resumption (`checkpoints`), its step
plan, optimizer kernels and learning-rate schedule (`schedule`), `--torch_compile` with bounded graphs
(`compilation`), inference over a set of rows (`inference`), the objectives' protocol (`objectives`),
batching, seeds / device / precision / attention (`runtime`), data parallelism (`distributed`), the
loop's flags (`args`), compute accounting (`compute`) and resuming a run's arguments (`resume`)."""
