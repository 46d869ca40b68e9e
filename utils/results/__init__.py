"""What runs report and the analyses read: the results table (`table`, its single owner) and
statistics over seeds (`seed_statistics`, also `python -m utils.seed_statistics`)."""
