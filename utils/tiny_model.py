"""`python -m utils.tiny_model`: a tiny model of any family, built offline (the code is in utils.models.tiny_model)."""
from utils.models.tiny_model import main

if __name__ == "__main__":
    from utils.run.cli import run_entry_point

    run_entry_point(main)
