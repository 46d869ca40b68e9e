"""benchmarks/, without running any benchmark: every recorded result has the script that re-records it
and the result format of a benchmark (name, what, unit, both sides, ratio, target, provenance), and
every benchmark script has its recorded result."""
from __future__ import annotations

import json

from tests.conftest import REPO_ROOT

BENCHMARKS = REPO_ROOT / "benchmarks"
KEYS = {"name", "what", "unit", "baseline", "ours", "ratio", "target_ratio", "extra", "machine", "torch", "date"}
HELPERS = {"recording"}


def test_every_recorded_result_has_its_script_and_every_script_its_result():
    recorded = {path.stem for path in (BENCHMARKS / "results").glob("*.json")}
    scripts = {path.stem for path in BENCHMARKS.glob("*.py")} - HELPERS
    assert recorded == scripts, f"results without a script: {sorted(recorded - scripts)}; " \
                                f"scripts without a result: {sorted(scripts - recorded)}"


def test_every_result_has_the_benchmark_format():
    for path in (BENCHMARKS / "results").glob("*.json"):
        result = json.loads(path.read_text())
        assert KEYS <= set(result), f"{path.name} lacks {sorted(KEYS - set(result))}"
        assert result["name"] == path.stem
        for side in ("baseline", "ours"):
            assert {"label", "value"} <= set(result[side]), f"{path.name}: {side} needs a label and a value"
        assert isinstance(result["ratio"], float) and result["ratio"] > 0
        assert isinstance(result["target_ratio"], (int, float))
