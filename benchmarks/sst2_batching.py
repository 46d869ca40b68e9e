"""Benchmark: SST-2 training throughput of the project's batching against padding to --max_length.

Both variants train the same tiny GPT-2 classifier (real GPT-2 tokenizer) on the same real SST-2
training sentences, interleaved, several repeats: length-grouped batches padded to their own
longest sentence (ours) against random batches padded to --max_length (128, run_glue's default).
Reported: sentences per second, their ratio, and MFU against a matrix-multiply peak measured in
the same run. The repeats of `--processes` fresh processes (3) are pooled: on a shared host each
process runs at its own level, and two single-process runs landed 10.6% apart.

    python benchmarks/sst2_batching.py          # writes results/sst2_batching.json
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

import numpy as np
import torch


from recording import paired_ratio_spread, provenance, results_of_fresh_processes, write_result

from qa_batching import interleaved_timings, measured_matmul_peak, rates_and_mfu, run_variant
from transformers import GPT2Config, GPT2ForSequenceClassification

from utils.classification.objective import ClassificationObjective
from utils.data.loading import load_task_data
from utils.training.runtime import resolve_device, resolve_precision
from utils.models.tokenization import load_tokenizer
from utils.training.schedule import build_optimizer

SHARED = Path(__file__).resolve().parent.parent.parent / "shared" / "data"


def classifier_throughput(rows: list[dict], tokenizer, *, max_length: int, batch_size: int, steps: int, repeats: int,
                          device: torch.device, precision, unit: str, rate_unit: str) -> tuple[dict, float | None]:
    """Interleaved timings of a tiny GPT-2 classifier (2x128, the tokenizer's vocabulary) training on
    `rows`: length-grouped batches padded to their own longest row (ours) against random batches
    padded to `max_length`. Returns (rates_and_mfu's summary, the measured matmul peak on a CPU)."""
    lengths = [len(row["input_ids"]) for row in rows]
    config = GPT2Config(vocab_size=len(tokenizer), n_positions=max_length, n_layer=2, n_embd=128, n_head=4,
                        num_labels=2, pad_token_id=tokenizer.pad_token_id)
    model = GPT2ForSequenceClassification(config).to(device)
    optimizer = build_optimizer(model, 1e-4, 0.0, device)
    objective = ClassificationObjective(tokenizer.pad_token_id)
    non_embedding = sum(p.numel() for n, p in model.named_parameters() if not n.startswith(("transformer.wte", "transformer.wpe")))
    peak = measured_matmul_peak(device, torch.float32) if device.type == "cpu" else None
    warm = [list(range(i, i + batch_size)) for i in range(0, 4 * batch_size, batch_size)]
    run_variant(model, optimizer, objective, rows, warm, None, device, precision)
    run_variant(model, optimizer, objective, rows, warm, max_length, device, precision)
    timings = interleaved_timings(model, optimizer, objective, rows, lengths, batch_size=batch_size, steps=steps,
                                  repeats=repeats, pad_to=max_length, device=device, precision=precision, unit=unit)
    return rates_and_mfu(timings, rate_unit, config, non_embedding, peak), peak


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--train_file", default=str(SHARED / "sst2" / "train.tsv"), help="GLUE SST-2 train.tsv.")
    parser.add_argument("--tokenizer", default=str(SHARED / "gpt2_tokenizer"), help="GPT-2 tokenizer folder.")
    parser.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"), help="Where to train.")
    parser.add_argument("--batch_size", type=int, default=32, help="Sentences per batch.")
    parser.add_argument("--steps", type=int, default=20, help="Batches per variant and repeat.")
    parser.add_argument("--repeats", type=int, default=7,
                        help="Interleaved repeats (every one recorded; the median of the paired ratios is reported).")
    parser.add_argument("--processes", type=int, default=3,
                        help="Fresh processes, one after another, each running --repeats interleaved repeats; the "
                             "ratio is the median over all their paired repeats (default 3).")
    parser.add_argument("--max_length", type=int, default=128, help="The baseline pads to this (and sentences are cut).")
    parser.add_argument("--output", default=str(Path(__file__).parent / "results" / "sst2_batching.json"),
                        help="Where to write the result JSON.")
    args = parser.parse_args(argv)
    if args.processes < 1 or args.repeats < 1:
        parser.error(f"--processes and --repeats must be at least 1, got {args.processes} and {args.repeats}")
    if args.processes > 1:
        # Two single-process runs of 7 repeats each landed 10.6% apart, each run's repeats tight
        # around its own level: the spread is between processes, so the repeats are pooled over several.
        return pooled(results_of_fresh_processes(__file__, list(sys.argv[1:] if argv is None else argv),
                                                 args.processes), args.output)
    device = resolve_device(args.device)
    precision = resolve_precision("auto", device)
    torch.manual_seed(0)
    tokenizer = load_tokenizer(args.tokenizer)
    records = load_task_data("sst2", "train", args.train_file).records
    encoded = tokenizer([r["text"] for r in records], add_special_tokens=False, truncation=True,
                        max_length=args.max_length)["input_ids"]
    rows = [{"input_ids": ids or [tokenizer.eos_token_id], "labels": r["label"]} for ids, r in zip(encoded, records)]
    lengths = [len(row["input_ids"]) for row in rows]
    summary, peak = classifier_throughput(rows, tokenizer, max_length=args.max_length, batch_size=args.batch_size,
                                          steps=args.steps, repeats=args.repeats, device=device, precision=precision,
                                          unit="sentences", rate_unit="sequences")
    (ours, mfu_ours), (base, mfu_base) = summary["ours"], summary["baseline"]
    spread = paired_ratio_spread(ours, base)
    result = {
        "name": "sst2_batching",
        "what": f"SST-2 training sentences/s, tiny GPT-2 classifier (2x128, GPT-2 vocabulary), batch {args.batch_size}, "
                f"{precision.name}, real train.tsv sentences",
        "unit": "sentences per second",
        "baseline": {"label": f"random batches padded to --max_length {args.max_length}", "value": statistics.median(base)},
        "ours": {"label": "length-grouped batches, dynamic padding", "value": statistics.median(ours)},
        "ratio": spread["median"],   # the median of the per-repeat ratios (paired: the same sentences)
        "target_ratio": 1.5,
        "extra": {"repeats": {"ours": ours, "baseline": base},
                  "paired_ratio": spread, "ratio_of_medians": statistics.median(ours) / statistics.median(base),
                  "mfu_ours": mfu_ours, "mfu_baseline": mfu_base,
                  "peak_flops": peak, "peak_source": "measured fp32 matmul",
                  "mean_sentence_tokens": float(np.mean(lengths)), "sentences": len(rows)},
        **provenance(),
    }
    write_result(args.output, result)
    print(json.dumps({k: result[k] for k in ("ours", "baseline", "ratio")}, indent=1))
    print(f"paired ratios min {spread['min']:.2f}, median {spread['median']:.2f}, max {spread['max']:.2f}")
    return result


def median_or_none(values: list[float | None]) -> float | None:
    """The median, or None when any value is None (no MFU without a measured peak, as on a GPU)."""
    return None if any(v is None for v in values) else statistics.median(values)


def pooled(processes: list[dict], output: str) -> dict:
    """One result from several processes' results: every repeat pooled, the ratio the median of all
    the paired per-repeat ratios, MFU the median of the processes' MFU, each process's ratio kept."""
    ours = [rate for result in processes for rate in result["extra"]["repeats"]["ours"]]
    base = [rate for result in processes for rate in result["extra"]["repeats"]["baseline"]]
    spread = paired_ratio_spread(ours, base)
    first = processes[0]
    result = {**first,
              "baseline": {**first["baseline"], "value": statistics.median(base)},
              "ours": {**first["ours"], "value": statistics.median(ours)},
              "ratio": spread["median"],
              "extra": {**first["extra"], "repeats": {"ours": ours, "baseline": base}, "paired_ratio": spread,
                        "ratio_of_medians": statistics.median(ours) / statistics.median(base),
                        "mfu_ours": median_or_none([r["extra"]["mfu_ours"] for r in processes]),
                        "mfu_baseline": median_or_none([r["extra"]["mfu_baseline"] for r in processes]),
                        "peak_flops": [r["extra"]["peak_flops"] for r in processes],
                        "processes": len(processes),
                        "per_process_ratio": [r["ratio"] for r in processes]}}
    write_result(output, result)
    print(f"pooled over {len(processes)} processes: ratio {spread['median']:.2f} (paired min {spread['min']:.2f}, "
          f"max {spread['max']:.2f}); per process {[round(r['ratio'], 2) for r in processes]}")
    return result


if __name__ == "__main__":
    main()
