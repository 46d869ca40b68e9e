"""TaskDiversity.py, task2vec.analysis.diversity and task2vec.analysis.transfer: subset diversities (raw and corrected),
the results table grouped by condition into one point per source set, exact permutation p-values,
comparability checks; all against independent numpy/scipy/itertools computations; errors and files."""
from __future__ import annotations

import csv
import itertools
import json
import math
from pathlib import Path

import numpy as np
import pytest
from scipy import stats
from scipy.spatial.distance import cosine as scipy_cosine

import TaskDiversity
from task2vec.analysis.correction import corrected_distance
from task2vec.analysis.transfer import parse_source_tasks, training_algorithm
from tests.conftest import REPO_ROOT, run_module
from utils.run.errors import DataError, ToolkitError, UnknownTaskError
from utils.results.table import RESULTS_TABLE_COLUMNS

SOURCES = ("squad", "squad_v2", "duorc-p", "duorc-s", "drop")
TARGET = "sst2"
DIMENSION = 24
N_BATCHES = 6


def write_task(emb_dir: Path, task: str, rng: np.random.Generator, *, digest: str = "layout-a",
               dimension: int = DIMENSION, reseeded: bool = True) -> np.ndarray:
    """One task folder as the embedding writer lays it out; returns the vector as it will be read."""
    folder = emb_dir / task
    folder.mkdir(parents=True)
    vector = rng.gamma(2.0, 1.0, size=dimension).astype(np.float32)              # (D,)
    vector[rng.random(dimension) < 0.1] = 0.0  # some zero coordinates, as Fisher diagonals can have
    batches = (vector * rng.gamma(20.0, 0.05, size=(N_BATCHES, dimension))).astype(np.float32)  # (n, D)
    np.save(folder / "embedding.npy", vector)
    np.save(folder / "batches.npy", batches)
    if reseeded:
        np.save(folder / "embedding_reseeded.npy", (vector * rng.uniform(0.95, 1.05, dimension)).astype(np.float32))
        np.save(folder / "batches_reseeded.npy",
                (batches * rng.uniform(0.95, 1.05, batches.shape)).astype(np.float32))
    metadata = {"task": task, "layout_digest": digest, "probe": {"model": "gpt2", "sha256": "0f1e"}, "objective": "lm",
                "estimator": "mc", "num_samples": 4, "examples": {"examples_used": 256},
                "settings": {"max_length": 128, "minibatch_size": 8},
                "head": {"steps": 640, "learning_rate": 5e-5, "weight_decay": 1e-4, "batch_size": 8}}
    (folder / "embedding.json").write_text(json.dumps(metadata), encoding="utf-8")
    return vector.astype(np.float64)


@pytest.fixture()
def emb_dir(tmp_path: Path) -> tuple[Path, dict[str, np.ndarray]]:
    """Five sources, the target, and one extra task (mlqa_en) that is not a default source; drop has
    no re-embedding."""
    rng = np.random.default_rng(11)
    folder = tmp_path / "TaskEmb"
    vectors = {task: write_task(folder, task, rng, reseeded=task != "drop") for task in (*SOURCES, TARGET, "mlqa_en")}
    return folder, vectors


def reference_distance(a: np.ndarray, b: np.ndarray) -> float:
    """Task2Vec distance written independently: unit means, drop 0/0 coordinates, normalise the pair,
    scipy cosine."""
    a, b = a / a.mean(), b / b.mean()
    keep = (a + b) > 1e-12 * (a.mean() + b.mean())
    return float(scipy_cosine(a[keep] / (a + b)[keep], b[keep] / (a + b)[keep]))


def reference_diversity(vectors: list[np.ndarray]) -> float:
    if len(vectors) < 2:
        return math.nan
    return float(np.mean([reference_distance(a, b) for a, b in itertools.combinations(vectors, 2)]))


def reference_statistics(members: list[np.ndarray], target: np.ndarray) -> dict[str, float]:
    return {"diversity": reference_diversity(members),
            "diversity_with_target": reference_diversity([*members, target]),
            "distance_to_target": reference_distance(np.mean([m / m.sum() for m in members], axis=0), target)}


def reference_corrected_diversity(vectors: list[np.ndarray], reseeded: list[np.ndarray]) -> float:
    """Mean over pairs of corrected_distance(d_ij, f_i, f_j), the distances and floors computed here."""
    floors = [reference_distance(v, r) for v, r in zip(vectors, reseeded)]
    return float(np.mean([corrected_distance(reference_distance(vectors[i], vectors[j]), floors[i], floors[j])
                          for i, j in itertools.combinations(range(len(vectors)), 2)]))


def load(folder: Path, task: str, name: str) -> np.ndarray:
    return np.load(folder / task / name).astype(np.float64)


def base_args(emb: Path, output: Path, *extra: str) -> list[str]:
    return ["--emb_dir", str(emb), "--output_dir", str(output), *extra]


