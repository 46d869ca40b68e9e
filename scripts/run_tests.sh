#!/usr/bin/env bash
# Run the test suite (offline, CPU). Sets .venv up first if needed. Extra arguments go to pytest,
# e.g. `bash scripts/run_tests.sh -k checkpoint`.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/python -m pytest "$@"
