#!/usr/bin/env bash
# Set the project up on a fresh machine (.venv, dependencies, CPU torch without a GPU) and run the demo.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
bash scripts/demo.sh
