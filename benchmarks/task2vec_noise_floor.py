"""Real data: Task2Vec embeddings of SST-2, SQuAD v1.1, SQuAD v2.0, DuoRC (both), DROP and Quoref from
../shared/data with a tiny GPT-2 probe and the real GPT-2 tokenizer; the task distance matrix and the
Monte-Carlo noise floor at K = 1 (baseline) and K = 8 (ours), and whether each pair of different tasks
lies above the noise floor.

DROP is represented by the only DROP questions here that the adapter can use (6 single-span answers
in the allennlp fixture), so its embedding and noise floor rest on 6 sequences; DuoRC samples give 64
rows. The probe (2 layers, 64 wide, random weights, the GPT-2 vocabulary) is built offline; the LM head is
fitted to each task for a fixed budget. Both K use the same data, batches and fitted head; only the
number of sampled labels per position differs. The ratio is the noise floor at K = 1 over that at K = 8
(the theory says about 8: the floor falls as 1/K).

    python benchmarks/task2vec_noise_floor.py         # writes results/task2vec_noise_floor.json (~5 min, 2 cores)
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from recording import provenance, write_result  # noqa: E402

from task2vec.analysis import noise_floor_summary, noise_floor_verdict  # noqa: E402
from task2vec.cli import main as embed_main  # noqa: E402
from task2vec.distances import pairwise_distances  # noqa: E402
from task2vec.io import load_task_embedding  # noqa: E402
from utils.tiny_model import build_tiny_model  # noqa: E402

SHARED = Path(__file__).resolve().parent.parent.parent / "shared" / "data"
TASK_FILES = {
    "sst2": "sst2/train.tsv",
    "squad": "squad_v1.1/dev-v1.1.json",
    "squad_v2": "squad_v2.0/cs224n-dev-v2.0.json",
    "duorc-p": "duorc/ParaphraseRC_train.sample.json",
    "duorc-s": "duorc/SelfRC_train.sample.json",
    "drop": "drop/allennlp_drop_fixture.json",  # the largest DROP file here: 6 usable single-span questions
    "quoref": "quoref/quoref-dev-v0.1.json",
}


def embed_all(probe: Path, emb_dir: Path, num_samples: int, args: argparse.Namespace) -> dict:
    """Embed every task at one K; returns the distance matrix and the noise-floor summary."""
    files = [arg for task, path in TASK_FILES.items() for arg in ("--task_file", f"{task}={SHARED / path}")]
    started = time.perf_counter()
    embed_main(["--tasks", ",".join(TASK_FILES), *files, "--model_name", str(probe), "--output_dir", str(emb_dir),
                "--num_samples", str(num_samples), "--batch_size", str(args.batch_size),
                "--num_batches", str(args.num_batches), "--head_steps", str(args.head_steps), "--no_progress"])
    seconds = time.perf_counter() - started
    embeddings = {task: load_task_embedding(emb_dir, task) for task in TASK_FILES}
    matrix = pairwise_distances(np.stack([e.vector for e in embeddings.values()]), "task2vec")      # (n, n)
    floors = noise_floor_summary(embeddings, matrix, "task2vec", confidence=0.95)
    return {"seconds": seconds, "tasks": list(TASK_FILES), "distance_matrix": matrix.tolist(), "noise_floor": floors,
            "verdict": noise_floor_verdict(floors["pairs"]),
            "examples": {t: e.metadata["examples"]["examples_used"] for t, e in embeddings.items()}}


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batch_size", type=int, default=32, help="Sequences per batch.")
    parser.add_argument("--num_batches", type=int, default=4, help="Batches per task.")
    parser.add_argument("--head_steps", type=int, default=100, help="LM-head fitting steps per task.")
    parser.add_argument("--output", default=str(Path(__file__).parent / "results" / "task2vec_noise_floor.json"),
                        help="Where to write the result JSON.")
    args = parser.parse_args(argv)
    if not SHARED.is_dir():
        raise SystemExit(f"needs the real data in {SHARED}")
    with tempfile.TemporaryDirectory() as scratch:
        probe = build_tiny_model(Path(scratch) / "probe", n_layer=2, n_embd=64, n_head=2, n_positions=128,
                                 tokenizer_path=str(SHARED / "gpt2_tokenizer"), dropout=0.0, seed=0)
        runs = {k: embed_all(probe, Path(scratch) / f"k{k}", k, args) for k in (1, 8)}
    mean_floor = {k: float(np.mean([e["task_level"] for e in r["noise_floor"]["tasks"].values()])) for k, r in runs.items()}
    result = {"name": "task2vec_noise_floor",
              "what": "mean task-level noise floor d(e, e re-embedded with a new MC seed) over 7 real tasks, "
                      "tiny GPT-2 probe (2x64, GPT-2 vocabulary), mc estimator, CPU",
              "unit": "task2vec distance (lower is better; ratio = baseline / ours)",
              "baseline": {"label": "K = 1 label sample per position", "value": mean_floor[1]},
              "ours": {"label": "K = 8 label samples per position", "value": mean_floor[8]},
              "ratio": mean_floor[1] / mean_floor[8], "target_ratio": 8.0,
              "extra": {"K1": runs[1], "K8": runs[8], "settings": vars(args),
                        "files": {t: str(Path("../shared/data") / p) for t, p in TASK_FILES.items()}},
              **provenance()}
    write_result(args.output, result)
    for k, run in runs.items():
        print(f"K = {k}: {run['verdict']} ({run['seconds']:.0f} s)")
        print("  " + " ".join(f"{t:>9}" for t in run["tasks"]))
        for task, row in zip(run["tasks"], run["distance_matrix"]):
            floor = run["noise_floor"]["tasks"][task]["task_level"]
            print(f"  {task:>9} " + " ".join(f"{v:9.5f}" for v in row) + f"   floor {floor:.5f}")
    print(f"mean noise floor: K=1 {mean_floor[1]:.5f}, K=8 {mean_floor[8]:.5f}, ratio {result['ratio']:.2f}")
    return result


if __name__ == "__main__":
    main()