def test_subsets_match_an_independent_computation(emb_dir, tmp_path):
    folder, vectors = emb_dir
    result = TaskDiversity.main(base_args(folder, tmp_path / "out", "--no_plots"))

    expected = []
    for subset in itertools.combinations(SOURCES, 3):
        expected.append({"tasks": list(subset),
                         **reference_statistics([vectors[t] for t in subset], vectors[TARGET])})
    expected.sort(key=lambda entry: (entry["diversity"], entry["tasks"]))
    assert result["distance"] == "task2vec" and result["target"] == TARGET
    assert [entry["tasks"] for entry in result["subsets"]] == [entry["tasks"] for entry in expected]
    for got, want in zip(result["subsets"], expected):
        for key in ("diversity", "diversity_with_target", "distance_to_target"):
            assert got[key] == pytest.approx(want[key], rel=1e-12), (got["tasks"], key)
    diversities = [entry["diversity"] for entry in result["subsets"]]
    assert diversities == sorted(diversities)
    # drop has no re-embedding: its subsets have no corrected value, so the ranking is by the raw one
    assert result["subsets_ranked_by"] == "diversity"
    for entry in result["subsets"]:
        if "drop" in entry["tasks"]:
            assert entry["diversity_corrected"] is None
        else:
            want = reference_corrected_diversity([vectors[t] for t in entry["tasks"]],
                                                 [load(folder, t, "embedding_reseeded.npy") for t in entry["tasks"]])
            assert entry["diversity_corrected"] == pytest.approx(want, rel=1e-10)

    tasks = [*SOURCES, TARGET]
    assert result["task_distances"]["tasks"] == tasks
    expected_matrix = [[0.0 if a == b else reference_distance(vectors[a], vectors[b]) for b in tasks] for a in tasks]
    np.testing.assert_allclose(result["task_distances"]["matrix"], expected_matrix, rtol=1e-12, atol=0)
    assert result["source_set_diversity"]["raw"]["value"] == pytest.approx(
        reference_diversity([vectors[t] for t in SOURCES]), rel=1e-12)
    assert result["source_set_diversity"]["corrected"] is None   # drop has no floor
    assert result["task_distances"]["corrected"] is None and result["task_distances"]["floors"][4] is None

    floor = result["noise_floor"]["tasks"]
    reseeded = np.load(folder / "squad" / "embedding_reseeded.npy").astype(np.float64)
    assert floor["squad"]["task_level"] == pytest.approx(reference_distance(vectors["squad"], reseeded), rel=1e-12)
    assert floor["drop"]["task_level"] is None and "embedding_reseeded" in floor["drop"]["task_level_reason"]
    assert floor["drop"]["batches"]["n"] == N_BATCHES and floor["drop"]["batches"]["noise_floor"] is None
    batches = np.load(folder / "squad" / "batches.npy").astype(np.float64)
    assert floor["squad"]["batches"]["diversity"]["value"] == pytest.approx(reference_diversity(list(batches)),
                                                                           rel=1e-12)
    batches_reseeded = load(folder, "squad", "batches_reseeded.npy")
    assert floor["squad"]["batches"]["diversity_corrected"]["value"] == pytest.approx(
        reference_corrected_diversity(list(batches), list(batches_reseeded)), rel=1e-10)
    pairs = {tuple(pair["tasks"]): pair for pair in result["noise_floor"]["pairs"]}
    squad_sst2 = pairs[("squad", "sst2")]
    f_squad = reference_distance(vectors["squad"], reseeded)
    f_sst2 = reference_distance(vectors["sst2"], load(folder, "sst2", "embedding_reseeded.npy"))
    raw = reference_distance(vectors["squad"], vectors["sst2"])
    assert squad_sst2["bias"] == pytest.approx((f_squad + f_sst2) / 2, rel=1e-10)
    assert squad_sst2["corrected"] == pytest.approx(float(corrected_distance(raw, f_squad, f_sst2)), rel=1e-10)
    assert squad_sst2["resolved"] is (squad_sst2["corrected"] >= raw - squad_sst2["corrected"])
    assert pairs[("squad", "drop")]["resolved"] is None and pairs[("squad", "drop")]["corrected"] is None
    assert result["embeddings"]["squad"]["estimator"] == "mc"

    output = tmp_path / "out"
    for name in ("diversity.json", "diversity.csv", "task_distances.csv", "run_args.json"):
        assert (output / name).is_file(), name
    assert not (output / "task_distances.png").exists()  # --no_plots
    text = (output / "diversity.json").read_text(encoding="utf-8")
    assert json.loads(text, parse_constant=lambda name: pytest.fail(f"non-strict JSON: {name}")) == result
    with open(output / "diversity.csv", newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    assert [row["tasks"] for row in rows] == [";".join(entry["tasks"]) for entry in expected]
    assert float(rows[0]["diversity"]) == result["subsets"][0]["diversity"]
    assert "mean" not in rows[0]   # accuracies belong to a condition: transfer_points.csv


def test_subsets_are_ranked_by_the_corrected_diversity_when_every_task_has_a_floor(tmp_path):
    rng = np.random.default_rng(21)
    folder = tmp_path / "TaskEmb"
    vectors = {task: write_task(folder, task, rng) for task in (*SOURCES, TARGET)}
    result = TaskDiversity.main(base_args(folder, tmp_path / "out", "--no_plots"))
    assert result["subsets_ranked_by"] == "diversity_corrected"
    corrected = [entry["diversity_corrected"] for entry in result["subsets"]]
    assert corrected == sorted(corrected)
    reseeded = {task: load(folder, task, "embedding_reseeded.npy") for task in vectors}
    for entry in result["subsets"]:
        want = reference_corrected_diversity([vectors[t] for t in entry["tasks"]], [reseeded[t] for t in entry["tasks"]])
        assert entry["diversity_corrected"] == pytest.approx(want, rel=1e-10)
    overall = result["source_set_diversity"]["corrected"]
    assert overall["value"] == pytest.approx(reference_corrected_diversity([vectors[t] for t in SOURCES],
                                                                           [reseeded[t] for t in SOURCES]), rel=1e-10)
    assert 0.0 <= overall["ci_low"] <= overall["ci_high"] <= 1.0
    assert (tmp_path / "out" / "task_distances_corrected.csv").is_file()


def test_cosine_distance_and_aliases(emb_dir, tmp_path):
    folder, vectors = emb_dir
    result = TaskDiversity.main(base_args(folder, tmp_path / "out", "--no_plots", "--distance", "cosine",
                                          "--source_tasks", "squad,duorc;SelfRC,drop", "--subset_size", "2"))
    assert result["sources"] == ["squad", "duorc-s", "drop"]
    pairs = {tuple(entry["tasks"]): entry["diversity"] for entry in result["subsets"]}
    assert pairs[("squad", "duorc-s")] == pytest.approx(scipy_cosine(vectors["squad"], vectors["duorc-s"]), rel=1e-12)


RESULT_DEFAULTS = {"created_at": "2025-01-01T00:00:00+00:00", "pretrained_model": "m", "source_chain": "gpt2",
                   "objectives": "lm", "max_train_samples": "", "selection": "holdout"}


def write_results_table(path: Path, rows: list[dict]) -> None:
    """Rows of the target script's results table; each dict gives target_task, source_tasks and
    either `accuracies` (the per-seed values: n, mean, std (ddof 1), min, max follow) or mean; the
    score goes in the *_primary columns (`metric`, default accuracy, names it)."""
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=RESULTS_TABLE_COLUMNS)
        writer.writeheader()
        for row in rows:
            cells = {column: "" for column in RESULTS_TABLE_COLUMNS} | RESULT_DEFAULTS
            values = row.get("accuracies", [row.get("mean", 0.9)] * 3)
            std = float(np.std(values, ddof=1)) if len(values) > 1 else math.nan
            cells |= {"primary_metric": row.get("metric", "accuracy"), "mean_primary": float(np.mean(values)),
                      "std_primary": std, "min_primary": min(values), "max_primary": max(values)}
            cells |= {"n": len(values), "seeds": ";".join(str(13 + 8 * i) for i in range(len(values))),
                      "output_dir": f"runs/{row['source_tasks']}",
                      "source_chain": " > ".join(["gpt2", *filter(None, row["source_tasks"].split(";"))])}
            cells |= {key: value for key, value in row.items() if key not in ("accuracies", "mean", "metric")}
            writer.writerow(cells)


