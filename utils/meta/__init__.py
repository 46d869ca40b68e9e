"""Meta-learning across tasks: the algorithms as outer-step functions (`algorithms`), the outer loop
(`training`) and the evaluation of adaptation on held-out tasks (`evaluation`)."""
