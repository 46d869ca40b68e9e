"""Task2Vec for NLP tasks with a GPT-2 probe: Fisher estimators, embeddings, distances, diversity.

Modules: `layout` (covered parameters and their coordinates), `fisher` (the diagonal Fisher
estimators; their per-sequence engine is `fisher_engine`, what a probe predicts `predictions`),
`probe` (the fixed probe and its fitted head), `sequences` (task records as probe inputs), `embed`
(the embedding of a task and of its batches), `io` (files), `distances`, `diversity` (coefficients,
intervals, set statistics), `transfer` (the results table joined with diversity), `comparability`
(which embeddings one analysis may compare), `analysis` (the report TaskDiversity.py builds),
`reporting` (its files, plots and text). Command line: `python -m task2vec`.
"""
