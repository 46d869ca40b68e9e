"""`python -m utils.compare_runs`: several runs on one target against the plain model (the code is in utils.results.comparison)."""
from utils.results.comparison import main

if __name__ == "__main__":
    from utils.run.cli import run_entry_point

    run_entry_point(main)
