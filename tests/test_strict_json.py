"""Every JSON the toolkit writes is strict JSON: a number that is undefined (one run has no spread,
a task without a noise floor has no corrected distance, NaN scores have no threshold) is null
with a reason beside it, never a literal NaN or Infinity."""
from __future__ import annotations

import contextlib
import io
import json
import math
from pathlib import Path

import numpy as np

import TaskDiversity
from task2vec.embedding.io import TaskEmbedding, json_safe, save_task_embedding
from task2vec.analysis.reporting import not_finite_reason
from tests.conftest import run_module
from tests.test_task_diversity import SOURCES, TARGET, write_task
from utils.qa.metrics import score_qa
from utils.results.metrics import json_ready, summarize
from utils.data.registry import get_task


def strict_loads(text: str):
    """json.loads that refuses NaN, Infinity and -Infinity (Python accepts them by default)."""
    def refuse(constant: str):
        raise AssertionError(f"{constant} in the JSON")
    return json.loads(text, parse_constant=refuse)


def nulls_without_reason(value, path: str = "") -> list[str]:
    """Paths of null values whose object gives no `<key>_reason` and no `reason`."""
    found = []
    if isinstance(value, dict):
        for key, item in value.items():
            if item is None and f"{key}_reason" not in value and not value.get("reason"):
                found.append(f"{path}.{key}")
            found += nulls_without_reason(item, f"{path}.{key}")
    elif isinstance(value, list):
        for index, item in enumerate(value):
            found += nulls_without_reason(item, f"{path}[{index}]")
    return found


# ----------------------------------------------------------------------------- seed statistics

def test_one_run_has_null_spread_with_a_reason():
    ready = json_ready(summarize([0.8]))
    assert ready["std"] is None and ready["std_reason"] == "one run: no spread estimate"
    assert ready["ci_low"] is None and ready["ci_high"] is None and ready["ci_low_reason"] == ready["std_reason"]
    assert ready["mean"] == 0.8 and ready["n"] == 1 and "mean_reason" not in ready
    two = json_ready(summarize([0.8, 0.6]))
    assert two["std"] == np.std([0.8, 0.6], ddof=1) and not any(key.endswith("_reason") for key in two)


def write_summary(folder: Path, accuracies: dict[int, float]) -> Path:
    folder.mkdir()
    runs = [{"seed": seed, "eval_accuracy": value, "predictions": f"runs/seed_{seed}/predictions.jsonl"}
            for seed, value in accuracies.items()]
    path = folder / "summary.json"
    path.write_text(json.dumps({"runs": runs}), encoding="utf-8")
    return path


def test_comparing_identical_runs_prints_strict_json_with_reasons(tmp_path):
    """B equal to A on every seed: the paired t-test is undefined (0/0), which Python's json wrote as NaN."""
    a = write_summary(tmp_path / "a", {1: 0.8, 2: 0.7, 3: 0.9})
    b = write_summary(tmp_path / "b", {1: 0.8, 2: 0.7, 3: 0.9})
    done = run_module("utils.seed_statistics", str(a), str(b), "--bootstrap", "0")
    assert done.returncode == 0, done.stderr
    result = strict_loads(done.stdout)
    assert result["mean_difference"] == 0.0 and result["paired_differences"] == [0.0, 0.0, 0.0]
    assert result["paired_t_p_value"] is None and "every paired seed" in result["paired_t_p_value_reason"]
    assert result["wilcoxon_p_value"] == 1.0 and nulls_without_reason(result) == []


# ----------------------------------------------------------------------------- task2vec and TaskDiversity

def test_json_safe_puts_a_reason_beside_every_null_it_makes():
    safe = json_safe({"value": 0.5, "se": math.nan, "diversity_corrected": np.float32("nan"),
                      "matrix": [[0.0, math.inf], [math.inf, 0.0]], "kept": None, "kept_reason": "given",
                      "correlation": {"spearman_rho": math.nan, "reason": "only 2 source sets"}}, not_finite_reason)
    assert safe["value"] == 0.5 and safe["se"] is None and "spread" in safe["se_reason"]
    assert safe["diversity_corrected"] is None and "noise" in safe["diversity_corrected_reason"]
    assert safe["matrix"] == [[0.0, None], [None, 0.0]] and safe["matrix_reason"]
    assert safe["kept_reason"] == "given" and "value_reason" not in safe
    assert safe["correlation"] == {"spearman_rho": None, "reason": "only 2 source sets"}
    strict_loads(json.dumps(safe))


def test_diversity_json_explains_every_null(tmp_path):
    """drop has no re-embedding: every corrected statistic involving it is null, each with a reason."""
    rng = np.random.default_rng(3)
    emb_dir = tmp_path / "TaskEmb"
    for task in (*SOURCES, TARGET):
        write_task(emb_dir, task, rng, reseeded=task != "drop")
    with contextlib.redirect_stdout(io.StringIO()):
        TaskDiversity.main(["--emb_dir", str(emb_dir), "--output_dir", str(tmp_path / "out"), "--no_plots"])
    written = strict_loads((tmp_path / "out" / "diversity.json").read_text(encoding="utf-8"))
    with_drop = [s for s in written["subsets"] if "drop" in s["tasks"]]
    assert with_drop and all(s["diversity_corrected"] is None for s in with_drop)
    assert all(s["diversity_corrected"] is not None for s in written["subsets"] if "drop" not in s["tasks"])
    assert nulls_without_reason(written) == []


def test_embedding_metadata_with_a_nan_is_written_as_null_with_a_reason(tmp_path):
    embedding = TaskEmbedding(task="squad", vector=np.ones(4), metadata={"noise_floor": {"task": math.nan}})
    folder = save_task_embedding(tmp_path, embedding)
    metadata = strict_loads((folder / "embedding.json").read_text(encoding="utf-8"))
    assert metadata["noise_floor"]["task"] is None and metadata["noise_floor"]["task_reason"]


# ----------------------------------------------------------------------------- QA metrics

def test_qa_scores_with_nan_null_odds_have_null_thresholds_with_a_reason():
    records = [
        {"id": "a", "gold": [["1843"]], "is_impossible": False, "answers": {"text": ["1843"], "answer_start": [0]}},
        {"id": "b", "gold": [], "is_impossible": True, "answers": {"text": [], "answer_start": []}}]
    result = score_qa(get_task("squad_v2"), records, {"a": "1843", "b": ""}, null_odds={"a": math.nan, "b": math.nan},
                      best_non_null={"a": "1843", "b": "London"})
    assert result["exact"] == result["f1"] == 100.0          # the scores themselves are defined
    for key in ("best_f1_thresh", "best_exact_thresh", "official_best_f1_thresh"):
        assert result[key] is None and "null odds" in result[f"{key}_reason"]
    strict_loads(json.dumps(result))
