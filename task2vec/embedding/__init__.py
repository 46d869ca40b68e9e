"""The Task2Vec embedding of a task: probe rows, the fitted probe, the diagonal Fisher, its layout and files."""