JOIN_TABLE = [  # lines 2.. of the file
    {"target_task": TARGET, "source_tasks": "squad;squad_v2;duorc-p", "mean": 0.911},
    {"target_task": TARGET, "source_tasks": "squad+squad_v2+duorc-s", "mean": 0.905},
    {"target_task": TARGET, "source_tasks": "squad", "mean": 0.899},
    {"target_task": TARGET, "source_tasks": "", "mean": 0.893},
    {"target_task": TARGET, "source_tasks": "duorc-p;drop", "mean": 0.917},
    {"target_task": TARGET, "source_tasks": "squad;quoref", "mean": 0.902},   # quoref: no embedding
    {"target_task": TARGET, "source_tasks": "squad;not_a_task", "mean": 0.90},  # unknown name
    {"target_task": "glue;sst2", "source_tasks": "duorc_s;drop", "mean": 0.921},  # aliases resolve
    {"target_task": "quoref", "source_tasks": "squad;squad_v2", "mean": 0.5},    # another target
    {"target_task": TARGET, "source_tasks": "squad_v2;duorc-s;drop", "mean": 0.915},
    {"target_task": TARGET, "source_tasks": "squad;mlqa_en", "mean": 0.908},  # outside --source_tasks
    {"target_task": TARGET, "source_tasks": "squad;squad_v2;duorc-p", "mean": 0.911},  # appended again
]


