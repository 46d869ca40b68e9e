"""maml_qa.py end to end: the original command, resumption, data parallelism, meta-learning."""
import json
import os
import shutil
import subprocess
import sys

import pytest
import torch
from safetensors.torch import load_file

import maml_qa
from tests.conftest import REPO_ROOT, run_module
from utils.models.checkpoint import read_lineage
from utils.data.loading import sample_file
from utils.data.synthetic_qa import meta_learning_family
from utils.models.tiny import write_family
from utils.models.tiny import build_tiny_model

SHORT = ["--max_seq_length", "96", "--doc_stride", "32", "--max_question_length", "16", "--max_answer_length", "8",
         "--features_cache_dir", "none"]
# A family of synthetic QA tasks: the same structure, other wordings. The last one is held out.
FAMILY = meta_learning_family()


@pytest.fixture(scope="module")
def family(tmp_path_factory):
    folder = tmp_path_factory.mktemp("family")
    files = write_family(folder, FAMILY)
    model = build_tiny_model(folder / "tiny", n_layer=2, n_embd=64, n_head=4, n_positions=128, dropout=0.0,
                             tokenizer_path=str(folder / "tokenizer"), seed=0)
    return folder, model, files


def files_of(files: list[str], tasks: str) -> list[str]:
    """The --task_file pairs of `tasks` only (a file for a task outside the run is an error)."""
    names = tasks.split(",")
    pairs = [files[i:i + 2] for i in range(0, len(files), 2)]
    return [arg for pair in pairs if pair[1].split("=", 1)[0] in names for arg in pair]


@pytest.mark.slow
def test_reptile_initialisation_adapts_faster_on_an_unseen_task(family, tmp_path):
    folder, model, files = family
    common = ["--tasks", "squad,squad_v2,duorc-p,drop", "--model_name", str(model), *files, "--eval_tasks", "quoref",
              "--eval_file", f"quoref={folder / 'quoref_dev.jsonl'}", "--eval_adapt_steps", "5,10,30",
              "--inner_lr", "3e-3", "--num_inner_steps", "5", "--meta_batch_size", "2", "--inner_batch_size", "16",
              "--seed", "0", *SHORT]
    initial = maml_qa.main([*common, "--num_train_iterations", "1", "--outer_lr", "0", "--output_dir",
                            str(tmp_path / "initial")])
    reptile = maml_qa.main([*common, "--num_train_iterations", "80", "--output_dir", str(tmp_path / "reptile")])
    subsets = json.loads((tmp_path / "reptile" / "data_subsets.json").read_text())
    assert subsets["quoref/validation"]["total"] == 100 and set(subsets) == {
        "squad/train", "squad_v2/train", "duorc-p/train", "drop/train", "quoref/train", "quoref/validation"}
    curve = {k: round(v, 1) for k, v in reptile.items() if k.startswith("eval_quoref")}
    baseline = {k: round(v, 1) for k, v in initial.items() if k.startswith("eval_quoref")}
    print(f"held-out task F1 by adaptation steps: initial model {baseline}; Reptile initialisation {curve}")
    assert reptile["eval_quoref_f1_30"] >= initial["eval_quoref_f1_30"] + 10


