"""python -m task2vec.selection on a hand-made results table with two targets (summary.json per row,
embeddings written as the embedding writer lays them out), and the coverage of its seed-resampling
intervals on a generator with known truth."""
from __future__ import annotations

import csv
import json

import numpy as np
import pytest

from task2vec.selection import __main__ as selection
from task2vec.selection.scores import seed_interval
from task2vec.selection.scores import regret_at_k
from tests.test_task_diversity import write_task
from utils.results.table import RESULTS_TABLE_COLUMNS

SOURCES = ("squad", "squad_v2", "duorc-p", "drop")


def write_row(folder, writer, target: str, sources: str, values: list[float], metric: str):
    """One results-table row and the summary.json its output_dir holds."""
    out = folder / f"{target}_{sources or 'plain'}".replace(";", "_")
    out.mkdir()
    runs = [{"seed": 13 + i, f"eval_{metric}": v} for i, v in enumerate(values)]
    (out / "summary.json").write_text(json.dumps({"runs": runs}))
    chain = " > ".join(["gpt2", *filter(None, sources.split(";"))])
    writer.writerow({**{c: "" for c in RESULTS_TABLE_COLUMNS}, "created_at": "2026-01-01", "target_task": target,
                     "pretrained_model": str(out / "model"), "source_chain": chain, "source_tasks": sources,
                     "objectives": "span" if sources else "", "selection": "last",
                     "seeds": ";".join(str(r["seed"]) for r in runs), "n": len(values), "primary_metric": metric,
                     "mean_primary": float(np.mean(values)), "std_primary": float(np.std(values, ddof=1)),
                     "output_dir": str(out)})


@pytest.fixture()
def study(tmp_path):
    rng = np.random.default_rng(3)
    emb = tmp_path / "TaskEmb"
    for task in (*SOURCES, "sst2", "rte"):
        write_task(emb, task, rng)
    runs = tmp_path / "runs"
    runs.mkdir()
    table = tmp_path / "results.csv"
    with open(table, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=RESULTS_TABLE_COLUMNS)
        writer.writeheader()
        for target, metric, base in (("sst2", "accuracy", 0.80), ("rte", "accuracy", 0.55)):
            write_row(runs, writer, target, "", list(base + rng.normal(0, 0.005, 3)), metric)
            for i, source in enumerate(SOURCES):
                write_row(runs, writer, target, source, list(base + 0.01 * i + rng.normal(0, 0.005, 3)), metric)
            write_row(runs, writer, target, "squad;drop", list(base + 0.02 + rng.normal(0, 0.005, 3)), metric)
    return tmp_path, table, emb


def test_the_command_ranks_the_sources_of_two_targets(study, capsys):
    folder, table, emb = study
    report = selection.main(["--results_table", str(table), "--emb_dir", str(emb), "--output_dir",
                             str(folder / "selection"), "--bootstrap", "200", "--use_samples", "--max_texts", "20"])
    assert set(report["targets"]) == {"sst2", "rte"}
    board = report["targets"]["sst2"]["leaderboard"]
    scored = {e["selector"]: e for e in board if "scores" in e}
    skipped = {e["selector"]: e["skipped"] for e in board if "skipped" in e}
    assert {"task2vec", "diversity_with_target", "vocabulary_overlap", "data_size", "random"} <= set(scored)
    assert "no --model_name" in skipped["textemb"]
    # A single task has no diversity: that selector cannot rank these sets, and says why.
    assert skipped["diversity"].startswith("undefined for drop")
    assert "source checkpoint(s) not found" in skipped["logme"]
    assert set(scored["task2vec"]["predicted"]) == {"squad", "squad_v2", "duorc-p", "drop", "drop+squad"}
    regret = scored["random"]["scores"]["regret@3"]
    assert regret["ci_low"] <= regret["value"] <= regret["ci_high"]
    out = folder / "selection"
    assert json.loads((out / "selection.json").read_text())["k"] == 3
    with open(out / "selection.csv", newline="") as handle:
        lines = list(csv.DictReader(handle))
    assert {line["target"] for line in lines} == {"sst2", "rte"}
    assert (out / "selection_sst2.png").stat().st_size > 1000 and (out / "selection_rte.png").exists()
    printed = capsys.readouterr().out
    assert "Target sst2:" in printed and "task2vec (corrected values): spearman" in printed


