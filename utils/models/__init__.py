"""Models: the families the toolkit runs (one backbone adapter each, `families`), the checkpoint
folder and its lineage (`checkpoint`), tokenizers, the Hub check and tiny offline models."""
