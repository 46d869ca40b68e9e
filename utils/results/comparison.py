"""Several source checkpoints on one target, each against the plain model: the comparison table of
a meta-learning study (a chain, Reptile, FOMAML and multi-task on the same tasks).

    python -m utils.compare_runs PLAIN/summary.json CHAIN/summary.json REPTILE/summary.json ... \
        [--bootstrap 10000] [--output comparison.json]

For each summary (the first is the reference, the plain model): algorithm, source tasks, n and the
mean primary metric with its 95% t-interval, the source and target training FLOPs, and against the
reference what `python -m utils.seed_statistics` gives (paired difference, paired t and Wilcoxon
p-values, bootstrap interval), the paired t p-values also Holm-adjusted over the table's comparisons.
"""
from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from pathlib import Path

from utils.results.seed_statistics import compare, read_summary
from utils.run.flags import SEED, number
from utils.run.errors import DataError


def holm_adjusted(p_values: Sequence[float | None]) -> list[float | None]:
    """Holm's step-down adjustment: the i-th smallest of the m defined p-values becomes
    max over j ≤ i of min(1, (m − j + 1)·p_(j)); None stays None (and does not count in m)."""
    defined = sorted((p, index) for index, p in enumerate(p_values) if p is not None)
    adjusted: list[float | None] = [None] * len(p_values)
    running = 0.0
    for rank, (p, index) in enumerate(defined):
        running = max(running, min(1.0, (len(defined) - rank) * p))
        adjusted[index] = running
    return adjusted


def _row(path: Path, summary: dict) -> dict:
    """What the table says of one run, from its summary.json."""
    metric = summary.get("primary_metric", "accuracy")
    score = summary[f"eval_{metric}"]
    return {"summary": str(path), "label": Path(summary.get("output_dir") or path.parent).name,
            "algorithm": summary.get("algorithm", ""), "source_tasks": summary.get("source_tasks", ""),
            "metric": metric, "n": score["n"], "mean": score["mean"], "ci_low": score["ci_low"],
            "ci_high": score["ci_high"], "source_compute": summary.get("source_compute"),
            "target_compute": summary.get("target_compute")}


def compare_runs(reference: str | Path, others: Sequence[str | Path], *, bootstrap: int = 10000,
                 seed: int = 0) -> dict:
    """{"reference": row, "runs": [row + "against_reference": compare(...) + holm p]}; a DataError
    for a summary of another target or metric than the reference's."""
    reference = Path(reference)
    base = _row(reference, read_summary(reference))
    rows = []
    for path in map(Path, others):
        row = _row(path, read_summary(path))
        row["against_reference"] = compare(reference, path, bootstrap=bootstrap, seed=seed)
        rows.append(row)
    holm = holm_adjusted([row["against_reference"].get("paired_t_p_value") for row in rows])
    for row, adjusted in zip(rows, holm):
        row["against_reference"]["paired_t_p_value_holm"] = adjusted
    return {"reference": base, "runs": rows, "comparisons": len(rows),
            "holm": "paired t p-values adjusted over the comparisons of this table (Holm 1979)"}


def _number(value: float | None, digits: int = 4, kind: str = "f") -> str:
    return "n/a" if value is None else f"{value:.{digits}{kind}}"


def table_lines(result: dict) -> list[str]:
    """The comparison as a Markdown table, the reference first."""
    metric = result["reference"]["metric"]
    lines = [f"| run | algorithm | sources | n | {metric} [95% CI] | source FLOPs | target FLOPs | "
             "paired Δ [bootstrap 95% CI] | paired t p (Holm) | Wilcoxon p |",
             "|---|---|---|---:|---|---:|---:|---|---|---:|"]
    for row in [result["reference"], *result["runs"]]:
        cells = [row["label"], row["algorithm"] or "", row["source_tasks"] or "(none)", str(row["n"]),
                 f"{_number(row['mean'])} [{_number(row['ci_low'])}, {_number(row['ci_high'])}]",
                 *(_number((row[key] or {}).get("train_flops"), 2, "e") for key in ("source_compute", "target_compute"))]
        against = row.get("against_reference")
        if against is None:
            cells += ["reference", "", ""]
        else:
            paired = against.get("paired") or {}
            boot = against.get("bootstrap") or {}
            cells += [f"{_number(paired.get('mean'))} [{_number(boot.get('ci_low'))}, {_number(boot.get('ci_high'))}]",
                      f"{_number(against.get('paired_t_p_value'), 3)} "
                      f"({_number(against.get('paired_t_p_value_holm'), 3)})",
                      _number(against.get("wilcoxon_p_value"), 3)]
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def build_parser() -> argparse.ArgumentParser:
    """The command line of `python -m utils.compare_runs`."""
    parser = argparse.ArgumentParser(prog="python -m utils.compare_runs", description=__doc__.split("\n\n")[0])
    parser.add_argument("reference", help="summary.json of the reference run (the plain model) on the target.")
    parser.add_argument("runs", nargs="+", help="summary.json of each run compared with it (same target and seeds).")
    parser.add_argument("--bootstrap", type=number(int, minimum=0), default=10000, help="Bootstrap draws (0 to skip).")
    parser.add_argument("--seed", type=SEED, default=0, help="Seed of the bootstrap.")
    parser.add_argument("--output", type=str, default=None, help="Also write the comparison here as JSON.")
    return parser


def main(argv: list[str] | None = None) -> dict:
    """Print the table (and write the JSON) and return the comparison."""
    args = build_parser().parse_args(argv)
    if str(Path(args.reference).resolve()) in {str(Path(p).resolve()) for p in args.runs}:
        raise DataError("the reference is also among the runs compared with it", file=args.reference)
    result = compare_runs(args.reference, args.runs, bootstrap=args.bootstrap, seed=args.seed)
    print("\n".join(table_lines(result)))
    if args.output:
        Path(args.output).write_text(json.dumps(result, indent=2, allow_nan=False) + "\n", encoding="utf-8")
    return result
