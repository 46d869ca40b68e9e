"""What the target script reports over its seeds: summary.json and the results-table row.

Both give n, mean, std, the 95% t-interval, min and max of every metric of the task over the seeds
(utils.results.metrics.summarize). A metric undefined for some seed has null statistics, naming the
seeds, rather than a mean over the seeds where it happened to be defined.
"""
from __future__ import annotations

import math
from pathlib import Path

from utils.classification.evaluation import companion_metrics, metric_names, primary_metric, reported_metrics
from utils.data.registry import TaskSpec
from utils.results.metrics import json_ready, metric_range, summarize
from utils.run.outputs import utc_now

COMPUTE_KEYS = ("train_passes", "train_tokens", "train_flops")


def step_algorithm(entry: dict) -> str:
    """How one chain stage trained: its recorded meta-training algorithm, else "reptile" for a stage
    over several "+"-joined tasks (maml_qa.py before it recorded one), else "sequential"."""
    return entry.get("algorithm") or ("reptile" if "+" in str(entry.get("task")) else "sequential")


def chain_algorithm(steps: list[dict]) -> str:
    """none (no training stage), sequential (single-task stages only), the algorithm of a single
    meta-training stage (reptile, fomaml, multitask), or mixed (a chain with a meta-training stage)."""
    algorithms = [step_algorithm(entry) for entry in steps]
    if not algorithms:
        return "none"
    if all(name == "sequential" for name in algorithms):
        return "sequential"
    return algorithms[0] if len(algorithms) == 1 else "mixed"


def chain_compute(steps: list[dict]) -> dict[str, float | None]:
    """The training compute summed over the chain's stages; None when a stage did not record it
    (a checkpoint written before compute was counted), rather than a sum that leaves it out."""
    if not steps or any("compute" not in entry for entry in steps):
        return {key: None for key in COMPUTE_KEYS}
    return {key: sum(entry["compute"][key] for entry in steps) for key in COMPUTE_KEYS}


def chain_description(lineage: dict | None, pretrained: str) -> dict:
    """Source chain ("gpt2 > squad > squad_v2"), its tasks, objectives, training algorithm and
    training compute (`source_compute`), for tables."""
    if not lineage:
        return {"source_chain": pretrained, "source_tasks": "", "objectives": "", "algorithm": "none",
                "source_compute": chain_compute([])}
    chain = lineage.get("chain", [])
    names = [entry.get("task") or Path(str(entry.get("path") or entry.get("script"))).name for entry in chain]
    steps = [entry for entry in chain if entry.get("task")]
    objectives = sorted({entry["objective"] for entry in chain if entry.get("objective")})
    return {"source_chain": " > ".join(names), "source_tasks": ";".join(entry["task"] for entry in steps),
            "objectives": ";".join(objectives), "algorithm": chain_algorithm(steps),
            "source_compute": chain_compute(steps)}


def metric_summary(runs: list[dict], key: str) -> dict:
    """n, mean, std, t-interval, min, max of `key` over the runs, for JSON; all null with a reason
    naming the seeds when the value is undefined (null) for any of them."""
    undefined = [run["seed"] for run in runs if run.get(key) is None]
    if undefined:
        reason = f"{key} is undefined for seed(s) {', '.join(map(str, undefined))} (see their all_results.json)"
        return {"n": len(runs), **{name: None for name in ("mean", "std", "ci_low", "ci_high", "min", "max")},
                "confidence": 0.95, "reason": reason}
    return json_ready(summarize([float(run[key]) for run in runs], bounds=metric_range(key.removeprefix("eval_"))))


def selection_summary(runs: list[dict]) -> dict | None:
    """How the runs' epochs were chosen: the hold-out's size and classes (the same for every seed),
    the rule used ("holdout", "last", or "mixed" when some seeds fell back to the last epoch), and
    whether and why the hold-out could not tell epochs apart (the seeds named)."""
    choices = [run for run in runs if "selection_rule" in run]
    if not choices:
        return None
    rules = {run["selection_rule"] for run in choices}
    fallen = [run for run in choices if run["selection_degenerate"]]
    by_reason: dict[str, list[str]] = {}
    for run in fallen:
        by_reason.setdefault(run["selection_reason"], []).append(str(run["seed"]))
    first = choices[0]
    return {"requested": first["selection"], "rule": rules.pop() if len(rules) == 1 else "mixed",
            "holdout_size": first["holdout_size"], "holdout_classes": first["holdout_classes"],
            "degenerate": bool(fallen),
            "reason": None if not fallen else "; ".join(f"seed{'s' * (len(seeds) > 1)} {', '.join(seeds)}: {reason}"
                                                        for reason, seeds in by_reason.items())
            + "; the last epoch was kept"}


