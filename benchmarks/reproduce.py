"""Re-run every CPU benchmark into a temporary folder and compare it with what is recorded.

For each benchmark this prints the recorded ratio (benchmarks/results/<name>.json, marked when the
recorded run itself missed its target), the re-measured one with the [min–max] of its paired
per-repeat ratios where the benchmark records them, its target, and whether every re-measured ratio
meets the target. With `--twice` every benchmark runs twice, back to back, and the table also says
whether the two re-measured ratios agree within `--tolerance` (10% of the larger). The exit status
is 1 when any re-measured ratio misses its target (or, with --twice, when two runs disagree), else
0. Nothing under benchmarks/results/ is written.

    bash benchmarks/reproduce.sh                 # every CPU benchmark once (about 45 minutes)
    bash benchmarks/reproduce.sh --twice --quick # the fast ones, twice
    bash benchmarks/reproduce.sh qa_batching fisher_per_sequence --keep /tmp/repro
    bash benchmarks/reproduce.sh --twice --tabulate /tmp/repro   # the table of a kept folder again
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent


@dataclass(frozen=True)
class Benchmark:
    """How to re-run one recorded CPU benchmark."""

    name: str
    minutes: float               # about, on the 2-core CPU machine
    kind: str                    # speed (a timing ratio), quality (deterministic) or bounds (headroom)
    args: tuple[str, ...] = ()


BENCHMARKS = (
    Benchmark("qa_batching", 1.5, "speed"),
    Benchmark("sst2_batching", 3.0, "speed"),
    Benchmark("pair_batching", 1.0, "speed"),
    Benchmark("reptile_bookkeeping", 2.0, "speed"),
    Benchmark("fisher_per_sequence", 1.5, "speed"),
    Benchmark("training_throughput", 9.0, "speed"),
    Benchmark("reptile_inner_state", 6.0, "quality"),
    Benchmark("meta_baselines", 6.0, "quality"),
    Benchmark("response_times", 3.0, "bounds"),
    Benchmark("task2vec_noise_floor", 15.0, "quality"),
    Benchmark("task2vec_bias_formula", 1.5, "quality"),
    Benchmark("task2vec_head_fit", 3.0, "speed"),
)
QUICK_MINUTES = 3.0


def run_benchmark(benchmark: Benchmark, output: Path) -> tuple[dict | None, float, str]:
    """Run the benchmark's script with --output; its result (None on failure), seconds and stderr tail."""
    command = [sys.executable, str(HERE / f"{benchmark.name}.py"), *benchmark.args, "--output", str(output)]
    started = time.perf_counter()
    done = subprocess.run(command, cwd=REPO, capture_output=True, text=True)
    seconds = time.perf_counter() - started
    if done.returncode != 0 or not output.exists():
        return None, seconds, (done.stderr or done.stdout)[-1500:]
    return json.loads(output.read_text()), seconds, ""


def agree(a: float, b: float, tolerance: float) -> bool:
    """|a − b| at most `tolerance` of the larger of the two."""
    return abs(a - b) <= tolerance * max(abs(a), abs(b))


@dataclass(frozen=True)
class Row:
    """One benchmark's line of the table: what is recorded and what each re-run measured."""

    benchmark: Benchmark
    recorded: dict
    measured: tuple[dict | None, ...]   # one result per run, None where the run failed

    @property
    def target(self) -> float:
        return self.recorded["target_ratio"]

    @property
    def meets(self) -> bool:
        """Every run finished and its ratio is at least the target."""
        return all(m is not None and m["ratio"] >= self.target for m in self.measured)

    def consistent(self, tolerance: float) -> bool | None:
        """Whether two runs' ratios agree within `tolerance`; None with one run or a failed run."""
        if len(self.measured) != 2 or None in self.measured:
            return None
        return agree(self.measured[0]["ratio"], self.measured[1]["ratio"], tolerance)


def shown_ratio(result: dict | None) -> str:
    """A run's ratio, with the [min–max] of its paired per-repeat ratios where it records them."""
    if result is None:
        return "failed"
    spread = result.get("extra", {}).get("paired_ratio")
    return f"{result['ratio']:.3g}" + ("" if spread is None else f" [{spread['min']:.3g}–{spread['max']:.3g}]")


