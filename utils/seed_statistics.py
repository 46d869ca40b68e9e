"""`python -m utils.seed_statistics`: statistics over seeds, and two sets compared (the code is in utils.results.seed_statistics)."""
from utils.results.seed_statistics import main

if __name__ == "__main__":
    from utils.run.cli import run_entry_point

    run_entry_point(main)