def test_results_table_join(emb_dir, tmp_path):
    folder, vectors = emb_dir
    table = tmp_path / "results.csv"
    write_results_table(table, JOIN_TABLE)
    result = TaskDiversity.main(base_args(folder, tmp_path / "out", "--results_table", str(table)))

    assert [row["line"] for row in result["joined_results"]] == [2, 3, 4, 5, 6, 9, 11, 12, 13]
    skipped = {row["line"]: row["reason"] for row in result["skipped_results"]}
    assert sorted(skipped) == [7, 8, 10]
    assert "quoref" in skipped[7] and "not a registered task" in skipped[8] and "is not 'sst2'" in skipped[10]
    for row in result["joined_results"]:
        sources = parse_source_tasks(JOIN_TABLE[row["line"] - 2]["source_tasks"])
        assert row["sources"] == sources and row["n_sources"] == len(sources)
        if sources:
            want = reference_statistics([vectors[t] for t in sources], vectors[TARGET])
            for key, value in want.items():
                assert (row[key] is None) if math.isnan(value) else row[key] == pytest.approx(value, rel=1e-12)
    assert result["joined_results"][1]["condition"]["algorithm"] == "reptile"
    conditions = {c["condition"]["algorithm"]: c for c in result["transfer"]["conditions"]}
    assert set(conditions) == {"sequential", "reptile"}
    sequential = conditions["sequential"]
    chain = next(p for p in sequential["points"] if p["sources"] == sorted(["squad", "squad_v2", "duorc-p"]))
    assert chain["lines"] == [2, 13] and chain["duplicate_lines"] == [13] and chain["n_seeds"] == 3
    assert sequential["baseline"]["lines"] == [5] and sequential["baseline"]["mean"] == pytest.approx(0.893)
    assert sequential["condition"]["metric"] == "accuracy" and sequential["baseline"]["condition"]["metric"] == "accuracy"
    output = tmp_path / "out"
    assert json.loads((output / "correlations.json").read_text()) == result["transfer"]
    with open(output / "transfer_points.csv", newline="", encoding="utf-8") as handle:
        points = list(csv.DictReader(handle))
    assert len(points) == sum(len(c["points"]) for c in result["transfer"]["conditions"])
    for name in ("task_distances.png", "score_vs_diversity.png"):
        assert (output / name).stat().st_size > 0


def exact_permutation_p(x: list[float], y: list[float], coefficient) -> float:
    """Two-sided p over every ordering of y, written with itertools and scipy."""
    observed = abs(coefficient(x, y).statistic)
    values = [abs(coefficient(x, list(order)).statistic) for order in itertools.permutations(y)]
    return float(np.mean([value >= observed - 1e-9 for value in values]))


SEQUENTIAL_SETS = {  # source set -> per-seed accuracies of its runs (each run: its order and seeds)
    ("squad", "squad_v2"): [("squad;squad_v2", [0.90, 0.91, 0.89]), ("squad_v2;squad", [0.93, 0.92, 0.94])],
    ("duorc-p", "squad"): [("squad;duorc-p", [0.905, 0.915, 0.91])],
    ("duorc-p", "duorc-s"): [("duorc-p;duorc-s", [0.88, 0.89, 0.895])],
    ("drop", "squad_v2"): [("squad_v2;drop", [0.925, 0.935, 0.93])],
    ("drop", "duorc-s", "squad"): [("duorc-s;drop;squad", [0.90, 0.902, 0.91]),
                                   ("squad;drop;duorc-s", [0.90, 0.89, 0.896])],
}
REPTILE_SETS = {
    ("squad", "squad_v2"): [("squad+squad_v2", [0.88, 0.87, 0.885])],
    ("duorc-p", "squad"): [("squad+duorc-p", [0.87, 0.875, 0.86])],
    ("duorc-p", "duorc-s"): [("duorc-p+duorc-s", [0.90, 0.89, 0.905])],
    ("drop", "squad_v2"): [("squad_v2+drop", [0.86, 0.865, 0.87])],
}


def grouped_table() -> list[dict]:
    """Two conditions (sequential chains, Reptile), permuted chains, every run appended twice,
    the plain model, and a third condition (another data budget) with two sets."""
    rows = []
    for sets in (SEQUENTIAL_SETS, REPTILE_SETS):
        for runs in sets.values():
            for order, accuracies in runs:
                rows += [{"target_task": TARGET, "source_tasks": order, "accuracies": accuracies}] * 2
    rows.append({"target_task": TARGET, "source_tasks": "", "accuracies": [0.85, 0.86, 0.855]})
    rows += [{"target_task": TARGET, "source_tasks": "squad;squad_v2", "accuracies": [0.8, 0.81, 0.79],
              "max_train_samples": "1000"},
             {"target_task": TARGET, "source_tasks": "duorc-p;duorc-s", "accuracies": [0.82, 0.8, 0.81],
              "max_train_samples": "1000"}]
    return rows


