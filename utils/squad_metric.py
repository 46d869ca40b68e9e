"""`python -m utils.squad_metric`: the official SQuAD v1.1 / v2.0 metric (the code is in utils.qa.squad_metric)."""
from utils.qa.squad_metric import main

if __name__ == "__main__":
    from utils.run.cli import run_entry_point

    run_entry_point(main)
