"""`python -m utils.data`: inspect, validate and convert a task's data (the code is in utils.data.cli)."""
from utils.data.cli import main
from utils.run.cli import run_entry_point

run_entry_point(main)
