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
