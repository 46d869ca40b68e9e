"""Benchmark: how quickly the toolkit answers where the tests once bounded the wall-clock time.

The tests check behaviour only (a refusal, an error message, a learning signal); the times they
used to assert are measured here, each against the bound its test used:

- `hub_unreachable`: `load_task_data` of a Hub-only task with an unreachable Hub (the probe answers
  False at once) raises HubUnavailableError naming the local-file flags (tests/test_hub_offline.py, < 2 s).
- `data_cli_hub_offline`: `python -m utils.data --task squad` with HF_HUB_OFFLINE=1 and an empty
  cache exits with a one-line error naming `--file`, interpreter and imports included
  (tests/test_data_cli.py, < 60 s).
- `busy_folder_refusal`: a second run_intermediate_source_GPT2.py on the folder of a running one is
  refused, interpreter and imports included (tests/test_reliability.py, < 2 s).
- `qa_script_span`, `qa_script_generative`: run_intermediate_source_GPT2.py learning a synthetic QA
  task (600 / 900 steps, tiny GPT-2 2×64), main() in-process as the test calls it
  (tests/test_qa_script.py, < 120 s each).
- `target_script_sst2`: run_target_task_GPT2_sst2_multiple.py on 8,000 real SST-2 sentences, 2 epochs
  (tests/test_target_script.py; measured only, that test never bounded it; needs ../shared/data).

The cheap items are repeated (median reported), the script runs are timed once. `ratio` is the
headroom of the tightest bounded item, bound / measured (at least 1 when every item passes).

    python benchmarks/response_times.py                       # ~5 minutes; writes results/response_times.json
    python benchmarks/response_times.py --items hub_unreachable busy_folder_refusal --output /tmp/rt.json
"""
from __future__ import annotations

import argparse
import contextlib
import importlib.util
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

# Like the test suite: the Hugging Face libraries run offline on an empty cache, so nothing here can
# reach the network (set before anything imports them).
for _variable in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE"):
    os.environ[_variable] = "1"
os.environ["HF_HOME"] = tempfile.mkdtemp(prefix="hf-home-")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from recording import provenance, write_result  # noqa: E402

from utils.data.loading import load_task_data  # noqa: E402
from utils.data.samples import sample_file  # noqa: E402
from utils.data.synthetic_qa import write_learnable_task  # noqa: E402
from utils.models.hub import OFFLINE_VARIABLES  # noqa: E402
from utils.models.tiny_model import build_tiny_model  # noqa: E402
from utils.run.errors import HubUnavailableError  # noqa: E402

REPO_ROOT = Path(__file__).resolve().parent.parent
SHARED_DATA = Path(os.environ.get("SHARED_DATA_DIR", REPO_ROOT.parent / "shared" / "data"))
# The arguments of the tests the bounds come from (tests/test_reliability.py, tests/test_qa_script.py).
SQUAD = ["--dataset_name", "squad", "--train_file", str(sample_file("squad", "train")), "--validation_file",
         str(sample_file("squad", "validation")), "--max_seq_length", "96", "--doc_stride", "32",
         "--max_question_length", "16", "--max_answer_length", "8", "--features_cache_dir", "none",
         "--per_device_train_batch_size", "4", "--learning_rate", "1e-3", "--seed", "1"]
SHORT = ["--max_seq_length", "96", "--doc_stride", "32", "--max_question_length", "16", "--max_answer_length", "8",
         "--features_cache_dir", "none", "--logging_steps", "50", "--warmup_ratio", "0.1", "--weight_decay", "0",
         "--no_progress"]


