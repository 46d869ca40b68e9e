"""What every benchmark result carries besides its numbers, and how it is written."""
from __future__ import annotations

import json
import platform
import statistics
from datetime import date
from pathlib import Path

import torch


def provenance(device_note: str = "") -> dict[str, str]:
    """The "machine", "torch" and "date" fields of a result (`device_note` is appended to the machine)."""
    return {"machine": f"{platform.machine()}, {torch.get_num_threads()} threads{device_note}",
            "torch": torch.__version__, "date": date.today().isoformat()}


def paired_ratio_spread(ours: list[float], base: list[float]) -> dict[str, float | list[float]]:
    """Per-repeat ratios ours_i / baseline_i, where the two sides of repeat i ran back to back on
    the same input, with their min, median and max. For times (lower is better) pass the
    baseline's times as `ours` and ours as `base`, so that the ratio is baseline / ours."""
    ratios = [o / b for o, b in zip(ours, base, strict=True)]
    return {"per_repeat": ratios, "min": min(ratios), "median": statistics.median(ratios), "max": max(ratios)}


def write_result(path: str | Path, result: dict) -> Path:
    """Write `result` as indented JSON (creating the folder) and return the path.

    A GPU measurement recorded under `extra.gpu` of an existing file is kept when `result` has
    none: the CPU run that re-records a benchmark cannot re-measure it, and must not erase it.
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    if target.exists() and "gpu" not in result.get("extra", {}):
        gpu = json.loads(target.read_text()).get("extra", {}).get("gpu")
        if gpu is not None:
            result = {**result, "extra": {**result.get("extra", {}), "gpu": gpu}}
    target.write_text(json.dumps(result, indent=2) + "\n")
    return target