def test_a_source_without_its_re_embedding_puts_every_source_on_raw_values(study, capsys):
    folder, table, emb = study
    argv = ["--results_table", str(table), "--emb_dir", str(emb), "--selectors", "task2vec", "--target_tasks", "sst2",
            "--bootstrap", "20", "--no_plots", "--overwrite_output_dir", "--output_dir", str(folder / "selection")]
    corrected = selection.main(argv)["targets"]["sst2"]["leaderboard"][0]
    assert corrected["values"] == "corrected" and "values_reason" not in corrected
    (emb / "drop" / "embedding_reseeded.npy").unlink()
    capsys.readouterr()
    raw = selection.main(argv)["targets"]["sst2"]["leaderboard"][0]
    assert raw["values"] == "raw" and "no re-embedding (embedding_reseeded.npy) of drop" in raw["values_reason"]
    # Every set is scored raw, not only those holding drop: squad's score is its raw distance now.
    a, t = (np.load(emb / task / "embedding.npy").astype(np.float64) for task in ("squad", "sst2"))
    a, t = a / a.mean(), t / t.mean()
    keep = a + t > 0
    u, v = a[keep] / (a + t)[keep], t[keep] / (a + t)[keep]
    assert raw["predicted"]["squad"] == pytest.approx(-(1 - u @ v / (np.linalg.norm(u) * np.linalg.norm(v))))
    assert raw["predicted"]["squad"] != corrected["predicted"]["squad"]
    printed = capsys.readouterr().out
    assert "task2vec (raw values): spearman" in printed and "raw values: no re-embedding" in printed
    with open(folder / "selection" / "selection.csv", newline="") as handle:
        assert all("no re-embedding" in line["note"] for line in csv.DictReader(handle))


def test_bad_flags_are_one_line_errors(study, capsys):
    folder, table, _ = study
    with pytest.raises(SystemExit):
        selection.main(["--results_table", str(table), "--selectors", "oracle", "--output_dir", str(folder / "x")])
    assert "unknown ['oracle']" in capsys.readouterr().err


@pytest.mark.slow
def test_seed_resampling_intervals_cover_the_truth():
    """Sources with known means, 20 seeds each: the 95% interval of Regret@3 of a fixed ranking holds
    the true Regret@3 (on the true means) in 0.92–0.98 of 1000 replications."""
    mu = np.array([0.80, 0.86, 0.83, 0.90, 0.78, 0.84])
    predicted = np.array([0.2, 0.9, 0.5, 0.1, 0.6, 0.3])        # picks 0.86, 0.78, 0.83: regret 0.04
    truth = regret_at_k(predicted, mu, 3).value
    rng = np.random.default_rng(1)
    hits = 0
    for replication in range(1000):
        per_source = [rng.normal(m, 0.02, 20) for m in mu]
        plain = rng.normal(0.76, 0.02, 20)
        interval = seed_interval(lambda p, m, g: regret_at_k(p, m, 3).value, predicted, per_source, plain,
                                 samples=400, seed=replication)
        hits += interval.low <= truth <= interval.high
    print(f"coverage of 95% seed-resampling intervals of Regret@3: {hits / 1000:.3f}")
    assert 0.92 <= hits / 1000 <= 0.98


def test_every_logme_ranking_says_its_values_are_not_the_package_s():
    from task2vec.selection.logme import LOGME_NOTE
    from task2vec.selection.__main__ import leaderboard_lines

    condition = {"algorithm": "sequential", "metric": "accuracy", "max_train_samples": "", "selection": "last",
                 "objectives": "span", "base_model": "gpt2"}
    entry = {"condition": condition, "selector": "logme", "note": LOGME_NOTE, "predicted": {},
             "scores": {"spearman": {"value": 0.5, "ci_low": 0.1, "ci_high": 0.9}}}
    lines = leaderboard_lines("rte", [entry], 3)
    assert lines[-1] == f"      note: {LOGME_NOTE}" and "N < D" in LOGME_NOTE
