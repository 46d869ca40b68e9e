"""Data: which tasks exist (`registry`), how each dataset's files become canonical records
(`adapters`, `records`), where they are loaded from (`loading`, also `python -m utils.data`), the
bundled samples, seeded document-level subsets, synthetic QA tasks and the tokenized-feature cache."""