@pytest.mark.slow
def test_original_command_and_the_target_script_reads_the_result(tmp_path):
    tiny = build_tiny_model(tmp_path / "tiny_gpt2")
    files = [arg for name, task in (("squad", "squad"), ("SQuAD_v2", "squad_v2"), ("duorc;SelfRC", "duorc-s"))
             for arg in ("--task_file", f"{name}={sample_file(task, 'train')}")]
    done = run_module(str(REPO_ROOT / "maml_qa.py"), "--tasks", "squad,squad_v2,duorc;SelfRC", "--model_name",
                      str(tiny), *files, "--num_train_iterations", "3", "--num_inner_steps", "2", "--meta_batch_size",
                      "2", "--inner_lr", "1e-3", "--features_cache_dir", "none", cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    model_dir = tmp_path / "logs" / "qa_tasks_reptile" / "model"
    lineage = read_lineage(model_dir)
    assert lineage["meta_training_tasks"] == ["squad", "squad_v2", "duorc-s"]
    assert lineage["chain"][-1]["task"] == "squad+squad_v2+duorc-s" and lineage["chain"][-1]["script"] == "maml_qa.py"
    log = [event for event in map(json.loads, open(tmp_path / "logs" / "qa_tasks_reptile" / "meta_log.jsonl"))
           if event.get("event") != "progress"]
    assert [e["step"] for e in log] == [1, 2, 3] and {"epsilon", "tasks", "inner_losses", "theta_step_norm"} <= set(log[0])
    assert [round(e["epsilon"], 4) for e in log] == [1.0, round(2 / 3, 4), round(1 / 3, 4)]
    done = run_module(str(REPO_ROOT / "run_target_task_GPT2_sst2_multiple.py"), "--pretrained_model", str(model_dir),
                      "--train_file", str(sample_file("sst2", "train")), "--validation_file",
                      str(sample_file("sst2", "validation")), "--num_runs", "1", "--epochs", "1", "--features_cache_dir",
                      "none", "--output_dir", str(tmp_path / "target"))
    assert done.returncode == 0, done.stderr[-3000:]
    summary = json.loads((tmp_path / "target" / "summary.json").read_text())
    assert summary["source_tasks"] == "squad+squad_v2+duorc-s"


@pytest.mark.slow
def test_held_out_tasks_get_adapter_statistics_and_a_large_meta_batch_is_warned_about(tiny_checkpoint, tmp_path):
    """The README of data/samples counts Quoref's questions by hand: 34 train, 18 dev, 2 answer
    offsets repaired and 1 unrepairable in each file."""
    done = run_module("maml_qa.py", "--tasks", "squad,squad_v2", "--model_name", str(tiny_checkpoint),
                      "--task_file", f"squad={sample_file('squad', 'train')}",
                      "--task_file", f"squad_v2={sample_file('squad_v2', 'train')}",
                      "--eval_tasks", "quoref", "--task_file", f"quoref={sample_file('quoref', 'train')}",
                      "--eval_file", f"quoref={sample_file('quoref', 'validation')}", "--eval_adapt_steps", "1",
                      "--max_eval_samples", "4", "--meta_batch_size", "5", "--num_train_iterations", "1",
                      "--num_inner_steps", "1", "--output_dir", str(tmp_path / "run"), *SHORT)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "--meta_batch_size 5 with 2 tasks: tasks are drawn with replacement" in done.stderr
    for split, read in (("train", 34), ("validation", 18)):
        stats = json.loads((tmp_path / "run" / f"adapter_stats_quoref_{split}.json").read_text())
        assert (stats["records_read"], stats["notes"]["answer_offset_repaired"]) == (read, 2)
        assert stats["without_located_answer"] == {"answer_offset_unrepairable": 1}
    assert (tmp_path / "run" / "adapter_stats_squad_train.json").exists()


@pytest.mark.parametrize("algorithm", ["reptile", "fomaml", "multitask"])
def test_resumed_meta_training_ends_with_the_same_theta(family, tmp_path, algorithm):
    folder, _, files = family
    model = build_tiny_model(tmp_path / "dropout_model", n_layer=2, n_embd=32, n_head=2, n_positions=128, dropout=0.1,
                             tokenizer_path=str(folder / "tokenizer"), seed=1)
    common = ["--tasks", "squad,squad_v2,duorc-p", "--model_name", str(model), *files_of(files, "squad,squad_v2,duorc-p"),
              "--num_train_iterations", "6",
              "--save_every", "3", "--num_inner_steps", "2", "--meta_batch_size", "2", "--inner_lr", "1e-3",
              "--inner_opt_state", "carry", "--seed", "3", "--algorithm", algorithm, *SHORT]
    full = maml_qa.main([*common, "--output_dir", str(tmp_path / "full")])
    resumed = tmp_path / "resumed"
    resumed.mkdir()
    shutil.copytree(tmp_path / "full" / "checkpoint-3", resumed / "checkpoint-3")
    # `latest` finds checkpoint-3, the newest complete one in the run folder.
    again = maml_qa.main([*common, "--output_dir", str(resumed), "--resume_from_checkpoint",
                          "latest" if algorithm != "reptile" else str(resumed / "checkpoint-3")])
    assert again["algorithm"] == algorithm and (again["train_passes"], again["train_tokens"]) == \
        (full["train_passes"], full["train_tokens"])
    a, b = load_file(str(tmp_path / "full" / "model.safetensors")), load_file(str(resumed / "model.safetensors"))
    for key in a:
        assert torch.allclose(a[key], b[key], atol=1e-6, rtol=0), key
    assert read_lineage(resumed)["parent"]["path"] == str(model.resolve())


@pytest.mark.slow
@pytest.mark.parametrize("algorithm, port", [("reptile", 29547), ("fomaml", 29548), ("multitask", 29549)])
def test_two_processes_give_the_same_theta_as_one(family, tmp_path, algorithm, port):
    folder, model, files = family
    # SGD inner steps: Adam with β1 = 0 moves near-zero gradients by ±lr whatever their size, so
    # float summation-order noise between thread counts would decide those steps.
    common = ["--tasks", "squad,squad_v2,duorc-p,drop", "--model_name", str(model),
              *files_of(files, "squad,squad_v2,duorc-p,drop"), "--num_train_iterations", "3", "--num_inner_steps", "2", "--meta_batch_size", "4", "--inner_optimizer", "sgd", "--inner_lr", "0.05",
              "--inner_opt_state", "reset", "--seed", "4", "--device", "cpu", "--algorithm", algorithm, *SHORT]
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as each torchrun process below
    try:
        maml_qa.main([*common, "--output_dir", str(tmp_path / "one")])
    finally:
        torch.set_num_threads(threads)
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", str(port),
               str(REPO_ROOT / "maml_qa.py"), *common, "--output_dir", str(tmp_path / "two")]
    done = subprocess.run(command, cwd=REPO_ROOT, capture_output=True, text=True, timeout=300,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert done.returncode == 0, done.stderr[-3000:]
    a, b = load_file(str(tmp_path / "one" / "model.safetensors")), load_file(str(tmp_path / "two" / "model.safetensors"))
    for key in a:
        assert torch.allclose(a[key], b[key], atol=1e-5), key
    one = [e["tasks"] for e in map(json.loads, open(tmp_path / "one" / "meta_log.jsonl")) if "tasks" in e]
    two = [e["tasks"] for e in map(json.loads, open(tmp_path / "two" / "meta_log.jsonl")) if "tasks" in e]
    assert one == two


@pytest.mark.slow
def test_classification_tasks_and_stray_files_are_refused(tmp_path):
    done = run_module("maml_qa.py", "--tasks", "squad,sst2", "--output_dir", str(tmp_path / "x"))
    assert done.returncode == 2 and "sst2 is a classification task" in done.stderr
    train = str(sample_file("squad", "train"))
    done = run_module("maml_qa.py", "--tasks", "squad", "--task_file", f"dorp={train}", "--output_dir", str(tmp_path / "y"))
    assert done.returncode == 2 and "unknown task 'dorp'" in done.stderr and "Traceback" not in done.stderr
    done = run_module("maml_qa.py", "--tasks", "squad", "--task_file", f"squad={train}", "--task_file",
                      f"squad_v1={train}", "--output_dir", str(tmp_path / "z"))
    assert done.returncode == 2 and "gives task squad twice" in done.stderr
    done = run_module("maml_qa.py", "--tasks", "squad,duorc-p", "--eval_tasks", "squad_v1", "--output_dir",
                      str(tmp_path / "w"))
    assert done.returncode == 2 and "--eval_tasks squad also in --tasks" in done.stderr and "held out" in done.stderr


def test_stream_seeds_are_independent_per_seed_role_and_task():
    """seed + 7 style arithmetic made run seed 0's held-out stream run seed 7's; the derived seeds do not
    collide, and are SeedSequence([seed, crc32(role), crc32(task)]) computed here by hand."""
    import zlib

    import numpy as np

    from utils.training.runtime import stream_seed

    seeds = {(s, role, task): stream_seed(s, role, task) for s in (0, 7, 42) for role in ("meta-train", "held-out-support")
             for task in ("squad", "quoref")}
    assert len(set(seeds.values())) == len(seeds)
    expected = np.random.SeedSequence([42, zlib.crc32(b"meta-train"), zlib.crc32(b"squad")]).generate_state(1, np.uint64)[0]
    assert seeds[(42, "meta-train", "squad")] == int(expected) >> 1


@pytest.mark.slow
def test_matched_compute_matches_tokens_within_one_batch(family, tmp_path):
    """--match_compute: multi-task reads Reptile's budget and, on the same draws, the very same
    batches; FOMAML (other batches, a query pass per task) stops within one batch of Reptile's
    tokens by default, on the same passes with --match_compute_by passes; the achieved-over-budget
    ratios are in all_results.json."""
    folder, model, files = family
    common = ["--tasks", "squad,squad_v2,duorc-p", "--model_name", str(model), *files_of(files, "squad,squad_v2,duorc-p"),
              "--num_inner_steps", "2", "--meta_batch_size", "2", "--inner_batch_size", "4", "--inner_lr", "1e-3",
              "--seed", "3", *SHORT]
    one_batch = 4 * 96                          # --inner_batch_size × --max_seq_length: the most a batch holds
    reptile = maml_qa.main([*common, "--num_train_iterations", "6", "--output_dir", str(tmp_path / "reptile")])
    runs = {name: maml_qa.main([*common, "--algorithm", name, "--match_compute", str(tmp_path / "reptile"),
                                "--output_dir", str(tmp_path / name)]) for name in ("multitask", "fomaml")}
    runs["fomaml_passes"] = maml_qa.main([*common, "--algorithm", "fomaml", "--match_compute", str(tmp_path / "reptile"),
                                          "--match_compute_by", "passes", "--output_dir", str(tmp_path / "fp")])
    assert reptile["train_passes"] == 24 and runs["multitask"]["meta_steps"] == 6
    assert (runs["multitask"]["train_tokens"], runs["multitask"]["train_passes"]) == (reptile["train_tokens"], 24)
    assert abs(runs["fomaml"]["train_tokens"] - reptile["train_tokens"]) <= one_batch
    assert runs["fomaml_passes"]["train_passes"] == 24
    for name, run in runs.items():
        written = json.loads((tmp_path / {"fomaml_passes": "fp"}.get(name, name) / "all_results.json").read_text())
        match = written["compute_match"]
        assert match["by"] == ("passes" if name == "fomaml_passes" else "tokens")
        assert match["budget"] == {"tokens": reptile["train_tokens"], "passes": 24, "flops": reptile["train_flops"]}
        assert match["ratio"] == {"tokens": run["train_tokens"] / reptile["train_tokens"],
                                  "flops": run["train_flops"] / reptile["train_flops"],
                                  "passes": run["train_passes"] / 24}
    done = run_module("maml_qa.py", *common, "--match_compute", str(tmp_path / "reptile"), "--num_train_iterations", "3",
                      "--output_dir", str(tmp_path / "x"))
    assert done.returncode == 2 and "leave out --num_train_iterations" in done.stderr


@pytest.mark.slow
def test_matched_compute_against_an_intermediate_run_stops_within_one_batch(family, tmp_path):
    """Against run_intermediate_source_GPT2.py (batch 12, other batches entirely): Reptile's
    tokens land within one of its batches of the intermediate run's, its last outer step cut short."""
    import run_intermediate_source_GPT2 as intermediate

    folder, model, files = family
    train = files[files.index("--task_file") + 1].split("=", 1)[1]
    source = intermediate.main(["--model_name", str(model), "--dataset_name", "squad", "--train_file", train,
                                "--validation_file", train.replace("_train", "_dev"), "--max_steps", "7",
                                "--per_device_train_batch_size", "12", "--max_eval_samples", "8",
                                "--output_dir", str(tmp_path / "chain"), *SHORT, "--no_progress"])
    assert source["train_passes"] == 7
    run = maml_qa.main(["--tasks", "squad,squad_v2", "--model_name", str(model), *files_of(files, "squad,squad_v2"),
                        "--num_inner_steps", "5", "--meta_batch_size", "4", "--inner_batch_size", "8", "--seed", "3",
                        "--match_compute", str(tmp_path / "chain"), "--output_dir", str(tmp_path / "reptile"), *SHORT])
    assert abs(run["train_tokens"] - source["train_tokens"]) <= 8 * 96
    ratio = json.loads((tmp_path / "reptile" / "all_results.json").read_text())["compute_match"]["ratio"]
    assert ratio["tokens"] == run["train_tokens"] / source["train_tokens"]
    derived = json.loads((tmp_path / "reptile" / "run_args.json").read_text())["derived"]
    assert derived["num_train_iterations"] == run["meta_steps"]


def test_the_budget_plan_is_the_nearest_of_every_cut():
    """plan_to_budget against brute force: every (outer steps, cut of the last step) replayed from
    scratch, the nearest total taken."""
    import numpy as np

    from utils.meta.training import MetaSettings, TaskStream, draw_outer_step, plan_to_budget, query_key

    rng = np.random.default_rng(0)
    streams = {name: TaskStream({"length": rng.integers(5, 60, size=23).tolist()}, 4, seed=i)
               for i, name in enumerate(("a", "b", "c"))}
    queries = {name: TaskStream({"length": rng.integers(5, 60, size=9).tolist()}, 4, seed=10 + i)
               for i, name in enumerate(("a", "b", "c"))}
    for algorithm in ("reptile", "fomaml"):
        settings = MetaSettings(1, 3, 2, 4, 1e-3, 1.0, 0.0, "sgd", "reset", "uniform", 0.0, 5, None, None, algorithm)

        def total(steps: int, cut, unit: str) -> int:
            generator = np.random.default_rng(5)
            positions = {n: 0 for n in streams} | {query_key(n): 0 for n in streams}
            draws = [draw_outer_step(generator, sorted(streams), [23] * 3, settings, streams, queries, positions,
                                     cut if t == steps - 1 else None) for t in range(steps)]
            return sum(getattr(d, unit) for d in draws)

        cuts = [None] + [tuple([2] * slot + [r]) for slot in range(3) for r in (1, 2)][:-1]
        for unit, budgets in (("tokens", (1, 37, 500, 1234.5, 4000)), ("passes", (1, 7, 37.5, 61, 120))):
            totals = [total(t, c, unit) for t in range(1, 30) for c in cuts]
            for budget in budgets:
                distance = min(abs(value - budget) for value in totals)
                steps, cut, planned = plan_to_budget(streams, settings, budget, unit, queries)
                assert planned == total(steps, cut, unit) and abs(planned - budget) == distance
