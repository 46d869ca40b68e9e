"""benchmarks/reproduce.py, without running any benchmark: it knows every recorded CPU benchmark,
its agreement rule is the documented one, and a wrong name is a one-line error."""
from __future__ import annotations

import importlib.util
import json
import sys

import pytest

from tests.conftest import REPO_ROOT


def reproduce_module():
    spec = importlib.util.spec_from_file_location("reproduce", REPO_ROOT / "benchmarks" / "reproduce.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module   # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def test_every_recorded_benchmark_is_re_run_and_every_re_run_is_recorded():
    module = reproduce_module()
    recorded = {path.stem for path in (REPO_ROOT / "benchmarks" / "results").glob("*.json")}
    assert {b.name for b in module.BENCHMARKS} == recorded
    for benchmark in module.BENCHMARKS:
        assert (REPO_ROOT / "benchmarks" / f"{benchmark.name}.py").exists()
        result = json.loads((REPO_ROOT / "benchmarks" / "results" / f"{benchmark.name}.json").read_text())
        assert isinstance(result["ratio"], float) and isinstance(result["target_ratio"], (int, float))


def test_two_runs_agree_within_ten_percent_of_the_larger():
    agree = reproduce_module().agree
    assert agree(2.0, 2.2, 0.10) and agree(2.2, 2.0, 0.10)      # 0.2 is 9.1% of 2.2
    assert not agree(2.0, 2.25, 0.10)                            # 0.25 is 11.1% of 2.25


def test_an_unknown_benchmark_is_refused(capsys):
    with pytest.raises(SystemExit) as stopped:
        reproduce_module().main(["qa_batchin"])
    assert stopped.value.code == 2 and "unknown benchmarks ['qa_batchin']" in capsys.readouterr().err


def kept_run(folder, name, run, ratio, spread=None):
    """A result file as a kept re-run leaves it (only the keys reproduce.py reads)."""
    result = {"ratio": ratio, "extra": {} if spread is None else {"paired_ratio": {"min": spread[0], "max": spread[1]}}}
    (folder / f"{name}_{run}.json").write_text(json.dumps(result))


def test_tabulating_kept_runs_exits_1_on_a_miss_or_a_disagreement_and_0_otherwise(tmp_path, capsys):
    main = reproduce_module().main
    target = json.loads((REPO_ROOT / "benchmarks" / "results" / "qa_batching.json").read_text())["target_ratio"]
    cases = {"agree": (target * 1.30, target * 1.40, 0),      # 0.1 target apart: 7.1% of the larger
             "disagree": (target * 1.30, target * 1.50, 1),   # 13.3% of the larger
             "miss": (target * 0.90, target * 0.95, 1)}       # agree, but under the target
    for case, (first, second, status) in cases.items():
        folder = tmp_path / case
        folder.mkdir()
        kept_run(folder, "qa_batching", 1, first, spread=(first * 0.9, first * 1.1))
        kept_run(folder, "qa_batching", 2, second)
        assert main(["--twice", "--tabulate", str(folder), "qa_batching"]) == status, case
        line = next(ln for ln in capsys.readouterr().out.splitlines() if ln.startswith("| qa_batching"))
        assert f"{first:.3g} [{first * 0.9:.3g}–{first * 1.1:.3g}]" in line and f"| {second:.3g} |" in line
        assert line.endswith({"agree": "| yes |", "disagree": "| **no** |", "miss": "| yes |"}[case])
        assert ("| **no** | yes |" in line) == (case == "miss")


def test_a_missing_run_is_a_failure_not_a_pass(tmp_path, capsys):
    kept_run(tmp_path, "qa_batching", 1, 10.0)
    assert reproduce_module().main(["--twice", "--tabulate", str(tmp_path), "qa_batching"]) == 1
    assert "| 10 | failed |" in capsys.readouterr().out
