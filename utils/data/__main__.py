"""`python -m utils.data`: inspect, validate and convert a task's data (the code is in utils.data.loading)."""
from utils.data.loading import main
from utils.run.cli import run_entry_point

run_entry_point(main)
