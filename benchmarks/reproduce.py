"""Re-run every CPU benchmark into a temporary folder and compare it with what is recorded.

For each benchmark this prints the recorded ratio (benchmarks/results/<name>.json), the re-measured
one, its target, and whether the re-measured ratio still meets the target. With `--twice` every
benchmark runs twice, back to back, and the table also says whether the two re-measured ratios
agree within `--tolerance` (10%). The exit status is 1 when any re-measured ratio misses its
target (or, with --twice, when two runs disagree), else 0. Nothing under benchmarks/results/ is
written.

    bash benchmarks/reproduce.sh                 # every CPU benchmark once (about 45 minutes)
    bash benchmarks/reproduce.sh --twice --quick # the fast ones, twice
    bash benchmarks/reproduce.sh qa_batching fisher_per_sequence
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
    Benchmark("sst2_batching", 1.0, "speed"),
    Benchmark("pair_batching", 1.0, "speed"),
    Benchmark("reptile_bookkeeping", 2.0, "speed"),
    Benchmark("fisher_per_sequence", 1.5, "speed"),
    Benchmark("training_throughput", 9.0, "speed"),
    Benchmark("reptile_inner_state", 2.0, "quality"),
    Benchmark("meta_baselines", 6.0, "quality"),
    Benchmark("response_times", 3.0, "bounds"),
    Benchmark("task2vec_noise_floor", 15.0, "quality"),
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
    args = parser.parse_args(argv)
    known = {b.name: b for b in BENCHMARKS}
    unknown = sorted(set(args.names) - set(known))
    if unknown:
        parser.error(f"unknown benchmarks {unknown}; choose from {sorted(known)}")
    chosen = [known[name] for name in args.names] if args.names else list(BENCHMARKS)
    if args.quick:
        chosen = [b for b in chosen if b.minutes < QUICK_MINUTES]
    runs = 2 if args.twice else 1
    print(f"re-running {len(chosen)} benchmark(s) x {runs}, about "
          f"{sum(b.minutes for b in chosen) * runs:.0f} minutes; nothing else should run on this machine", flush=True)
    with tempfile.TemporaryDirectory() as scratch:
        folder = Path(args.keep) if args.keep else Path(scratch)
        folder.mkdir(parents=True, exist_ok=True)
        rows, failed = [], False
        for benchmark in chosen:
            recorded = json.loads((HERE / "results" / f"{benchmark.name}.json").read_text())
            measured = []
            for run in range(runs):
                result, seconds, error = run_benchmark(benchmark, folder / f"{benchmark.name}_{run + 1}.json")
                if result is None:
                    print(f"{benchmark.name} run {run + 1} FAILED after {seconds:.0f} s:\n{error}", flush=True)
                    measured.append(None)
                    continue
                measured.append(result["ratio"])
                print(f"{benchmark.name} run {run + 1}: ratio {result['ratio']:.3g} in {seconds:.0f} s", flush=True)
            target = recorded["target_ratio"]
            meets = [m is not None and m >= target for m in measured]
            consistent = None if runs == 1 or None in measured else agree(measured[0], measured[1], args.tolerance)
            failed |= not all(meets) or consistent is False
            rows.append((benchmark, recorded["ratio"], measured, target, meets, consistent))
        print()
        print("| benchmark | kind | recorded | " + " | ".join(f"run {i + 1}" for i in range(runs)) +
              " | target | meets | " + ("runs agree within {:.0%} |".format(args.tolerance) if runs == 2 else ""))
        print("|---|---|---|" + "---|" * runs + "---|---|" + ("---|" if runs == 2 else ""))
        for benchmark, recorded_ratio, measured, target, meets, consistent in rows:
            shown = " | ".join("failed" if m is None else f"{m:.3g}" for m in measured)
            verdict = "yes" if all(meets) else "**no**"
            agreement = "" if runs == 1 else (" n/a |" if consistent is None else
                                               (" yes |" if consistent else " **no** |"))
            print(f"| {benchmark.name} | {benchmark.kind} | {recorded_ratio:.3g} | {shown} | {target:g} | {verdict} |"
                  + agreement)
        if args.keep:
            print(f"\nre-measured results kept in {folder}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
