"""`python -m task2vec.selection` (task2vec.selection.command)."""
from task2vec.selection.command import main
from utils.run.cli import run_entry_point

if __name__ == "__main__":
    run_entry_point(main)
