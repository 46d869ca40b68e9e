"""Meta-learning: Reptile's bookkeeping on the weights (`reptile`), the meta-training loop (`training`)
and the body of maml_qa.py with the evaluation of adaptation on held-out tasks (`run`)."""