def test_conditions_give_one_point_per_source_set_and_exact_p_values(emb_dir, tmp_path):
    """The acceptance test of the correlations: duplicated rows, permuted chains and several
    conditions give one point per source set per condition, pooled over the seeds of its distinct
    runs; Spearman and Pearson p-values equal an enumeration of every ordering."""
    folder, vectors = emb_dir
    table = tmp_path / "results.csv"
    rows = grouped_table()
    write_results_table(table, rows)
    result = TaskDiversity.main(base_args(folder, tmp_path / "out", "--results_table", str(table), "--no_plots"))
    conditions = {(c["condition"]["algorithm"], c["condition"]["max_train_samples"]): c
                  for c in result["transfer"]["conditions"]}
    assert set(conditions) == {("sequential", ""), ("reptile", ""), ("sequential", "1000")}

    for key, sets in ((("sequential", ""), SEQUENTIAL_SETS), (("reptile", ""), REPTILE_SETS)):
        condition = conditions[key]
        assert condition["condition"]["objectives"] == "lm" and condition["condition"]["selection"] == "holdout"
        points = {tuple(point["sources"]): point for point in condition["points"]}
        assert set(points) == {tuple(sorted(s)) for s in sets}          # one point per source set
        for sources, runs in sets.items():
            point = points[tuple(sorted(sources))]
            seeds = [value for _, accuracies in runs for value in accuracies]
            assert point["n_runs"] == len(runs) and point["n_seeds"] == len(seeds)
            assert len(point["duplicate_lines"]) == len(runs)            # every run appended twice
            assert point["mean"] == pytest.approx(np.mean(seeds), rel=1e-12)
            assert point["std"] == pytest.approx(np.std(seeds, ddof=1), rel=1e-9)
            half = stats.t.ppf(0.975, len(seeds) - 1) * np.std(seeds, ddof=1) / math.sqrt(len(seeds))
            assert point["ci_low"] == pytest.approx(np.mean(seeds) - half, rel=1e-9)
            assert point["orders"] == [order for order, _ in runs]
            assert point["diversity"] == pytest.approx(reference_diversity([vectors[t] for t in sources]), rel=1e-12)
        ordered = {tuple(group["sources"]): group for group in condition["chain_orders"]}
        assert set(ordered) == {tuple(sorted(s)) for s, runs in sets.items() if len(runs) > 1}
        for sources, group in ordered.items():
            runs = dict(sets[next(s for s in sets if tuple(sorted(s)) == sources)])
            for order in group["orders"]:
                assert order["mean"] == pytest.approx(np.mean(runs[order["source_tasks"]]), rel=1e-12)
        assert condition["baseline"]["mean"] == pytest.approx(0.855)
        x_all = [points[tuple(sorted(s))] for s in sets]
        accuracy = [point["mean"] for point in x_all]
        for statistic in ("diversity", "diversity_with_target", "distance_to_target", "diversity_corrected"):
            x = [point[statistic] for point in x_all]
            corr = condition["correlations"][statistic]
            keep = [i for i, value in enumerate(x) if value is not None]
            xs, ys = [x[i] for i in keep], [accuracy[i] for i in keep]
            if statistic == "diversity_corrected":   # drop has no floor: only the sets without it
                assert corr["n"] == len([s for s in sets if "drop" not in s])
            assert corr["n"] == len(xs)
            if len(xs) < 3:
                assert corr["spearman_rho"] is None and "at least 3" in corr["reason"]
                continue
            assert corr["spearman_rho"] == pytest.approx(stats.spearmanr(xs, ys).statistic, rel=1e-12)
            assert corr["pearson_r"] == pytest.approx(stats.pearsonr(xs, ys).statistic, rel=1e-12)
            assert corr["spearman_p"] == pytest.approx(exact_permutation_p(xs, ys, stats.spearmanr), rel=1e-12)
            assert corr["pearson_p"] == pytest.approx(exact_permutation_p(xs, ys, stats.pearsonr), rel=1e-12)
            assert corr["p_method"].startswith("exact") and (corr["warning"] is not None) == (len(xs) < 5)
    assert conditions[("sequential", "")]["correlations"]["diversity"]["n"] == 5
    small = conditions[("sequential", "1000")]
    assert len(small["points"]) == 2 and small["correlations"]["diversity"]["reason"]
    assert small["baseline"] is None                 # no plain-model row with that budget

    # Appending every row once more changes nothing: the repeats are the same runs.
    write_results_table(table, rows + rows)
    again = TaskDiversity.main(base_args(folder, tmp_path / "again", "--results_table", str(table), "--no_plots"))
    for first, second in zip(result["transfer"]["conditions"], again["transfer"]["conditions"]):
        assert first["correlations"] == second["correlations"]
        assert [p["mean"] for p in first["points"]] == [p["mean"] for p in second["points"]]


@pytest.mark.slow
def test_one_configuration_appended_twice_is_not_a_correlation(emb_dir, tmp_path):
    """As a new user: two configurations, each appended twice. Pooling the rows gave ρ = −1, p = 0;
    now there are 2 source sets and no coefficient, in the JSON, the printout and the plot title."""
    folder, _ = emb_dir
    table = tmp_path / "results.csv"
    write_results_table(table, [{"target_task": TARGET, "source_tasks": "squad;drop", "accuracies": [0.9, 0.91]},
                                {"target_task": TARGET, "source_tasks": "squad_v2;duorc-p", "accuracies": [0.88, 0.87]}] * 2)
    done = run_module(str(REPO_ROOT / "TaskDiversity.py"), "--emb_dir", str(folder), "--results_table", str(table),
                      "--output_dir", str(tmp_path / "out"), timeout=180)
    assert done.returncode == 0, done.stderr
    report = json.loads((tmp_path / "out" / "diversity.json").read_text())
    (condition,) = report["transfer"]["conditions"]
    assert len(condition["points"]) == 2
    for corr in condition["correlations"].values():
        assert corr["n"] <= 2 and corr["spearman_rho"] is None and corr["spearman_p"] is None
    assert "2 source set(s) (2 repeated rows counted once)" in done.stdout
    assert "n = 2 source sets: only 2 distinct source set(s)" in done.stdout
    assert "ρ -1" not in done.stdout and "ρ −1" not in done.stdout


