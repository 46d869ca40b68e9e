"""Quality, not speed: Reptile (80 outer steps, m = 2, k = 5: 800 passes), FOMAML and multi-task
training at the same passes (--match_compute) on four tasks of the synthetic QA family, a tiny
GPT-2 (2×64) per seed; held-out F1 of the fifth task after 0, 5, 10 and 30 adaptation steps from
each θ and from the initial model. Deterministic on a CPU.
"""
from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

from recording import provenance, write_result

import maml_qa
from utils.data.synthetic_qa import meta_learning_family
from utils.models.tiny import write_family
from utils.models.tiny import build_tiny_model
from utils.results.metrics import summarize

WINDOWS = ["--max_seq_length", "96", "--doc_stride", "32", "--max_question_length", "16", "--max_answer_length", "8",
           "--features_cache_dir", "none", "--no_progress"]
STEPS = (0, 5, 10, 30)
ALGORITHMS = ("initial", "reptile", "fomaml", "multitask")


def run(folder: Path, files: list[str], model: Path, seed: int, algorithm: str, output: Path) -> dict[str, float]:
    """Held-out F1 by adaptation steps after meta-training with `algorithm` ("initial": none)."""
    common = ["--tasks", "squad,squad_v2,duorc-p,drop", "--model_name", str(model), *files, "--eval_tasks", "quoref",
              "--eval_file", f"quoref={folder / 'quoref_dev.jsonl'}", "--eval_adapt_steps", "5,10,30",
              "--inner_lr", "3e-3", "--num_inner_steps", "5", "--meta_batch_size", "2", "--inner_batch_size", "16",
              "--seed", str(seed), "--output_dir", str(output), *WINDOWS]
    if algorithm == "initial":   # one outer step of size 0 leaves θ as it was
        extra = ["--num_train_iterations", "1", "--outer_lr", "0"]
    elif algorithm == "reptile":
        extra = ["--num_train_iterations", "80"]
    else:
        # passes, as recorded: "the same 800 passes" (multi-task's tokens are Reptile's either way)
        extra = ["--algorithm", algorithm, "--match_compute", str(output.parent / f"reptile{seed}"),
                 "--match_compute_by", "passes"]
    results = maml_qa.main([*common, *extra])
    curve = {f"f1_{k}": results[f"eval_quoref_f1_{k}"] for k in STEPS}
    curve["train_passes"] = results["train_passes"] if algorithm != "initial" else 0
    return curve


def interval(values: list[float], bounds: tuple[float, float] = (0.0, 100.0)) -> dict[str, float]:
    """Mean and 95% Student-t interval over seeds, cut to the range of F1 (or of a difference of
    two F1s), as the target script cuts its intervals (utils.results.metrics.summarize)."""
    summary = summarize(values, bounds=bounds)
    return {"mean": summary["mean"], "ci_low": summary["ci_low"], "ci_high": summary["ci_high"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="Model and meta-training seeds.")
    parser.add_argument("--output", default=str(Path(__file__).parent / "results" / "meta_baselines.json"),
                        help="Where to write the result JSON.")
    args = parser.parse_args()
    curves: dict[str, dict[int, dict]] = {name: {} for name in ALGORITHMS}
    with tempfile.TemporaryDirectory() as scratch:
        folder = Path(scratch)
        files = write_family(folder, meta_learning_family())
        for seed in args.seeds:
            model = build_tiny_model(folder / f"tiny{seed}", n_layer=2, n_embd=64, n_head=4, n_positions=128,
                                     dropout=0.0, tokenizer_path=str(folder / "tokenizer"), seed=seed)
            for name in ALGORITHMS:   # reptile before the two that match its compute
                curves[name][seed] = run(folder, files, model, seed, name, folder / f"{name}{seed}")
                print(name, seed, json.dumps(curves[name][seed]), flush=True)
    summary = {name: {f"f1_{k}": interval([curves[name][s][f"f1_{k}"] for s in args.seeds]) for k in STEPS}
               for name in ALGORITHMS}
    paired = {name: {f"f1_{k}": interval([curves[name][s][f"f1_{k}"] - curves["initial"][s][f"f1_{k}"]
                                          for s in args.seeds], bounds=(-100.0, 100.0)) for k in STEPS}
              for name in ALGORITHMS[1:]}
    best = max(ALGORITHMS[1:], key=lambda name: summary[name]["f1_30"]["mean"])
    result = {
        "name": "meta_baselines",
        "what": "held-out task F1 after 30 adaptation steps on a synthetic QA family, tiny GPT-2 (2×64): Reptile "
                "(80 outer steps, m = 2, k = 5), FOMAML and multi-task at the same 800 forward/backward passes "
                "(--match_compute), and the initial model; mean of 3 seeds",
        "unit": "F1 (points)",
        "baseline": {"label": "the initial model (no meta-training)", "value": summary["initial"]["f1_30"]["mean"]},
        "ours": {"label": f"the best of the three algorithms after 30 steps ({best})",
                 "value": summary[best]["f1_30"]["mean"]},
        "ratio": summary[best]["f1_30"]["mean"] / summary["initial"]["f1_30"]["mean"],
        "target_ratio": 1.0,
        "extra": {"seeds": args.seeds, "adapt_steps": list(STEPS),
                  "curves": {name: {str(s): c for s, c in by_seed.items()} for name, by_seed in curves.items()},
                  "mean_and_ci": summary, "paired_difference_from_initial": paired},
        **provenance(),
    }
    for name in ALGORITHMS:
        print(name, {k: f"{v['mean']:.1f} [{v['ci_low']:.1f}, {v['ci_high']:.1f}]" for k, v in summary[name].items()})
    write_result(args.output, result)


if __name__ == "__main__":
    main()