def load_script(name: str):
    """A top-level script of the repository as a module (they are not part of the installed package)."""
    spec = importlib.util.spec_from_file_location(name, REPO_ROOT / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def item(what: str, seconds: list[float], bound: float | None, checks: dict[str, bool], **extra) -> dict:
    """One measured item: median seconds against its bound, and whether the behaviour was the tested one."""
    median = statistics.median(seconds)
    return {"what": what, "seconds": median, "repeats": seconds, "bound_seconds": bound,
            "within_bound": None if bound is None else median < bound,
            "headroom": None if bound is None else bound / median,
            "behaviour_as_tested": all(checks.values()), "checks": checks, **extra}


@contextlib.contextmanager
def hub_not_offline() -> Iterator[None]:
    """The offline variables unset for the duration (as the test's monkeypatch does), then restored."""
    saved = {name: os.environ.pop(name) for name in OFFLINE_VARIABLES if name in os.environ}
    try:
        yield
    finally:
        os.environ.update(saved)


def hub_unreachable(repeats: int, workdir: Path) -> dict:
    seconds, messages = [], []
    with hub_not_offline():
        for _ in range(repeats):
            started = time.perf_counter()
            try:
                load_task_data("duorc-s", "train", probe=lambda: False)
                messages.append("")
            except HubUnavailableError as err:
                messages.append(str(err))
            seconds.append(time.perf_counter() - started)
    checks = {"raised_naming_the_flags": all("--train_file / --validation_file" in m and "ibm/duorc (SelfRC)" in m
                                             for m in messages)}
    return item("load_task_data('duorc-s') with an unreachable Hub (probe answers False): HubUnavailableError",
                seconds, 2.0, checks)


def data_cli_hub_offline(repeats: int, workdir: Path) -> dict:
    seconds, checks = [], {"exit_status_2": True, "one_error_line_naming_the_hub_name_and_--file": True}
    for _ in range(repeats):
        started = time.perf_counter()
        done = subprocess.run([sys.executable, "-m", "utils.data", "--task", "squad"], cwd=REPO_ROOT,
                              capture_output=True, text=True, timeout=300)
        seconds.append(time.perf_counter() - started)
        lines = [line for line in done.stderr.splitlines() if line.startswith("error:")]
        checks["exit_status_2"] &= done.returncode == 2
        checks["one_error_line_naming_the_hub_name_and_--file"] &= \
            len(lines) == 1 and "rajpurkar/squad" in lines[0] and "--file" in lines[0]
    return item("`python -m utils.data --task squad` with HF_HUB_OFFLINE=1 and an empty cache: one-line error, "
                "interpreter and imports included", seconds, 60.0, checks)


def tiny_checkpoint(workdir: Path) -> Path:
    """The test suite's tiny GPT-2 (tests/conftest.py)."""
    return build_tiny_model(workdir / "tiny_gpt2", n_layer=2, n_embd=32, n_head=2, n_positions=128,
                            vocab_size=512, dropout=0.0, seed=0)


def busy_folder_refusal(repeats: int, workdir: Path) -> dict:
    out = workdir / "busy"
    command = [sys.executable, "run_intermediate_source_GPT2.py", "--model_name", str(tiny_checkpoint(workdir)),
               *SQUAD, "--output_dir", str(out), "--logging_steps", "1", "--no_progress"]
    first = subprocess.Popen([*command, "--max_steps", "3000", "--save_steps", "1000"], cwd=REPO_ROOT,
                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 120
        while not (out / "run_args.json").exists() and first.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        seconds, checks = [], {"first_run_started": first.poll() is None, "refused_with_status_2": True,
                               "message_names_the_running_pid": True, "first_run_still_running": True}
        for _ in range(repeats):
            started = time.perf_counter()
            second = subprocess.run([*command, "--max_steps", "5", "--overwrite_output_dir", "--seed", "2"],
                                    cwd=REPO_ROOT, capture_output=True, text=True, timeout=120)
            seconds.append(time.perf_counter() - started)
            checks["refused_with_status_2"] &= second.returncode == 2 and "Traceback" not in second.stderr
            checks["message_names_the_running_pid"] &= f"in use by another run: pid {first.pid}" in second.stderr
            checks["first_run_still_running"] &= first.poll() is None
    finally:
        first.terminate()  # the first run only had to hold the folder
        first.communicate(timeout=60)
    return item("a second run_intermediate_source_GPT2.py on the folder of a running one is refused, "
                "interpreter and imports included", seconds, 2.0, checks)


def synthetic_task(workdir: Path) -> tuple[Path, Path]:
    """Synthetic QA files and a tiny model whose tokenizer was trained on that text (tests/test_qa_script.py)."""
    folder = workdir / "synthetic"
    folder.mkdir(parents=True, exist_ok=True)
    model = write_learnable_task(folder)
    return folder, model


def qa_script(objective: str, steps: int, learning_rate: str) -> Callable[[int, Path], dict]:
    def measure(repeats: int, workdir: Path) -> dict:
        folder = workdir / "synthetic"
        if not (folder / "tiny").is_dir():
            synthetic_task(workdir)
        script = load_script("run_intermediate_source_GPT2")
        started = time.perf_counter()
        results = script.main(["--dataset_name", "squad", "--model_name", str(folder / "tiny"), "--objective", objective,
                               "--train_file", str(folder / "train.jsonl"), "--validation_file", str(folder / "dev.jsonl"),
                               "--output_dir", str(workdir / objective), "--max_steps", str(steps),
                               "--learning_rate", learning_rate, "--per_device_train_batch_size", "32", "--seed", "0",
                               *SHORT])
        seconds = time.perf_counter() - started
        return item(f"run_intermediate_source_GPT2.py main(), {objective} objective, {steps} steps on a synthetic QA "
                    "task, tiny GPT-2 (2x64), in-process", [seconds], 120.0,
                    {"eval_f1_at_least_90": results["eval_f1"] >= 90.0},
                    eval_f1=results["eval_f1"], train_runtime=results["train_runtime"])
    return measure


def target_script_sst2(repeats: int, workdir: Path) -> dict | None:
    if not (SHARED_DATA / "sst2" / "train.tsv").is_file():
        return None
    tiny = build_tiny_model(workdir / "tiny_real_vocab", n_layer=2, n_embd=64, n_head=4, n_positions=128,
                            tokenizer_path=str(SHARED_DATA / "gpt2_tokenizer"), seed=0)
    target = load_script("run_target_task_GPT2_sst2_multiple")
    started = time.perf_counter()
    summary = target.main(["--pretrained_model", str(tiny), "--train_file", str(SHARED_DATA / "sst2" / "train.tsv"),
                           "--validation_file", str(SHARED_DATA / "sst2" / "dev.tsv"), "--max_train_samples", "8000",
                           "--num_runs", "1", "--epochs", "2", "--batch_size", "32", "--learning_rate", "1e-3",
                           "--output_dir", str(workdir / "sst2"), "--features_cache_dir", "none", "--no_progress"])
    seconds = time.perf_counter() - started
    accuracy = summary["eval_accuracy"]["mean"]
    return item("run_target_task_GPT2_sst2_multiple.py main(), 8,000 real SST-2 sentences, 2 epochs, tiny GPT-2 "
                "(2x64, GPT-2 vocabulary), in-process; never bounded by its test", [seconds], None,
                {"dev_accuracy_at_least_0.70": accuracy >= 0.70}, eval_accuracy=accuracy)


ITEMS: dict[str, tuple[Callable[[int, Path], dict | None], int]] = {  # name -> (measure, repeats)
    "hub_unreachable": (hub_unreachable, 5),
    "data_cli_hub_offline": (data_cli_hub_offline, 3),
    "busy_folder_refusal": (busy_folder_refusal, 3),
    "qa_script_span": (qa_script("span", 600, "3e-3"), 1),
    "qa_script_generative": (qa_script("generative", 900, "5e-3"), 1),
    "target_script_sst2": (target_script_sst2, 1),
}


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--items", nargs="+", choices=list(ITEMS), default=list(ITEMS),
                        help="Which items to measure (default: all).")
    parser.add_argument("--output", type=str, default=str(Path(__file__).parent / "results" / "response_times.json"),
                        help="Where to write the result.")
    args = parser.parse_args(argv)
    measured, skipped = {}, {}
    with tempfile.TemporaryDirectory(prefix="response-times-") as workdir:
        for name in args.items:
            measure, repeats = ITEMS[name]
            entry = measure(repeats, Path(workdir))
            if entry is None:
                skipped[name] = f"needs the real data in {SHARED_DATA}"
                print(f"{name}: skipped ({skipped[name]})", flush=True)
                continue
            measured[name] = entry
            bound = "" if entry["bound_seconds"] is None else f" (bound {entry['bound_seconds']:g} s)"
            print(f"{name}: {entry['seconds']:.2f} s{bound}, behaviour as tested: {entry['behaviour_as_tested']}",
                  flush=True)
    bounded = {name: entry for name, entry in measured.items() if entry["bound_seconds"] is not None}
    tightest = min(bounded, key=lambda name: bounded[name]["headroom"])
    result = {
        "name": "response_times",
        "what": "wall-clock times the tests used to bound (Hub refusal, data command offline, busy-folder refusal, "
                "QA script on a synthetic task, SST-2 target script), each against its test's bound; the ratio is "
                f"the headroom of the tightest item ({tightest})",
        "unit": "seconds (lower is better; ratio = bound / measured, at least 1 when every item is within its bound)",
        "baseline": {"label": f"{tightest}: the bound its test asserted", "value": bounded[tightest]["bound_seconds"]},
        "ours": {"label": f"{tightest}: measured (median of {len(bounded[tightest]['repeats'])})",
                 "value": bounded[tightest]["seconds"]},
        "ratio": bounded[tightest]["headroom"],
        "target_ratio": 1.0,
        "extra": {"all_within_bounds": all(entry["within_bound"] for entry in bounded.values()),
                  "all_behaviour_as_tested": all(entry["behaviour_as_tested"] for entry in measured.values()),
                  "items": measured, "skipped": skipped},
        **provenance(),
    }
    write_result(args.output, result)
    print(json.dumps({k: result[k] for k in ("ours", "baseline", "ratio")}, indent=1))
    print(f"all within bounds: {result['extra']['all_within_bounds']}; "
          f"behaviour as tested: {result['extra']['all_behaviour_as_tested']}")
    return result


if __name__ == "__main__":
    main()