def test_a_damaged_results_table_is_refused_with_its_line(emb_dir, tmp_path):
    """A row glued onto a partial one (an append cut short by a full disk): before, TaskDiversity.py
    read the file and exited 0; now it names the line and exits 2."""
    folder, _ = emb_dir
    table = tmp_path / "results.csv"
    write_results_table(table, [{"target_task": TARGET, "source_tasks": "squad;drop"},
                                {"target_task": TARGET, "source_tasks": "squad_v2;duorc-p"}])
    lines = table.read_text().splitlines(keepends=True)
    table.write_text(lines[0] + lines[1].rstrip("\r\n") + lines[2])
    done = run_module(str(REPO_ROOT / "TaskDiversity.py"), "--emb_dir", str(folder), "--results_table", str(table),
                      "--output_dir", str(tmp_path / "out"), "--no_plots", timeout=180)
    assert done.returncode == 2, done.stderr
    assert "line 2 has" in done.stderr and "Traceback" not in done.stderr


@pytest.mark.parametrize("text, algorithm", [("", "none"), ("squad", "sequential"), ("squad;squad_v2", "sequential"),
                                             ("squad+squad_v2", "reptile"), ("squad;squad_v2+duorc-p", "mixed"),
                                             ("squad+squad_v2;drop", "mixed")])
def test_training_algorithm_from_the_source_tasks_cell(text, algorithm):
    assert training_algorithm(text) == algorithm


def test_too_few_rows_give_nan_with_a_reason(emb_dir, tmp_path):
    folder, _ = emb_dir
    table = tmp_path / "results.csv"
    write_results_table(table, [{"target_task": TARGET, "source_tasks": "squad;drop"},
                                {"target_task": TARGET, "source_tasks": "squad_v2;drop"}])
    result = TaskDiversity.main(base_args(folder, tmp_path / "out", "--results_table", str(table), "--no_plots"))
    corr = result["transfer"]["conditions"][0]["correlations"]["diversity"]
    assert corr["n"] == 2 and corr["spearman_rho"] is None and "at least 3" in corr["reason"]


def test_rows_scored_by_different_metrics_are_different_conditions(emb_dir, tmp_path):
    """A row's metric is part of its condition: Pearson rows never pool with accuracy rows, and the
    plain model of one metric is never the baseline of the other."""
    folder, _ = emb_dir
    table = tmp_path / "results.csv"
    rows = [{"target_task": TARGET, "source_tasks": "squad;drop", "accuracies": [0.9, 0.91]},
            {"target_task": TARGET, "source_tasks": "", "accuracies": [0.88, 0.87]},
            {"target_task": TARGET, "source_tasks": "squad;drop", "accuracies": [0.4, 0.5], "metric": "pearson"},
            {"target_task": TARGET, "source_tasks": "duorc-p", "accuracies": [0.3, 0.35], "metric": "pearson"}]
    write_results_table(table, rows)
    result = TaskDiversity.main(base_args(folder, tmp_path / "out", "--results_table", str(table), "--no_plots"))
    by_metric = {c["condition"]["metric"]: c for c in result["transfer"]["conditions"]}
    assert set(by_metric) == {"accuracy", "pearson"}
    assert sorted(p["mean"] for p in by_metric["pearson"]["points"]) == pytest.approx([0.325, 0.45])
    assert by_metric["accuracy"]["baseline"]["mean"] == pytest.approx(0.875) and by_metric["pearson"]["baseline"] is None
    with open(tmp_path / "out" / "transfer_points.csv", newline="", encoding="utf-8") as handle:
        assert sorted(row["metric"] for row in csv.DictReader(handle)) == ["accuracy", "pearson", "pearson"]


def test_a_single_seed_row_reads_nan_spread(emb_dir, tmp_path):
    """A one-seed run has std and interval "nan" in the table; its point has no interval."""
    folder, _ = emb_dir
    table = tmp_path / "results.csv"
    write_results_table(table, [{"target_task": TARGET, "source_tasks": "squad;drop", "accuracies": [0.9],
                                 "ci95_low": "nan", "ci95_high": "nan"}])
    result = TaskDiversity.main(base_args(folder, tmp_path / "out", "--results_table", str(table)))
    (point,) = result["transfer"]["conditions"][0]["points"]
    assert point["n_seeds"] == 1 and point["mean"] == 0.9
    assert point["std"] is None and point["ci_low"] is None


def test_parse_source_tasks():
    assert parse_source_tasks("squad;squad_v2;duorc-p") == ["squad", "squad_v2", "duorc-p"]
    assert parse_source_tasks("squad+squad_v2+duorc_s") == ["squad", "squad_v2", "duorc-s"]
    assert parse_source_tasks("squad;squad") == ["squad"]
    assert parse_source_tasks("") == []
    with pytest.raises(UnknownTaskError):
        parse_source_tasks("squad;nope")


