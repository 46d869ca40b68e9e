"""Quality, not speed: Reptile's inner optimizer state `carry` against `reset` on four tasks of the
synthetic QA family, held-out F1 of the fifth after 0, 5, 10 and 30 adaptation steps, ten seeds
(one seed's F1 moves by tens of points with small changes to the run), paired by seed.
Deterministic on a CPU.
"""
from __future__ import annotations

import argparse
import tempfile
from pathlib import Path


from recording import provenance, write_result

import maml_qa
from utils.results.metrics import json_ready, summarize
from utils.data.synthetic_qa import meta_learning_family
from utils.models.tiny import write_family
from utils.models.tiny import build_tiny_model

WINDOWS = ["--max_seq_length", "96", "--doc_stride", "32", "--max_question_length", "16", "--max_answer_length", "8",
           "--features_cache_dir", "none", "--no_progress"]
ADAPT_STEPS = "5,10,30"
CURVE_KEYS = ("f1_0", "f1_5", "f1_10", "f1_30")


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
    parser.add_argument("--seeds", type=int, nargs="+", default=list(range(10)), help="Model and meta-training seeds.")
    parser.add_argument("--output", default=str(Path(__file__).parent / "results" / "reptile_inner_state.json"),
                        help="Where to write the result JSON.")
    args = parser.parse_args()
    if len(set(args.seeds)) < 2:
        parser.error(f"--seeds needs at least two distinct seeds for an interval, got {args.seeds}")
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
    summary = {state: {key: json_ready(summarize([by_seed[s][key] for s in args.seeds])) for key in CURVE_KEYS}
               for state, by_seed in curves.items()}
    paired = {key: [curves["carry"][s][key] - curves["reset"][s][key] for s in args.seeds] for key in CURVE_KEYS}
    final = {state: summary[state]["f1_30"]["mean"] for state in curves}
    result = {
        "name": "reptile_inner_state",
        "what": "held-out task F1 after 30 adaptation steps, Reptile (80 outer steps, k = 5, Adam β1 = 0) on four "
                f"tasks of a synthetic QA family, tiny GPT-2 (2×64), mean of {len(args.seeds)} seeds",
        "unit": "F1 (points)",
        "baseline": {"label": "--inner_opt_state reset (a fresh Adam per task)", "value": final["reset"]},
        "ours": {"label": "--inner_opt_state carry (the reference implementations' choice)", "value": final["carry"]},
        "ratio": final["carry"] / final["reset"],
        "target_ratio": 1.0,
        "extra": {"seeds": args.seeds, "curves": {state: {str(s): c for s, c in by_seed.items()}
                                                 for state, by_seed in curves.items()},
                  "mean_and_ci": summary,
                  "paired_difference_f1_30": paired["f1_30"],
                  "paired_difference": {key: json_ready(summarize(values)) for key, values in paired.items()},
                  "seeds_carry_higher": {key: sum(v > 0 for v in values) for key, values in paired.items()},
                  "adapt_steps": ADAPT_STEPS},
        **provenance(),
    }
    difference = result["extra"]["paired_difference"]["f1_30"]
    print(f"F1 after 30 steps: reset {final['reset']:.1f}, carry {final['carry']:.1f}; carry − reset "
          f"{difference['mean']:+.1f} [{difference['ci_low']:+.1f}, {difference['ci_high']:+.1f}], higher for "
          f"{result['extra']['seeds_carry_higher']['f1_30']} of {len(args.seeds)} seeds")
    write_result(args.output, result)


if __name__ == "__main__":
    main()
