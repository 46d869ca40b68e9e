"""Every benchmark number the READMEs quote is the one in benchmarks/results/*.json (the README once
said 3.7× for a recorded 3.14×)."""
from __future__ import annotations

import json
import re

import pytest

from tests.conftest import REPO_ROOT

RESULTS = {path.stem: json.loads(path.read_text()) for path in (REPO_ROOT / "benchmarks" / "results").glob("*.json")}


def shown(value: float, text: str) -> bool:
    """`text` (e.g. "3.14") is `value` rounded to the decimals `text` shows."""
    decimals = len(text.split(".")[1]) if "." in text else 0
    return round(value, decimals) == float(text)


def table_rows() -> list[tuple[str, bool, str]]:
    """(benchmark name, GPU row?, bold ratio) of each row of benchmarks/README.md's table."""
    rows = []
    for line in (REPO_ROOT / "benchmarks" / "README.md").read_text().splitlines():
        match = re.match(r"\| `(\w+)`( \(GPU\))? \|.*?\*\*([\d.]+)×\*\*", line)
        if match:
            rows.append((match.group(1), bool(match.group(2)), match.group(3)))
    return rows


def test_the_benchmark_table_quotes_the_recorded_ratios():
    rows = table_rows()
    assert {name for name, _, _ in rows} == set(RESULTS)  # every recorded benchmark has a row
    for name, gpu, ratio in rows:
        recorded = RESULTS[name]["extra"]["gpu"]["ratio"] if gpu else RESULTS[name]["ratio"]
        assert shown(recorded, ratio), f"{name}{' (GPU)' if gpu else ''}: table {ratio}×, recorded {recorded}"


@pytest.mark.parametrize("phrase, value", [
    ("{}× faster than a deepcopy per task on GPT-2-small-shaped parameters on a CPU",
     RESULTS["reptile_bookkeeping"]["ratio"]),
    ("{}× on an H200", RESULTS["reptile_bookkeeping"]["extra"]["gpu"]["ratio"]),
    ("runs at about {}k real tokens/s in bf16 with batch 32",
     RESULTS["qa_batching"]["extra"]["gpu"]["ours_tokens_per_second"] / 1000),
])
def test_the_front_readme_quotes_the_recorded_numbers(phrase, value):
    text = " ".join((REPO_ROOT / "README.md").read_text().split())
    pattern = re.escape(phrase).replace(re.escape("{}"), r"([\d.]+)")
    match = re.search(pattern, text)
    assert match, f"README no longer says {phrase!r}"
    assert shown(value, match.group(1)), f"README says {match.group(1)} where the recorded value is {value}"