def build_summary(*, spec: TaskSpec, pretrained: str, lineage: dict | None, runs: list[dict], settings: dict,
                  output_dir: Path, train_examples: int) -> dict:
    """summary.json: every run, and per reported metric (the task's, then accuracy and macro-F1 of a
    class task) `eval_<metric>` = its statistics over the seeds (std and interval null with one run);
    `train_examples` (what each run trained on, the hold-out excluded) and `selection`
    (selection_summary)."""
    reported = reported_metrics(spec)
    summary = {
        "target_task": spec.name,
        "primary_metric": primary_metric(spec),
        "metrics": [*metric_names(spec), *companion_metrics(spec)],
        "pretrained_model": pretrained,
        "lineage": lineage,
        **chain_description(lineage, pretrained),
        "seeds": [run["seed"] for run in runs],
        "train_examples": train_examples,
        "selection": selection_summary(runs),
        "runs": [{"seed": run["seed"], **{f"eval_{name}": run.get(f"eval_{name}") for name in reported},
                  "eval_loss": run["eval_loss"], "selected_epoch": run["selected_epoch"],
                  "results": f"runs/seed_{run['seed']}/all_results.json",
                  "predictions": f"runs/seed_{run['seed']}/predictions.jsonl"} for run in runs],
    }
    summary.update({f"eval_{name}": metric_summary(runs, f"eval_{name}") for name in reported})
    # This invocation's training, all seeds together (the source's is source_compute).
    summary["target_compute"] = {key: sum(run.get(key, 0) for run in runs) for key in COMPUTE_KEYS}
    summary.update({"settings": settings, "output_dir": str(output_dir.resolve()), "created_at": utc_now()})
    return summary


def _cell(value: float | None) -> float | str:
    """A statistic for the CSV; "nan" where it is undefined (one run, or an undefined metric)."""
    return "nan" if value is None or (isinstance(value, float) and not math.isfinite(value)) else value


def results_row(summary: dict, max_train_samples: int | None, selection: str) -> dict:
    """The results-table row of a summary (utils.results.table.RESULTS_TABLE_COLUMNS): the run's
    identity, the accuracy columns (empty for a regression target), the primary metric's statistics
    and the means of the task's other metrics ("f1=0.81;accuracy=0.75")."""
    primary = summary[f"eval_{summary['primary_metric']}"]
    row = {"created_at": summary["created_at"], "target_task": summary["target_task"],
           "pretrained_model": summary["pretrained_model"], "source_chain": summary["source_chain"],
           "source_tasks": summary["source_tasks"], "objectives": summary["objectives"],
           "max_train_samples": "" if max_train_samples is None else max_train_samples, "selection": selection,
           "seeds": ";".join(str(s) for s in summary["seeds"]), "n": primary["n"],
           "primary_metric": summary["primary_metric"], "mean_primary": _cell(primary["mean"]),
           "std_primary": _cell(primary["std"]), "ci95_low_primary": _cell(primary["ci_low"]),
           "ci95_high_primary": _cell(primary["ci_high"]), "min_primary": _cell(primary["min"]),
           "max_primary": _cell(primary["max"]),
           "other_metrics": ";".join(f"{name}={_cell(summary[f'eval_{name}']['mean'])}"
                                     for name in summary["metrics"][1:]),
           "algorithm": summary["algorithm"],
           **{f"source_{key}": "" if value is None else value for key, value in summary["source_compute"].items()},
           **{f"target_{key}": value for key, value in summary["target_compute"].items()},
           "output_dir": summary["output_dir"]}
    accuracy = summary.get("eval_accuracy")
    if accuracy is not None:   # never undefined: mean, min and max are numbers
        row.update({"mean_accuracy": accuracy["mean"], "std_accuracy": _cell(accuracy["std"]),
                    "ci95_low": _cell(accuracy["ci_low"]), "ci95_high": _cell(accuracy["ci_high"]),
                    "min_accuracy": accuracy["min"], "max_accuracy": accuracy["max"]})
    return row
