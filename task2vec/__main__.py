"""`python -m task2vec`: see task2vec.cli."""
from task2vec.cli import main
from utils.run.cli import run_entry_point

if __name__ == "__main__":
    run_entry_point(main)
