"""Shared fixtures. The whole suite runs offline: the Hugging Face libraries are put in offline
mode with an empty cache before anything imports them, so no test can reach the network."""
from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path

for _variable in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE"):
    os.environ[_variable] = "1"
os.environ["HF_HOME"] = tempfile.mkdtemp(prefix="hf-home-")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import pytest  # noqa: E402

REPO_ROOT = Path(__file__).resolve().parent.parent
SHARED_DATA = Path(os.environ.get("SHARED_DATA_DIR", REPO_ROOT.parent / "shared" / "data"))


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The real public data beside the checkout; tests that need it skip on a machine without it."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"real data not found at {SHARED_DATA} (set SHARED_DATA_DIR to use it)")
    return SHARED_DATA


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny GPT-2 (2 layers, 32 wide, no dropout) with a tokenizer trained on the samples."""
    from utils.models.tiny import build_tiny_model

    folder = tmp_path_factory.mktemp("tiny") / "tiny_gpt2"
    return build_tiny_model(folder, n_layer=2, n_embd=32, n_head=2, n_positions=128,
                            vocab_size=512, dropout=0.0, seed=0)


def run_module(*args: str, env: dict[str, str] | None = None, timeout: float = 300,
               cwd: Path = REPO_ROOT) -> subprocess.CompletedProcess:
    """Run `python -m ARGS` (or a script path) from the repository root, as a user would."""
    command = [sys.executable, *args] if args[0].endswith(".py") else [sys.executable, "-m", *args]
    return subprocess.run(command, cwd=cwd, capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, **(env or {})})
