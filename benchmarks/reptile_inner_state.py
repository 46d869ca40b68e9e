"""Measurement: which inner-optimizer state Reptile should default to, `carry` (one Adam whose
moments run on across tasks, as the OpenAI and learn2learn reference code) or `reset` (a fresh
Adam per task).

Meta-trains a tiny GPT-2 with maml_qa.py on four tasks of a synthetic QA family and scores the
held-out fifth (F1 from θ and after 5, 10 and 30 adaptation steps on its training data, each
evaluation from the same θ with a fresh Adam), once with each setting, for several model seeds.
Quality, not speed: the numbers are deterministic on a CPU, whatever else the machine runs.

    python benchmarks/reptile_inner_state.py      # ~2 minutes; writes results/reptile_inner_state.json
"""
from __future__ import annotations

import argparse
import statistics
import tempfile
from pathlib import Path


from recording import provenance, write_result

import maml_qa
from utils.data.synthetic_qa import meta_learning_family, write_family
from utils.models.tiny_model import build_tiny_model

WINDOWS = ["--max_seq_length", "96", "--doc_stride", "32", "--max_question_length", "16", "--max_answer_length", "8",
           "--features_cache_dir", "none", "--no_progress"]
ADAPT_STEPS = "5,10,30"


def held_out_curve(folder: Path, files: list[str], model: Path, seed: int, state: str, output: Path) -> dict[str, float]:
    """Held-out F1 by adaptation steps after 80 Reptile steps with `--inner_opt_state state`."""
    results = maml_qa.main([
        "--tasks", "squad,squad_v2,duorc-p,drop", "--model_name", str(model), *files, "--eval_tasks", "quoref",
        "--eval_file", f"quoref={folder / 'quoref_dev.jsonl'}", "--eval_adapt_steps", ADAPT_STEPS,
        "--inner_lr", "3e-3", "--num_inner_steps", "5", "--meta_batch_size", "2", "--inner_batch_size", "16",
        "--num_train_iterations", "80", "--inner_opt_state", state, "--seed", str(seed), "--output_dir", str(output),
        *WINDOWS])
    return {key.removeprefix("eval_quoref_"): value for key, value in results.items() if key.startswith("eval_quoref_")}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="Model and meta-training seeds.")
    parser.add_argument("--output", default=str(Path(__file__).parent / "results" / "reptile_inner_state.json"))
    args = parser.parse_args()
    curves: dict[str, dict[int, dict[str, float]]] = {"reset": {}, "carry": {}}
    with tempfile.TemporaryDirectory() as scratch:
        folder = Path(scratch)
        files = write_family(folder, meta_learning_family())
        for seed in args.seeds:
            model = build_tiny_model(folder / f"tiny{seed}", n_layer=2, n_embd=64, n_head=4, n_positions=128,
                                     dropout=0.0, tokenizer_path=str(folder / "tokenizer"), seed=seed)
            for state in curves:
                curves[state][seed] = held_out_curve(folder, files, model, seed, state, folder / f"{state}{seed}")
                print(state, seed, curves[state][seed], flush=True)
    final = {state: statistics.mean(curve["f1_30"] for curve in by_seed.values()) for state, by_seed in curves.items()}
    paired = [curves["carry"][s]["f1_30"] - curves["reset"][s]["f1_30"] for s in args.seeds]
    result = {
        "name": "reptile_inner_state",
        "what": "held-out task F1 after 30 adaptation steps, Reptile (80 outer steps, k = 5, Adam β1 = 0) on four "
                "tasks of a synthetic QA family, tiny GPT-2 (2×64), mean over seeds",
        "unit": "F1 (points)",
        "baseline": {"label": "--inner_opt_state reset (a fresh Adam per task)", "value": final["reset"]},
        "ours": {"label": "--inner_opt_state carry (the reference implementations' choice)", "value": final["carry"]},
        "ratio": final["carry"] / final["reset"],
        "target_ratio": 1.0,
        "extra": {"seeds": args.seeds, "curves": {state: {str(s): c for s, c in by_seed.items()}
                                                 for state, by_seed in curves.items()},
                  "paired_difference_f1_30": paired, "adapt_steps": ADAPT_STEPS},
        **provenance(),
    }
    print(f"F1 after 30 steps: reset {final['reset']:.1f}, carry {final['carry']:.1f}; carry − reset by seed {paired}")
    write_result(args.output, result)


if __name__ == "__main__":
    main()
