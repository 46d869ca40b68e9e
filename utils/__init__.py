"""The library under the study's scripts, one package per concept, in the order data flows:

- `utils.data`: the task registry, each dataset's adapter to canonical records, the bundled
  samples, seeded subsets, synthetic QA tasks, the tokenized-feature cache (`python -m utils.data`).
- `utils.models`: model families (one backbone adapter each), checkpoint folders and their
  lineage, tokenizers, the Hub check, tiny offline models.
- `utils.training`: the one training loop, the objectives' protocol, batching, the schedule,
  seeds/device/precision, data parallelism, resuming.
- `utils.qa`: intermediate QA tasks: features, post-processing, the official metrics, generative QA,
  the body of run_intermediate_source_GPT2.py.
- `utils.classification`: target tasks: pooling, the objective, the per-seed runs of
  run_target_task_GPT2_sst2_multiple.py.
- `utils.meta`: Reptile: bookkeeping, the meta-training loop, evaluation of adaptation (maml_qa.py).
- `utils.results`: what runs report and analyses read: the results table, seed statistics.
- `utils.run`: run plumbing: flags, errors, output files, the run folder, progress.

The modules at this level are the public commands' names (`python -m utils.tiny_model`, ...).
"""
