#!/usr/bin/env bash
# Re-run the CPU benchmarks into a temporary folder and compare them with benchmarks/results/
# (recorded ratio, re-measured ratio, target, met or not). Exits 1 when a target is missed.
# Run it on a quiet machine: another process on the cores slows one side of a timing several-fold.
#   bash benchmarks/reproduce.sh [--twice] [--quick] [NAME ...]
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-.venv/bin/python}"
exec "$PYTHON" benchmarks/reproduce.py "$@"
