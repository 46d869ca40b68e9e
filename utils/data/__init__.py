"""Data: the task registry, dataset formats and their adapters, canonical records, and loading
(local files or the Hub, seeded subsets, the feature cache, the bundled samples)."""