# --- bad input ---------------------------------------------------------------------------------

@pytest.mark.parametrize("case", ["no_folder", "no_task"])
def test_missing_embeddings_are_one_line_errors(emb_dir, tmp_path, case):
    folder, _ = emb_dir
    emb = tmp_path / "absent" if case == "no_folder" else folder
    tasks = "squad,squad_v2,duorc-p,duorc-s,drop" if case == "no_folder" else "squad,squad_v2,quoref"
    done = run_module("TaskDiversity.py", "--emb_dir", str(emb), "--source_tasks", tasks,
                      "--output_dir", str(tmp_path / "out"), timeout=120)
    assert done.returncode == 2, done.stderr
    assert "Traceback" not in done.stderr
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: ")
    assert (str(emb) if case == "no_folder" else "quoref") in lines[0]
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("size", ["6", "1"])
def test_subset_size_out_of_range_is_a_parser_error(emb_dir, tmp_path, capsys, size):
    folder, _ = emb_dir
    with pytest.raises(SystemExit) as exit_info:
        TaskDiversity.main(base_args(folder, tmp_path / "out", "--subset_size", size))
    assert exit_info.value.code == 2
    assert "--subset_size must be between 2 and the 5 source tasks" in capsys.readouterr().err


def test_target_among_sources_is_a_parser_error(emb_dir, tmp_path, capsys):
    folder, _ = emb_dir
    with pytest.raises(SystemExit):
        TaskDiversity.main(base_args(folder, tmp_path / "out", "--source_tasks", "squad,sst2,drop"))
    assert "also a source task" in capsys.readouterr().err


SETTING_MISMATCHES = {  # what to change in drop's metadata -> the words of the refusal
    "num_samples": (lambda m: m.update(num_samples=8), "K (num_samples)"),
    "examples": (lambda m: m["examples"].update(examples_used=6), "examples used"),
    "max_length": (lambda m: m["settings"].update(max_length=256), "max length"),
    "head_steps": (lambda m: m["head"].update(steps=100), "head steps"),
    "head_lr": (lambda m: m["head"].update(learning_rate=1e-3), "head learning rate"),
    "head_wd": (lambda m: m["head"].update(weight_decay=0.0), "head weight decay"),
    "head_batch": (lambda m: m["head"].update(batch_size=16), "head batch size"),
}


def embeddings_with(tmp_path: Path, change) -> Path:
    rng = np.random.default_rng(12)
    folder = tmp_path / "TaskEmb"
    for task in (*SOURCES, TARGET):
        write_task(folder, task, rng)
    path = folder / "drop" / "embedding.json"
    metadata = json.loads(path.read_text())
    change(metadata)
    path.write_text(json.dumps(metadata))
    return folder


@pytest.mark.parametrize("mismatch", ["digest", "dimension", "estimator", "probe", "objective"])
def test_incomparable_embeddings_are_refused(tmp_path, mismatch):
    rng = np.random.default_rng(12)
    folder = tmp_path / "TaskEmb"
    for task in (*SOURCES, TARGET):
        odd = task == "drop"
        write_task(folder, task, rng, digest="layout-b" if odd and mismatch == "digest" else "layout-a",
                   dimension=DIMENSION + 1 if odd and mismatch == "dimension" else DIMENSION)
        if odd and mismatch in ("estimator", "probe", "objective"):
            path = folder / task / "embedding.json"
            metadata = json.loads(path.read_text())
            if mismatch == "estimator":
                metadata["estimator"] = "empirical"
            elif mismatch == "objective":
                metadata["objective"] = "task"
            else:
                metadata["probe"]["sha256"] = "another"
            path.write_text(json.dumps(metadata))
    with pytest.raises(DataError, match="cannot be compared"):
        TaskDiversity.main(base_args(folder, tmp_path / "out"))
    with pytest.raises(DataError, match="cannot be compared"):   # never allowed: a different quantity
        TaskDiversity.main(base_args(folder, tmp_path / "out", "--allow_setting_mismatch"))


@pytest.mark.parametrize("mismatch", sorted(SETTING_MISMATCHES))
def test_different_settings_are_refused_unless_allowed(tmp_path, mismatch, capsys):
    change, words = SETTING_MISMATCHES[mismatch]
    folder = embeddings_with(tmp_path, change)
    with pytest.raises(DataError, match=f"their {words.replace('(', '[(]').replace(')', '[)]')} differ.*--allow_setting_mismatch"):
        TaskDiversity.main(base_args(folder, tmp_path / "out", "--no_plots"))
    result = TaskDiversity.main(base_args(folder, tmp_path / "out", "--no_plots", "--allow_setting_mismatch"))
    assert any(words in warning and "drop" in warning for warning in result["comparability_warnings"])
    assert f"warning: compared although their {words} differ" in capsys.readouterr().out


