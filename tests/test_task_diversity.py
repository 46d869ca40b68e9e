"""TaskDiversity.py and task2vec.analysis: subset diversities, the results-table join and its
correlations, checked against independent numpy/scipy computations; errors and written files."""
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
from task2vec.transfer import parse_source_tasks
from tests.conftest import REPO_ROOT, run_module
from utils.errors import DataError, ToolkitError, UnknownTaskError
from utils.target_task import RESULTS_TABLE_COLUMNS

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
                "estimator": "mc",
                "num_samples": 4, "examples_used": 256}
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

    tasks = [*SOURCES, TARGET]
    assert result["task_distances"]["tasks"] == tasks
    expected_matrix = [[0.0 if a == b else reference_distance(vectors[a], vectors[b]) for b in tasks] for a in tasks]
    np.testing.assert_allclose(result["task_distances"]["matrix"], expected_matrix, rtol=1e-12, atol=0)
    assert result["source_set_diversity"]["value"] == pytest.approx(
        reference_diversity([vectors[t] for t in SOURCES]), rel=1e-12)

    floor = result["noise_floor"]["tasks"]
    reseeded = np.load(folder / "squad" / "embedding_reseeded.npy").astype(np.float64)
    assert floor["squad"]["task_level"] == pytest.approx(reference_distance(vectors["squad"], reseeded), rel=1e-12)
    assert floor["drop"]["task_level"] is None and "embedding_reseeded" in floor["drop"]["task_level_reason"]
    assert floor["drop"]["batches"]["n"] == N_BATCHES and floor["drop"]["batches"]["noise_floor"] is None
    batches = np.load(folder / "squad" / "batches.npy").astype(np.float64)
    assert floor["squad"]["batches"]["diversity"]["value"] == pytest.approx(reference_diversity(list(batches)),
                                                                           rel=1e-12)
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


def test_cosine_distance_and_aliases(emb_dir, tmp_path):
    folder, vectors = emb_dir
    result = TaskDiversity.main(base_args(folder, tmp_path / "out", "--no_plots", "--distance", "cosine",
                                          "--source_tasks", "squad,duorc;SelfRC,drop", "--subset_size", "2"))
    assert result["sources"] == ["squad", "duorc-s", "drop"]
    pairs = {tuple(entry["tasks"]): entry["diversity"] for entry in result["subsets"]}
    assert pairs[("squad", "duorc-s")] == pytest.approx(scipy_cosine(vectors["squad"], vectors["duorc-s"]), rel=1e-12)


def write_results_table(path: Path, rows: list[tuple[str, str, float]]) -> None:
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=RESULTS_TABLE_COLUMNS)
        writer.writeheader()
        for target, sources, accuracy in rows:
            writer.writerow({column: "" for column in RESULTS_TABLE_COLUMNS} | {
                "created_at": "2025-01-01T00:00:00+00:00", "target_task": target, "pretrained_model": "m",
                "source_tasks": sources, "n": 3, "mean_accuracy": accuracy, "output_dir": f"runs/{sources}"})


TABLE = [  # (target, source_tasks, mean accuracy); lines 2.. of the file
    (TARGET, "squad;squad_v2;duorc-p", 0.911),
    (TARGET, "squad+squad_v2+duorc-s", 0.905),
    (TARGET, "squad", 0.899),
    (TARGET, "", 0.893),
    (TARGET, "duorc-p;drop", 0.917),
    (TARGET, "squad;quoref", 0.902),             # quoref has no embedding: skipped
    (TARGET, "squad;not_a_task", 0.90),          # unknown name: skipped
    ("glue;sst2", "duorc_s;drop", 0.921),        # aliases resolve
    ("quoref", "squad;squad_v2", 0.5),           # another target: skipped
    (TARGET, "squad_v2;duorc-s;drop", 0.915),
    (TARGET, "squad;mlqa_en", 0.908),            # an embedded task outside --source_tasks: joined
    (TARGET, "squad;squad_v2;duorc-p", 0.913),   # the same set again (another run)
]


