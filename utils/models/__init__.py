"""Models: the model families, the checkpoint folder and its lineage, loading (tokenizers and the
Hub included), and tiny offline models."""
