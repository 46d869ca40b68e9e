#!/usr/bin/env bash
# Create .venv and install the project's dependencies. Safe to re-run: it does nothing when the
# environment already matches requirements.txt.
#
#   PYTHON=python3.11 bash scripts/setup.sh     # choose the interpreter (default: python3)
#   TORCH_CUDA=1 bash scripts/setup.sh          # force the CUDA build (default: only with a GPU)
set -euo pipefail
cd "$(dirname "$0")/.."

VENV=.venv
PYTHON=${PYTHON:-python3}
TORCH_VERSION=${TORCH_VERSION:-2.13.0}
CPU_INDEX=https://download.pytorch.org/whl/cpu

if [ ! -x "$VENV/bin/python" ]; then
    echo "setup: creating $VENV with $($PYTHON --version)"
    "$PYTHON" -m venv "$VENV"
fi
PY="$VENV/bin/python"

want=$(cat requirements.txt scripts/setup.sh pyproject.toml | sha256sum | cut -d' ' -f1)
stamp="$VENV/.setup-stamp"
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
    exit 0
fi

has_gpu() { command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; }

if ! "$PY" -c "import torch" >/dev/null 2>&1; then
    if [ "${TORCH_CUDA:-0}" = "1" ] || has_gpu; then
        echo "setup: NVIDIA GPU found: installing the default (CUDA) build of torch"
        "$PY" -m pip install "torch>=2.6,<2.15"
    else
        # No GPU: the CPU build (a few hundred MB, not the multi-GB CUDA one). A CPU wheel that
        # pip can see locally (find-links) is preferred; otherwise PyTorch's CPU index is used.
        echo "setup: no GPU: installing the CPU build of torch $TORCH_VERSION"
        if "$PY" -m pip install --no-index --no-deps "torch==$TORCH_VERSION" >/dev/null 2>&1 \
                && "$PY" -c "import sys, importlib.metadata as m; sys.exit('+cpu' not in m.version('torch'))"; then
            "$PY" -m pip install "torch==$("$PY" -c "import importlib.metadata as m; print(m.version('torch'))")"
        else
            "$PY" -m pip install "torch==$TORCH_VERSION" --index-url "$CPU_INDEX" \
                --extra-index-url https://pypi.org/simple
        fi
    fi
fi

echo "setup: installing requirements.txt"
"$PY" -m pip install -r requirements.txt
# The project itself, editable: `utils` and `task2vec` import from anywhere (tests, benchmarks,
# notebooks) without sys.path edits. Without a build-isolation download when setuptools is here.
echo "setup: installing the project (pip install -e .)"
if "$PY" -c "import setuptools" >/dev/null 2>&1; then
    "$PY" -m pip install --no-deps --no-build-isolation -e . >/dev/null
else
    "$PY" -m pip install --no-deps -e . >/dev/null
fi
"$PY" -c "import torch, transformers, datasets; print(f'setup: torch {torch.__version__} (CUDA available: {torch.cuda.is_available()}), transformers {transformers.__version__}, datasets {datasets.__version__}')"
echo "$want" > "$stamp"