def test_results_table_join_and_correlations(emb_dir, tmp_path):
    folder, vectors = emb_dir
    table = tmp_path / "results.csv"
    write_results_table(table, TABLE)
    result = TaskDiversity.main(base_args(folder, tmp_path / "out", "--results_table", str(table)))

    joined_lines = [2, 3, 4, 5, 6, 9, 11, 12, 13]
    assert [row["line"] for row in result["joined_results"]] == joined_lines
    skipped = {row["line"]: row["reason"] for row in result["skipped_results"]}
    assert sorted(skipped) == [7, 8, 10]
    assert "quoref" in skipped[7] and "not a registered task" in skipped[8] and "is not 'sst2'" in skipped[10]

    for row in result["joined_results"]:
        target, text, accuracy = TABLE[row["line"] - 2]
        sources = list(dict.fromkeys(parse_source_tasks(text)))
        assert row["sources"] == sources and row["n_sources"] == len(sources)
        assert row["mean_accuracy"] == accuracy
        if sources:
            want = reference_statistics([vectors[t] for t in sources], vectors[TARGET])
            for key, value in want.items():
                if math.isnan(value):
                    assert row[key] is None
                else:
                    assert row[key] == pytest.approx(value, rel=1e-12), (text, key)
        else:
            assert row["diversity"] is None and row["distance_to_target"] is None
    reptile = result["joined_results"][1]
    assert reptile["sources"] == ["squad", "squad_v2", "duorc-s"]

    for column in ("diversity", "diversity_with_target", "distance_to_target"):
        pairs = [(row[column], row["mean_accuracy"]) for row in result["joined_results"] if row[column] is not None]
        x, y = np.array(pairs).T
        got = result["correlations"][column]
        spearman, pearson = stats.spearmanr(x, y), stats.pearsonr(x, y)
        assert got["n"] == len(x) and got["reason"] is None
        assert got["spearman_rho"] == pytest.approx(spearman.statistic, rel=1e-12)
        assert got["spearman_p"] == pytest.approx(spearman.pvalue, rel=1e-12)
        assert got["pearson_r"] == pytest.approx(pearson.statistic, rel=1e-12)
        assert got["pearson_p"] == pytest.approx(pearson.pvalue, rel=1e-12)
    assert result["correlations"]["diversity"]["n"] == 7  # rows with at least 2 sources

    output = tmp_path / "out"
    assert json.loads((output / "correlations.json").read_text()) == result["correlations"]
    with open(output / "diversity.csv", newline="", encoding="utf-8") as handle:
        rows = {row["tasks"]: row for row in csv.DictReader(handle)}
    chain = rows["squad;squad_v2;duorc-p"]
    assert float(chain["mean_accuracy"]) == pytest.approx((0.911 + 0.913) / 2) and chain["n_results"] == "2"
    assert rows["squad;duorc-p;drop"]["mean_accuracy"] == ""
    for name in ("task_distances.png", "accuracy_vs_diversity.png"):
        assert (output / name).stat().st_size > 0


def test_too_few_rows_give_nan_with_a_reason(emb_dir, tmp_path):
    folder, _ = emb_dir
    table = tmp_path / "results.csv"
    write_results_table(table, [(TARGET, "squad;drop", 0.9), (TARGET, "squad_v2;drop", 0.91)])
    result = TaskDiversity.main(base_args(folder, tmp_path / "out", "--results_table", str(table), "--no_plots"))
    corr = result["correlations"]["diversity"]
    assert corr["n"] == 2 and corr["spearman_rho"] is None and "at least 3" in corr["reason"]


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


@pytest.mark.parametrize("mismatch", ["digest", "dimension", "estimator", "probe"])
def test_incomparable_embeddings_are_refused(tmp_path, mismatch):
    rng = np.random.default_rng(12)
    folder = tmp_path / "TaskEmb"
    for task in (*SOURCES, TARGET):
        odd = task == "drop"
        write_task(folder, task, rng, digest="layout-b" if odd and mismatch == "digest" else "layout-a",
                   dimension=DIMENSION + 1 if odd and mismatch == "dimension" else DIMENSION)
        if odd and mismatch in ("estimator", "probe"):
            path = folder / task / "embedding.json"
            metadata = json.loads(path.read_text())
            if mismatch == "estimator":
                metadata["estimator"] = "empirical"
            else:
                metadata["probe"]["sha256"] = "another"
            path.write_text(json.dumps(metadata))
    with pytest.raises(DataError, match="cannot be compared"):
        TaskDiversity.main(base_args(folder, tmp_path / "out"))


def test_existing_output_dir_needs_overwrite(emb_dir, tmp_path):
    folder, _ = emb_dir
    output = tmp_path / "out"
    output.mkdir()
    (output / "accuracy_vs_diversity.png").write_bytes(b"old")
    with pytest.raises(ToolkitError, match="--overwrite_output_dir"):
        TaskDiversity.main(base_args(folder, output, "--no_plots"))
    TaskDiversity.main(base_args(folder, output, "--no_plots", "--overwrite_output_dir"))
    assert not (output / "accuracy_vs_diversity.png").exists()  # an earlier run's figure is not left behind


# --- as a user runs it -------------------------------------------------------------------------

def test_script_as_a_user_runs_it(emb_dir, tmp_path):
    folder, _ = emb_dir
    write_results_table(tmp_path / "results.csv", TABLE)
    done = run_module(str(REPO_ROOT / "TaskDiversity.py"), "--emb_dir", folder.name, "--results_table", "results.csv",
                      "--output_dir", "diversity_out", cwd=tmp_path, timeout=180)
    assert done.returncode == 0, done.stderr
    assert "Traceback" not in done.stderr
    ranking = [line for line in done.stdout.splitlines() if line.startswith(" 1. ") or line.startswith("10. ")]
    assert len(ranking) == 2
    assert "noise floor" in done.stdout and "skipped line 7" in done.stdout
    output = tmp_path / "diversity_out"
    for name in ("task_distances.png", "accuracy_vs_diversity.png"):
        assert (output / name).stat().st_size > 1000, name
        assert (output / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    report = json.loads((output / "diversity.json").read_text(encoding="utf-8"))
    assert len(report["subsets"]) == 10 and report["results_table"] == "results.csv"
