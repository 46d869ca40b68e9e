"""The README's demo, run as a user runs it (on the interpreter running the tests)."""
import csv
import json
import os
import subprocess
import sys

import pytest

from tests.conftest import REPO_ROOT
from utils.models.loading import load_model
from utils.data.loading import SAMPLE_FILES


@pytest.mark.slow
def test_demo_builds_the_tiny_model_and_reports_every_task(tmp_path):
    out = tmp_path / "demo"
    done = subprocess.run(["bash", "scripts/demo.sh"], cwd=REPO_ROOT, capture_output=True, text=True,
                          timeout=600, env={**os.environ, "PY": sys.executable, "DEMO_OUTPUT": str(out)})
    assert done.returncode == 0, done.stderr
    printed = [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]
    assert {(s["task"], s["split"]) for s in printed} == {(t, split) for t in SAMPLE_FILES
                                                          for split in ("train", "validation")}
    for stats in printed:
        saved = json.loads((out / "adapter_stats" / f"{stats['task']}_{stats['split']}.json").read_text())
        assert saved["kept"] == stats["kept"] > 0
    assert load_model(out / "tiny_gpt2", "qa").model.config.n_layer == 2
    for task in ("squad", "squad_v2", "duorc-p"):
        assert (out / f"pretrained_model_{task}" / "all_results.json").exists(), task
    assert "lineage: utils.tiny_model -> squad -> squad_v2 -> duorc-p" in done.stdout
    assert "transfer (chain - plain): mean" in done.stdout
    # SST-2 from each step of the chain and the plain model; RTE and STS-B from the chain's end and the plain model;
    # SST-2 from Reptile, FOMAML, multi-task.
    with open(out / "results_table.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert [(row["target_task"], row["primary_metric"]) for row in rows] == \
        [("sst2", "accuracy")] * 4 + [("rte", "accuracy")] * 2 + [("stsb", "pearson")] * 2 + [("sst2", "accuracy")] * 3
    assert [row["algorithm"] for row in rows[-3:]] == ["reptile", "fomaml", "multitask"]
    # The three algorithms at matched compute: training tokens within one batch (8 windows of at most 384 tokens).
    tokens = {name: json.loads((out / "logs" / f"qa_tasks_{name}" / "all_results.json").read_text())["train_tokens"]
              for name in ("demo", "demo_fomaml", "demo_multitask")}
    assert max(tokens.values()) - min(tokens.values()) <= 8 * 384, tokens
    comparison = json.loads((out / "meta_comparison.json").read_text())
    assert [run["algorithm"] for run in comparison["runs"]] == ["sequential", "reptile", "fomaml", "multitask"]
    assert "| run | algorithm |" in done.stdout
    assert all(row["mean_accuracy"] == "" for row in rows if row["target_task"] == "stsb")
    for target in ("rte", "stsb"):
        summary = json.loads((out / f"target_{target}_tiny_gpt2" / "summary.json").read_text())
        assert summary["target_task"] == target and len(summary["runs"]) == 2
    assert (out / "logs" / "qa_tasks_demo" / "model" / "lineage.json").exists()
    assert (out / "target_sst2_reptile" / "summary.json").exists()
    for task in ("squad", "squad_v2", "duorc-p", "duorc-s", "drop", "sst2", "rte", "stsb"):
        assert (out / "TaskEmb" / task / "embedding.npy").exists(), task
    report = json.loads((out / "task_diversity" / "diversity.json").read_text())
    assert report["target"] == "sst2" and len(report["subsets"]) == 10      # C(5, 3)
    # Subsets are ranked by the diversity corrected for each task's noise floor (every task uses
    # 3 batches of 8: the DROP sample has 25 questions with a span, and only comparable
    # embeddings are compared).
    assert report["subsets_ranked_by"] == "diversity_corrected"
    corrected = [s["diversity_corrected"] for s in report["subsets"]]
    assert corrected == sorted(corrected)
    assert all(0 < s["diversity"] <= 1 for s in report["subsets"])
    # The chain row (squad;squad_v2;duorc-p) and the Reptile row (squad+squad_v2+duorc-s) join with
    # measured accuracy; the plain tiny model has no source.
    joined = {tuple(sorted(row["sources"])) for row in report["joined_results"]}
    assert {("duorc-p", "squad", "squad_v2"), ("duorc-s", "squad", "squad_v2")} <= joined
    assert (out / "task_diversity" / "task_distances.png").stat().st_size > 0
    # STS-B as the target: its rows are scored by Pearson, a condition of their own.
    stsb = json.loads((out / "task_diversity_stsb" / "diversity.json").read_text())
    assert stsb["target"] == "stsb" and len(stsb["subsets"]) == 10
    assert all(c["condition"]["metric"] == "pearson" for c in stsb["transfer"]["conditions"])
    assert {row["line"] for row in stsb["joined_results"] + stsb["skipped_results"]} == set(range(2, 13))
    assert "noise floor" in done.stdout
    # It ends by saying what it showed, where each stage's outputs are, and why the numbers are at chance.
    summary = done.stdout[done.stdout.index("== what the demo showed"):]
    for stage in ("tiny_gpt2", "adapter_stats", "pretrained_model_duorc-p", "results_table.csv", "comparison.json",
                  "logs/qa_tasks_demo", "target_sst2_reptile", "TaskEmb", "task_diversity"):
        assert f"{out}/{stage}" in summary, stage
    accuracies = {name: json.loads((out / f"target_sst2_{name}" / "summary.json").read_text())["eval_accuracy"]["mean"]
                  for name in ("tiny_gpt2", "pretrained_model_duorc-p", "reptile", "fomaml", "multitask")}
    for name, accuracy in accuracies.items():
        assert f"{name} {accuracy:.3f}" in summary, name
    assert "chance" in summary and "plumbing, not the method" in summary
    assert "a random 2-layer gpt2 model" in summary      # the family run, as FAMILY=llama names llama
    # The selectors rank the three chains' source sets for SST-2 (squad; squad, squad_v2; and all three).
    selection = json.loads((out / "selection" / "selection.json").read_text())
    sequential = [e for e in selection["targets"]["sst2"]["leaderboard"] if e["condition"]["algorithm"] == "sequential"]
    task2vec_entry = next(e for e in sequential if e["selector"] == "task2vec")
    assert len(task2vec_entry["predicted"]) == 3 and "ndcg@3" in task2vec_entry["scores"]
    assert (out / "selection" / "selection_sst2.png").exists()
    assert "RTE accuracy on the 8 dev examples" in summary and "STSB pearson on the 8 dev examples" in summary
