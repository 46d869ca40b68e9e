"""Training: the optimizer and its one step (`optim`), the training loop with its batches, flags and
inference (`loop`), checkpoints, the trainer state and resumption (`checkpoints`), and what a run
runs on: seeds, device, precision, processes, compilation, FLOPs and the run context (`runtime`)."""
