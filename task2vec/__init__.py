"""Task2Vec for NLP tasks with a GPT-2 probe, in three layers: `embedding` (the probe, the Fisher
estimators, the embedding of a task and its files), `analysis` (distances, noise correction,
diversity, correlation, transfer, reports) and `selection` (source-selection methods scored against
measured transfer). Commands: `python -m task2vec` (embed) and `python -m task2vec.selection`."""
