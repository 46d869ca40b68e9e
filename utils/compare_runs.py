"""`python -m utils.compare_runs`: several runs on one target against the plain model (utils.results.comparison)."""
from utils.results.comparison import main
from utils.run.progress import run_entry_point

if __name__ == "__main__":
    run_entry_point(main)