def test_minibatch_size_matters_only_for_minibatch_sq(tmp_path):
    folder = embeddings_with(tmp_path, lambda m: m["settings"].update(minibatch_size=4))
    TaskDiversity.main(base_args(folder, tmp_path / "out", "--no_plots"))     # mc: M is unused, no refusal
    for task in (*SOURCES, TARGET):
        path = folder / task / "embedding.json"
        metadata = json.loads(path.read_text())
        metadata["estimator"] = "minibatch_sq"
        path.write_text(json.dumps(metadata))
    with pytest.raises(DataError, match="minibatch size"):
        TaskDiversity.main(base_args(folder, tmp_path / "out2", "--no_plots"))


def test_existing_output_dir_needs_overwrite(emb_dir, tmp_path):
    folder, _ = emb_dir
    output = tmp_path / "out"
    output.mkdir()
    (output / "score_vs_diversity.png").write_bytes(b"old")
    with pytest.raises(ToolkitError, match="--overwrite_output_dir"):
        TaskDiversity.main(base_args(folder, output, "--no_plots"))
    TaskDiversity.main(base_args(folder, output, "--no_plots", "--overwrite_output_dir"))
    assert not (output / "score_vs_diversity.png").exists()  # an earlier run's figure is not left behind


# --- as a user runs it -------------------------------------------------------------------------

@pytest.mark.slow
def test_script_as_a_user_runs_it(emb_dir, tmp_path):
    folder, _ = emb_dir
    write_results_table(tmp_path / "results.csv", grouped_table())
    done = run_module(str(REPO_ROOT / "TaskDiversity.py"), "--emb_dir", folder.name, "--results_table", "results.csv",
                      "--output_dir", "diversity_out", cwd=tmp_path, timeout=180)
    assert done.returncode == 0, done.stderr
    assert "Traceback" not in done.stderr
    ranking = [line for line in done.stdout.splitlines() if line.startswith(" 1. ") or line.startswith("10. ")]
    assert len(ranking) == 2
    assert "noise floor" in done.stdout and "verdict: " in done.stdout
    assert "Condition sequential, accuracy, max_train_samples all, holdout, lm, gpt2: 14 row(s) -> 5 source set(s) (7 repeated rows counted once)" in done.stdout
    assert "chain orders of squad+squad_v2: squad;squad_v2 0.9000 (3 seeds); squad_v2;squad 0.9300" in done.stdout
    output = tmp_path / "diversity_out"
    for name in ("task_distances.png", "score_vs_diversity.png"):
        assert (output / name).stat().st_size > 1000, name
        assert (output / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    report = json.loads((output / "diversity.json").read_text(encoding="utf-8"))
    assert len(report["subsets"]) == 10 and report["results_table"] == "results.csv"


def test_runs_sharing_seeds_are_flagged_and_rerun_rows_are_duplicates():
    from task2vec.analysis.transfer import source_set_point

    def row(line, seeds, output_dir="runs/a", pretrained="ckpt"):
        values = [0.9, 0.91, 0.92][:len(seeds.split(";"))]
        return {"line": line, "source_tasks": "squad;drop", "sources": ["squad", "drop"], "pretrained_model": pretrained,
                "seeds": seeds, "output_dir": output_dir, "n": len(values), "mean": float(np.mean(values)),
                "std": float(np.std(values, ddof=1)),
                **{name: 0.1 for name in ("diversity", "diversity_with_target", "distance_to_target",
                                          "diversity_corrected", "diversity_with_target_corrected",
                                          "distance_to_target_corrected")}}

    point = source_set_point([row(2, "13;21"), row(3, "13;21", output_dir="runs/b"), row(4, "13;42")], 0.95)
    assert point["duplicate_lines"] == [3] and point["n_runs"] == 2 and point["runs_share_seeds"]
    other_checkpoint = source_set_point([row(2, "13;21"), row(3, "13;21", pretrained="ckpt2")], 0.95)
    assert other_checkpoint["duplicate_lines"] == [] and not other_checkpoint["runs_share_seeds"]
    assert other_checkpoint["n_seeds"] == 4


def test_pooled_intervals_of_bounded_metrics_stay_in_their_range():
    """Two seeds of an accuracy 0.25 and 0.75: the t-interval [-2.68, 3.68] is cut to [0, 1]; a
    correlation's to [-1, 1]; a tight one is left as it is."""
    from task2vec.analysis.transfer import pooled_summary

    wide = {"n": 2, "mean": 0.5, "std": float(np.std([0.25, 0.75], ddof=1))}
    assert (pooled_summary([{**wide, "metric": "accuracy"}], 0.95)["ci_low"],
            pooled_summary([{**wide, "metric": "accuracy"}], 0.95)["ci_high"]) == (0.0, 1.0)
    correlation = pooled_summary([{**wide, "mean": -0.5, "metric": "matthews_correlation"}], 0.95)
    assert (correlation["ci_low"], correlation["ci_high"]) == (-1.0, 1.0)
    tight = pooled_summary([{"n": 5, "mean": 0.9, "std": 0.01, "metric": "accuracy"}], 0.95)
    assert tight["ci_high"] == pytest.approx(0.9 + 2.776445 * 0.01 / np.sqrt(5), abs=1e-6)
