"""`python -m utils.drop_metric`: the official DROP / Quoref metric (the code is in utils.qa.drop_metric)."""
from utils.qa.drop_metric import main

if __name__ == "__main__":
    from utils.run.cli import run_entry_point

    run_entry_point(main)
