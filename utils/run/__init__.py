"""Run plumbing every command shares: flags, errors, output files and the run folder, progress and the
entry point."""
