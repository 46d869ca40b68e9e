"""What every benchmark result carries besides its numbers (DESIGN.md section 10), and how it is written."""
from __future__ import annotations

import json
import platform
from datetime import date
from pathlib import Path

import torch


def provenance(device_note: str = "") -> dict[str, str]:
    """The "machine", "torch" and "date" fields of a result (`device_note` is appended to the machine)."""
    return {"machine": f"{platform.machine()}, {torch.get_num_threads()} threads{device_note}",
            "torch": torch.__version__, "date": date.today().isoformat()}


def write_result(path: str | Path, result: dict) -> Path:
    """Write `result` as indented JSON (creating the folder) and return the path."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(json.dumps(result, indent=2) + "\n")
    return target
