"""Task and batch embeddings end to end: the command line, determinism, the noise floor, torchrun."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from task2vec.__main__ import main as embed_main
from task2vec.analysis.correction import corrected_distance
from task2vec.analysis.distances import task2vec_distance
from task2vec.embedding.embed import EmbeddingSettings, batch_digests, embed_task, plan_batches
from task2vec.embedding.io import load_task_embedding
from task2vec.embedding.probe import HeadSettings
from tests.conftest import run_module
from utils.models.loading import load_model
from utils.data.loading import load_task_data
from utils.training.runtime import RunContext
from utils.data.loading import sample_file
from utils.data.registry import get_task

SMALL = ["--batch_size", "8", "--num_batches", "3", "--head_steps", "20", "--num_samples", "2", "--no_progress"]


def test_batches_are_disjoint_and_differ():
    batches = plan_batches(100, 8, 5, seed=3)
    assert len(batches) == 5 and all(len(b) == 8 for b in batches)
    assert len({i for b in batches for i in b}) == 40
    digests = batch_digests(batches, [f"r{i}" for i in range(100)])
    assert len(set(digests)) == 5   # the same-seed reshuffle bug would give five equal batches
    with pytest.raises(RuntimeError, match="share record"):
        batch_digests([[0, 1], [1, 2]], ["a", "b", "c"])
    assert plan_batches(5, 8, 4, seed=0) == [np.random.default_rng(0).permutation(5).tolist()]


@pytest.mark.slow
def test_command_line_writes_every_file(tiny_checkpoint, tmp_path):
    out = tmp_path / "TaskEmb"
    summary = embed_main(["--tasks", "squad,glue;sst2", "--model_name", str(tiny_checkpoint), "--use_samples",
                          "--output_dir", str(out), *SMALL])
    assert set(summary["tasks"]) == {"squad", "sst2"}
    for task in ("squad", "sst2"):
        embedding = load_task_embedding(out, task)
        meta = embedding.metadata
        assert embedding.vector.shape == (meta["dimension"],) == (2 * (32 * 2 + 96 + 32 + 128 + 32) + 32,)
        assert embedding.batches.shape == (3, meta["dimension"]) == embedding.batches_reseeded.shape
        assert np.all(embedding.vector >= 0) and embedding.vector.sum() > 0
        assert meta["objective"] == "lm" and meta["estimator"] == "mc" and meta["num_samples"] == 2
        assert meta["examples"]["examples_used"] == 24 and len(set(meta["examples"]["batch_digests"])) == 3
        assert meta["layout"][-1]["end"] == meta["dimension"] and meta["layout_digest"]
        assert meta["head"]["steps"] == 20 and meta["probe"]["sha256"]
        assert 0 < meta["noise_floor"]["task"] < meta["noise_floor"]["batches_mean"]
        # the data diversity corrected for the batch floors, recomputed from the saved (float32) arrays
        floors = [task2vec_distance(a, b) for a, b in zip(embedding.batches, embedding.batches_reseeded)]
        pairs = [(i, j) for i in range(3) for j in range(i + 1, 3)]
        corrected = np.mean([corrected_distance(task2vec_distance(embedding.batches[i], embedding.batches[j]),
                                                floors[i], floors[j]) for i, j in pairs])
        assert meta["noise_floor"]["data_diversity_corrected"] == pytest.approx(corrected, rel=1e-4)
        assert meta["noise_floor"]["data_diversity_corrected"] < meta["noise_floor"]["data_diversity"]
    assert not any(p.suffix == ".pkl" for p in out.rglob("*"))
    again = run_module("task2vec", "--tasks", "squad", "--model_name", str(tiny_checkpoint), "--use_samples",
                       "--output_dir", str(out), *SMALL)
    assert again.returncode == 2 and again.stderr.strip().splitlines()[-1].startswith("error:")
    assert "--overwrite_output_dir" in again.stderr and "Traceback" not in again.stderr
    before = load_task_embedding(out, "sst2").metadata["created_at"]
    embed_main(["--tasks", "sst2", "--model_name", str(tiny_checkpoint), "--use_samples", "--output_dir", str(out),
                "--overwrite_output_dir", *SMALL])   # replaces sst2 in place, keeps squad
    assert sorted(p.name for p in out.iterdir()) == ["squad", "sst2"]
    assert load_task_embedding(out, "sst2").metadata["created_at"] >= before
    unknown = run_module("task2vec", "--tasks", "squadd", "--output_dir", str(tmp_path / "x"))
    assert unknown.returncode == 2 and "unknown task 'squadd'" in unknown.stderr


def embed(tiny_checkpoint, task: str, **overrides):
    loaded = load_model(str(tiny_checkpoint), "lm")
    spec = get_task(task)
    records = load_task_data(spec, "train", sample_file(task, "train")).records
    settings = EmbeddingSettings(**{"batch_size": 8, "num_batches": 3, "num_samples": 2,
                                    "head": HeadSettings(20, 5e-5, 1e-4, 8), **overrides})
    context = RunContext(torch.device("cpu"))
    return embed_task(loaded, spec, records, settings, context, source="samples")


def test_same_seed_same_embedding_other_seed_other_sampling(tiny_checkpoint):
    first = embed(tiny_checkpoint, "duorc-s")
    second = embed(tiny_checkpoint, "duorc-s")
    np.testing.assert_array_equal(first.vector, second.vector)
    np.testing.assert_array_equal(first.batches, second.batches)
    other = embed(tiny_checkpoint, "duorc-s", seed=7)
    assert task2vec_distance(first.vector, other.vector) > 0


def test_task_objective_embeds_qa_and_classification(tiny_checkpoint):
    for task in ("squad_v2", "sst2"):
        embedding = embed(tiny_checkpoint, task, objective="task", head=HeadSettings(30, 1e-3, 1e-4, 8))
        meta = embedding.metadata
        assert meta["probe"]["head"] == ("classification" if task == "sst2" else "span")
        # K = 2 samples of one prediction per sentence, or of two (start, end) per QA window
        assert meta["examples"]["predictions_counted"] == 2 * 24 * (1 if task == "sst2" else 2)
        assert meta["head"]["last_loss"] < meta["head"]["first_loss"]
        assert embedding.vector.sum() > 0


def test_noise_floor_falls_about_as_one_over_k(tiny_checkpoint):
    embeddings = {k: embed(tiny_checkpoint, "squad", num_samples=k, head=HeadSettings(0, 5e-5, 0.0, 8), num_batches=2)
                  for k in (1, 4, 16)}
    floors = {k: task2vec_distance(e.vector, e.reseeded) for k, e in embeddings.items()}
    slope = np.polyfit(np.log([1, 4, 16]), np.log([floors[1], floors[4], floors[16]]), 1)[0]
    print("noise floor by K:", floors, "log-log slope", slope)
    assert -1.3 <= slope <= -0.7


@pytest.mark.slow
def test_torchrun_over_two_processes_equals_one(tiny_checkpoint, tmp_path):
    common = ["--tasks", "sst2,quoref", "--model_name", str(tiny_checkpoint), "--use_samples", *SMALL,
              "--device", "cpu"]
    embed_main([*common, "--output_dir", str(tmp_path / "single")])
    result = run_module("torch.distributed.run", "--nproc_per_node", "2", "--master_port", "29531", "-m", "task2vec",
                        *common, "--output_dir", str(tmp_path / "double"),
                        env={"OMP_NUM_THREADS": "1"}, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    for task in ("sst2", "quoref"):
        single, double = load_task_embedding(tmp_path / "single", task), load_task_embedding(tmp_path / "double", task)
        np.testing.assert_allclose(double.vector, single.vector, rtol=1e-6)
        np.testing.assert_allclose(double.batches, single.batches, rtol=1e-6)
        np.testing.assert_allclose(double.reseeded, single.reseeded, rtol=1e-6)
        assert double.metadata["examples"] == single.metadata["examples"]
