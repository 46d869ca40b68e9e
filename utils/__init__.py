"""Shared library under the study's scripts: tasks, data adapters, checkpoints, run plumbing."""
