"""Resuming a run with the arguments it was started with.

A resumed run continues from saved weights, optimizer and schedule; an argument that changes the
result (learning rate, data, seed, starting model, ...) and differs from the saved `run_args.json`
is an error unless `--allow_changed_args` names it. Allowed changes take effect (the training loop
re-applies the learning rate and weight decay over the restored optimizer state); arguments that
cannot take effect on a resumed run (the starting weights: they come from the checkpoint) keep the
saved value in the new `run_args.json`, so it always records what the run really used.
"""
from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path
from typing import Any

from utils.run.errors import ToolkitError
from utils.run.outputs import read_json_object

logger = logging.getLogger(__name__)

# Arguments that never change a run's numbers: where files go, how often it logs or saves, how
# big evaluation batches are, where caches live, the device.
RESULT_NEUTRAL_ARGS = frozenset({
    "output_dir", "overwrite_output_dir", "resume_from_checkpoint", "resume", "allow_changed_args", "no_progress",
    "logging_steps", "save_steps", "save_total_limit", "save_every", "features_cache_dir",
    "per_device_eval_batch_size", "device", "log_dir", "out", "results_table", "save_model",
})
# Arguments a resumed run cannot act on: its weights come from the checkpoint.
FIXED_ON_RESUME = frozenset({"model_name", "pretrained_model", "qa_head"})


def add_allow_changed_args(parser: argparse.ArgumentParser) -> None:
    """--allow_changed_args."""
    parser.add_argument("--allow_changed_args", type=str, nargs="+", default=[], metavar="ARG",
                        help="When resuming: arguments (e.g. learning_rate max_steps) that may differ from the "
                             "interrupted run's run_args.json. Any other change of an argument that affects the "
                             "result is an error. The change is recorded in run_args.json.")


def read_saved_args(folder: Path) -> dict[str, Any] | None:
    """The `args` of `folder`/run_args.json, or None where there is none.

    Raises:
        ToolkitError: the file exists but is not a run_args.json.
    """
    path = folder / "run_args.json"
    saved = read_json_object(path, "the resumed run's arguments cannot be checked against it")
    if saved is None:
        return None
    if not isinstance(saved.get("args"), dict):
        raise ToolkitError(f"{path} has no 'args' object: not a run_args.json of this toolkit")
    return saved["args"]


def changed_args(saved: dict[str, Any], current: dict[str, Any], neutral: frozenset[str]) -> dict[str, tuple]:
    """{name: (saved value, current value)} for every non-neutral argument both runs know and
    that differs. JSON has no tuples, so values are compared as JSON would store them."""
    def as_stored(value: Any) -> Any:
        return json.loads(json.dumps(value, default=str))

    return {name: (saved[name], as_stored(value)) for name, value in current.items()
            if name in saved and name not in neutral and as_stored(value) != saved[name]}


def resolve_resume_args(args: argparse.Namespace, saved_folder: Path, *, what: str,
                        neutral: frozenset[str] = RESULT_NEUTRAL_ARGS) -> dict[str, Any]:
    """Check a resumed run's arguments against the interrupted run's and return its resume record
    (`{"from", "changed", "allowed"}`) for run_args.json. Sets FIXED_ON_RESUME arguments of `args`
    back to their saved values (the run really uses those).

    Args:
        saved_folder: the folder whose run_args.json the interrupted run wrote.
        what: what is being resumed, for messages.

    Raises:
        ToolkitError: --allow_changed_args names an unknown argument, or an argument that changes
            the result differs and is not allowed.
    """
    current = vars(args)
    allowed = {name.lstrip("-").replace("-", "_") for name in getattr(args, "allow_changed_args", [])}
    unknown = sorted(allowed - set(current))
    if unknown:
        raise ToolkitError(f"--allow_changed_args names arguments this command does not have: {unknown}")
    saved = read_saved_args(saved_folder)
    if saved is None:
        logger.warning("resuming %s: %s has no run_args.json, so the arguments cannot be checked against the "
                       "interrupted run's", what, saved_folder)
        return {"from": what, "changed": {}, "allowed": sorted(allowed), "checked": False}
    changes = changed_args(saved, current, neutral)
    refused = {name: change for name, change in changes.items() if name not in allowed}
    if refused:
        listed = "; ".join(f"--{name} {old!r} -> {new!r}" for name, (old, new) in sorted(refused.items()))
        raise ToolkitError(f"resuming {what} with arguments that differ from its run_args.json: {listed}. Resume "
                           "with the saved values, or name them in --allow_changed_args to continue with the new "
                           "ones")
    for name in FIXED_ON_RESUME & set(changes):
        logger.warning("--%s %r is ignored on resumption: the weights come from %s (started from %r)", name,
                       changes[name][1], what, changes[name][0])
        setattr(args, name, changes[name][0])
    for name, (old, new) in sorted(changes.items()):
        if name not in FIXED_ON_RESUME:
            logger.info("resuming %s with --%s changed from %r to %r (allowed)", what, name, old, new)
    return {"from": what, "changed": {name: list(change) for name, change in changes.items()},
            "allowed": sorted(allowed), "checked": True}


def total_steps_may_change(resume: dict | None) -> frozenset[str]:
    """The training-shape keys a resumed run may change: its total number of steps, when
    --allow_changed_args names max_steps or the number of epochs (to train on for longer)."""
    changed = set((resume or {}).get("changed", {}))
    return frozenset({"total_steps"}) if changed & {"max_steps", "num_train_epochs"} else frozenset()
