"""`python -m utils.seed_statistics`: two sets of runs compared over seeds (utils.results.seed_statistics)."""
from utils.results.seed_statistics import main
from utils.run.progress import run_entry_point

if __name__ == "__main__":
    run_entry_point(main)
