"""Training throughput of length-grouped batches with dynamic padding against random batches padded
to --max_seq_length, on the same SQuAD v1.1 dev windows, model and optimizer, interleaved. Reports
real tokens/s and MFU: useful FLOPs (6·N·T + 12·L·d·T² per sequence of T real tokens) over a peak
measured in the same run (CPU) or the datasheet bf16 peak (GPU).
"""
from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from pathlib import Path

import numpy as np
import torch


from recording import paired_ratio_spread, provenance, write_result

from transformers import GPT2Config, GPT2ForQuestionAnswering

from utils.training.loop import length_grouped_batches
from utils.training.runtime import pad_batch_to_width
from utils.data.loading import load_task_data
from utils.qa.pipeline import SpanObjective
from utils.qa.features import SpanFeatureConfig, span_features
from utils.training.runtime import resolve_device, resolve_precision
from utils.models.loading import load_tokenizer
from utils.training.optim import autocast_context, move_batch
from utils.training.optim import build_optimizer

SHARED = Path(__file__).resolve().parent.parent.parent / "shared" / "data"
MODELS = {"tiny": dict(n_layer=2, n_embd=128, n_head=4), "gpt2-small": dict(n_layer=12, n_embd=768, n_head=12)}
# Dense bf16 tensor-core peaks from the datasheets (FLOP/s).
GPU_PEAKS = {"H100": 989e12, "H200": 989e12, "A100": 312e12}


def measured_matmul_peak(device: torch.device, dtype: torch.dtype, size: int = 2048, repeats: int = 10) -> float:
    """Best FLOP/s of a size×size matrix product (the CPU's practical peak)."""
    a = torch.randn(size, size, device=device, dtype=dtype)
    b = torch.randn(size, size, device=device, dtype=dtype)
    best = 0.0
    for _ in range(repeats):
        if device.type == "cuda":
            torch.cuda.synchronize()   # earlier kernels must not count against this product
        started = time.perf_counter()
        a @ b
        if device.type == "cuda":
            torch.cuda.synchronize()
        best = max(best, 2 * size ** 3 / (time.perf_counter() - started))
    return best


def training_flops(lengths: list[int], config: GPT2Config, non_embedding_params: int) -> float:
    """Useful FLOPs of one training pass (forward + backward) over sequences of these lengths."""
    return float(sum(6 * non_embedding_params * t + 12 * config.n_layer * config.n_embd * t * t for t in lengths))


def run_variant(model, optimizer, objective, rows, batches, pad_to: int | None, device, precision) -> float:
    """Seconds to train on `batches` (one optimizer step each); `pad_to` pads every batch to that width."""
    model.train()
    if device.type == "cuda":
        torch.cuda.synchronize()
    started = time.perf_counter()
    for indices in batches:
        batch = objective.collate([rows[i] for i in indices])
        if pad_to is not None:
            batch = pad_batch_to_width(batch, pad_to, objective.pad_token_id)
        batch = move_batch(batch, device)
        with autocast_context(precision, device):
            loss = objective.loss(model, batch)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    if device.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - started


def interleaved_timings(model, optimizer, objective, rows, lengths: list[int], *, batch_size: int, steps: int,
                        repeats: int, pad_to: int, device, precision, unit: str) -> dict[str, list[dict]]:
    """Time ours (length-grouped, dynamic padding) and the baseline (random batches padded to
    `pad_to`) on the same `steps * batch_size` random rows per repeat, alternating which goes first.

    Returns, per variant, one {"seconds", "sequences", "tokens", "lengths"} per repeat.
    """
    rng = np.random.default_rng(0)
    per_repeat = steps * batch_size
    timings: dict[str, list[dict]] = {"ours": [], "baseline": []}
    for repeat in range(repeats):
        chosen = rng.choice(len(rows), size=per_repeat, replace=False)
        chosen_lengths = [lengths[i] for i in chosen]
        grouped = [[int(chosen[j]) for j in batch] for batch in
                   length_grouped_batches(chosen_lengths, batch_size, seed=repeat, epoch=0)]
        random_batches = [chosen[i:i + batch_size].tolist() for i in range(0, per_repeat, batch_size)]
        for label in (("ours", "baseline") if repeat % 2 == 0 else ("baseline", "ours")):
            batches, padding = (grouped, None) if label == "ours" else (random_batches, pad_to)
            seconds = run_variant(model, optimizer, objective, rows, batches, padding, device, precision)
            timings[label].append({"seconds": seconds, "sequences": per_repeat, "tokens": sum(chosen_lengths),
                                   "lengths": chosen_lengths})
        ours, base = timings["ours"][-1], timings["baseline"][-1]
        key = "tokens" if unit == "tokens" else "sequences"
        print(f"repeat {repeat}: ours {ours[key] / ours['seconds']:.0f} {unit}/s, "
              f"baseline {base[key] / base['seconds']:.0f}", flush=True)
    return timings


