"""Intermediate QA tasks: span features, post-processing, each dataset's official metric (SQuAD, DROP),
generative QA, the pieces shared with Reptile (`pipeline`) and the body of
run_intermediate_source_GPT2.py (`source_task`)."""
