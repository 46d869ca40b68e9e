"""Target tasks: classification features, last-token pooling and the objective (`objective`), the GLUE
metrics (`metrics`), the epoch chosen on a hold-out (`selection`), and the per-seed runs of
run_target_task_GPT2_sst2_multiple.py (`target_task`, flags in `args`)."""