def rates_and_mfu(timings: dict[str, list[dict]], key: str, config: GPT2Config, non_embedding_params: int,
                  peak: float | None) -> dict[str, tuple[list[float], float | None]]:
    """Per variant: its rate in every repeat (`key` per second) and its median MFU (None without a peak)."""
    summary = {}
    for variant, runs in timings.items():
        rates = [t[key] / t["seconds"] for t in runs]
        mfu = statistics.median(training_flops(t["lengths"], config, non_embedding_params) / t["seconds"] / peak
                                for t in runs) if peak else None
        summary[variant] = (rates, mfu)
    return summary


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--squad", type=str, default=str(SHARED / "squad_v1.1" / "dev-v1.1.json"), help="SQuAD v1.1 dev JSON.")
    parser.add_argument("--tokenizer", type=str, default=str(SHARED / "gpt2_tokenizer"), help="GPT-2 tokenizer folder.")
    parser.add_argument("--model", choices=sorted(MODELS), default="tiny", help="Model shape (random weights).")
    parser.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"), help="Where to train.")
    parser.add_argument("--precision", default="auto", choices=("auto", "fp32", "bf16"), help="Compute precision.")
    parser.add_argument("--batch_size", type=int, default=16, help="Sequences per batch.")
    parser.add_argument("--steps", type=int, default=12, help="Batches per variant and repeat.")
    parser.add_argument("--repeats", type=int, default=7,
                        help="Interleaved repeats (every one recorded; the median of the paired ratios is reported).")
    parser.add_argument("--max_seq_length", type=int, default=384, help="Window length (and the baseline's padding).")
    parser.add_argument("--pad_to_multiple_of", type=int, default=8, help="Dynamic padding rounds widths up to this.")
    parser.add_argument("--output", type=str, default=str(Path(__file__).parent / "results" / "qa_batching.json"),
                        help="Where to write the result JSON.")
    args = parser.parse_args(argv)
    device = resolve_device(args.device)
    precision = resolve_precision(args.precision, device)
    torch.manual_seed(0)

    tokenizer = load_tokenizer(args.tokenizer)
    records = load_task_data("squad", "validation", args.squad).records
    columns = {key: [r[key] for r in records] for key in ("id", "context", "question", "answers")}
    features = span_features(columns, tokenizer, SpanFeatureConfig(args.max_seq_length, 128, 64), with_labels=True,
                             with_offsets=False)
    rows = [dict(zip(features, values)) for values in zip(*features.values())]
    lengths = [len(row["input_ids"]) for row in rows]
    config = GPT2Config(vocab_size=len(tokenizer), n_positions=1024, **MODELS[args.model],
                        pad_token_id=tokenizer.pad_token_id)
    model = GPT2ForQuestionAnswering(config).to(device)
    optimizer = build_optimizer(model, 1e-4, device=device)
    objective = SpanObjective(tokenizer.pad_token_id, pad_to_multiple_of=args.pad_to_multiple_of)
    non_embedding = sum(p.numel() for n, p in model.named_parameters() if not n.startswith(("transformer.wte", "transformer.wpe")))

    peak = None
    if device.type == "cpu":
        peak = measured_matmul_peak(device, torch.float32)
    else:
        name = torch.cuda.get_device_name(0)
        peak = next((value for key, value in GPU_PEAKS.items() if key in name), None)
    # Warm-up (allocator, kernels): one batch of every padded width either variant will see, as a
    # long training run would have seen them all after its first few hundred steps.
    by_width: dict[int, list[int]] = {}
    for index, length in enumerate(lengths):
        by_width.setdefault(-(-length // args.pad_to_multiple_of), []).append(index)
    warm = [indices[:args.batch_size] for indices in by_width.values() if len(indices) >= args.batch_size]
    run_variant(model, optimizer, objective, rows, warm, None, device, precision)
    run_variant(model, optimizer, objective, rows, warm[:2], args.max_seq_length, device, precision)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    timings = interleaved_timings(model, optimizer, objective, rows, lengths, batch_size=args.batch_size,
                                  steps=args.steps, repeats=args.repeats, pad_to=args.max_seq_length, device=device,
                                  precision=precision, unit="tokens")
    summary = rates_and_mfu(timings, "tokens", config, non_embedding, peak)
    (ours_rates, ours_mfu), (base_rates, base_mfu) = summary["ours"], summary["baseline"]
    ours, base = statistics.median(ours_rates), statistics.median(base_rates)
    spread = paired_ratio_spread(ours_rates, base_rates)
    result = {
        "name": "qa_batching",
        "what": f"training real (non-pad) tokens/s on SQuAD v1.1 dev windows ({args.max_seq_length}/128, GPT-2 "
                f"tokenizer), {args.model} GPT-2 QA model, batch {args.batch_size}, {precision.name}",
        "unit": "real tokens per second",
        "baseline": {"label": f"random batches padded to {args.max_seq_length}", "value": base},
        "ours": {"label": "length-grouped batches, dynamic padding", "value": ours},
        # The median of the per-repeat ratios (each repeat's two sides ran back to back on the same windows).
        "ratio": spread["median"],
        "target_ratio": 1.5,
        "extra": {
            "device": torch.cuda.get_device_name(0) if device.type == "cuda" else platform.processor() or "cpu",
            "repeats": {"ours": ours_rates, "baseline": base_rates},
            "paired_ratio": spread, "ratio_of_medians": ours / base,
            "mfu_ours": ours_mfu,
            "mfu_baseline": base_mfu,
            "peak_flops": peak, "peak_source": "measured fp32 matmul" if device.type == "cpu" else "datasheet bf16 dense",
            "mean_window_tokens": float(np.mean(lengths)), "windows": len(rows),
            "model_parameters": sum(p.numel() for p in model.parameters()), "non_embedding_parameters": non_embedding,
            "peak_memory_bytes": torch.cuda.max_memory_allocated() if device.type == "cuda" else None,
        },
        **provenance(),
    }
    write_result(args.output, result)
    print(json.dumps({k: result[k] for k in ("ours", "baseline", "ratio")}, indent=1))
    print(f"MFU ours {result['extra']['mfu_ours']}, baseline {result['extra']['mfu_baseline']}")
    print(f"paired ratios min {spread['min']:.2f}, median {spread['median']:.2f}, max {spread['max']:.2f}")
    return result


if __name__ == "__main__":
    main()