def table(rows: list[Row], runs: int, tolerance: float) -> str:
    """The Markdown table: recorded ratio (and whether it met the target), each run, target, verdicts."""
    lines = ["| benchmark | kind | recorded | " + " | ".join(f"run {i + 1} [paired min–max]" for i in range(runs)) +
             " | target | met in every run |" + (f" runs agree within {tolerance:.0%} |" if runs == 2 else ""),
             "|---|---|---|" + "---|" * runs + "---|---|" + ("---|" if runs == 2 else "")]
    for row in rows:
        recorded = f"{row.recorded['ratio']:.3g}" + ("" if row.recorded["ratio"] >= row.target else " (a miss)")
        agreement = "" if runs == 1 else {None: " n/a |", True: " yes |", False: " **no** |"}[row.consistent(tolerance)]
        lines.append(f"| {row.benchmark.name} | {row.benchmark.kind} | {recorded} | "
                     + " | ".join(shown_ratio(m) for m in row.measured)
                     + f" | {row.target:g} | {'yes' if row.meets else '**no**'} |" + agreement)
    return "\n".join(lines)


def measure(chosen: list[Benchmark], runs: int, folder: Path) -> None:
    """Run every chosen benchmark `runs` times, back to back, into folder/<name>_<run>.json."""
    for benchmark in chosen:
        for run in range(runs):
            result, seconds, error = run_benchmark(benchmark, folder / f"{benchmark.name}_{run + 1}.json")
            if result is None:
                print(f"{benchmark.name} run {run + 1} FAILED after {seconds:.0f} s:\n{error}", flush=True)
            else:
                print(f"{benchmark.name} run {run + 1}: ratio {result['ratio']:.3g} in {seconds:.0f} s", flush=True)


def collect(chosen: list[Benchmark], runs: int, folder: Path) -> list[Row]:
    """Each benchmark's recorded result beside the runs found in `folder` (None where one is missing)."""
    rows = []
    for benchmark in chosen:
        recorded = json.loads((HERE / "results" / f"{benchmark.name}.json").read_text())
        found = [folder / f"{benchmark.name}_{run + 1}.json" for run in range(runs)]
        rows.append(Row(benchmark, recorded, tuple(json.loads(f.read_text()) if f.exists() else None for f in found)))
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("names", nargs="*", help="Benchmarks to run (default: all): " +
                        ", ".join(b.name for b in BENCHMARKS))
    parser.add_argument("--twice", action="store_true", help="Run each benchmark twice and check that the two agree.")
    parser.add_argument("--quick", action="store_true",
                        help=f"Only the benchmarks that take under {QUICK_MINUTES:g} minutes.")
    parser.add_argument("--tolerance", type=float, default=0.10,
                        help="How far two runs' ratios may be apart, as a share of the larger (default 0.10).")
    parser.add_argument("--keep", type=str, default=None,
                        help="Folder for the re-measured result files (default: a temporary folder, removed).")
    parser.add_argument("--tabulate", type=str, default=None, metavar="FOLDER",
                        help="Run nothing: print the table (and exit status) for the <name>_<run>.json files "
                             "an earlier --keep FOLDER left.")
    args = parser.parse_args(argv)
    known = {b.name: b for b in BENCHMARKS}
    unknown = sorted(set(args.names) - set(known))
    if unknown:
        parser.error(f"unknown benchmarks {unknown}; choose from {sorted(known)}")
    if args.tabulate and args.keep:
        parser.error("--tabulate reads an earlier --keep folder and runs nothing; give one of the two")
    chosen = [known[name] for name in args.names] if args.names else list(BENCHMARKS)
    if args.quick:
        chosen = [b for b in chosen if b.minutes < QUICK_MINUTES]
    runs = 2 if args.twice else 1
    with tempfile.TemporaryDirectory() as scratch:
        if args.tabulate:
            folder = Path(args.tabulate)
            if not folder.is_dir():
                parser.error(f"--tabulate {folder}: no such folder; give the one an earlier --keep wrote")
        else:
            folder = Path(args.keep) if args.keep else Path(scratch)
            folder.mkdir(parents=True, exist_ok=True)
            print(f"re-running {len(chosen)} benchmark(s) x {runs}, about {sum(b.minutes for b in chosen) * runs:.0f} "
                  "minutes; nothing else should run on this machine", flush=True)
            measure(chosen, runs, folder)
        rows = collect(chosen, runs, folder)
        print("\n" + table(rows, runs, args.tolerance))
        if args.keep:
            print(f"\nre-measured results kept in {folder}")
    failed = any(not row.meets or row.consistent(args.tolerance) is False for row in rows)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
