"""Data: which tasks exist (`registry`), how each dataset's files become canonical records
(`records`; `adapters` and the per-family `squad_adapters`, `duorc_adapters`, `drop_adapters`,
`classification_adapters`), where they are loaded from (`loading`; its command line `cli` is
`python -m utils.data`), the bundled samples, seeded document-level subsets, synthetic QA tasks and
the tokenized-feature cache."""
