"""Training throughput of each speed option of the loop against `before` (for-loop AdamW, SDPA, fixed
batches, eager), through the project's own loop on the same real rows and initial weights: QA on
SQuAD v1.1 dev windows (batch 12), SST-2 sentences (batch 32). Variants: fused_adamw,
eager_attention, token_budget (batch × max length), compile, default (what `auto` gives) and fast
(default + token budget, + compilation with --fast_compile). A warm-up call each, then interleaved
repeats in a rotated order; real tokens/s, paired ratios, MFU, peak memory (CUDA), compile time.
"""
from __future__ import annotations

import argparse
import platform
import statistics
import tempfile
import time
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch

from qa_batching import measured_matmul_peak
from recording import provenance, write_result

from transformers import GPT2Config, GPT2ForQuestionAnswering, GPT2ForSequenceClassification

from utils.classification.objective import ClassificationObjective
from utils.data.loading import load_task_data
from utils.models.loading import load_tokenizer
from utils.qa.features import SpanFeatureConfig, span_features
from utils.training.loop import LoopSettings
from utils.training.runtime import RunContext
from utils.training.loop import make_compiler
from utils.training.runtime import RunContext
from utils.training.loop import train
from utils.qa.pipeline import SpanObjective
from utils.training.runtime import resolve_attention, resolve_device, resolve_precision

SHARED = Path(__file__).resolve().parent.parent.parent / "shared" / "data"
SHAPES = {"tiny": dict(n_layer=2, n_embd=128, n_head=4), "6x256": dict(n_layer=6, n_embd=256, n_head=4),
          "gpt2-small": dict(n_layer=12, n_embd=768, n_head=12)}
TASKS = {"qa": dict(batch_size=12, max_length=384), "sst2": dict(batch_size=32, max_length=128)}
TARGET_RATIO = 1.5


@dataclass(frozen=True)
class Variant:
    """One configuration of the loop: its settings' speed fields and the attention implementation."""

    name: str
    optimizer_implementation: str
    attention: str
    token_budget: bool = False
    torch_compile: bool = False


def variants(device: torch.device, fast_compile: bool) -> list[Variant]:
    """`before`, one variant per option, today's defaults, and the fast path."""
    default_attention = resolve_attention("auto") or "sdpa"   # transformers' choice for GPT-2
    return [Variant("before", "for-loop", "sdpa"),
             Variant("fused_adamw", "fused", "sdpa"),
             Variant("eager_attention", "for-loop", "eager"),
             Variant("token_budget", "for-loop", "sdpa", token_budget=True),
             Variant("compile", "for-loop", "sdpa", torch_compile=True),
             Variant("default", "auto", default_attention),
             Variant("fast", "auto", default_attention, token_budget=True, torch_compile=fast_compile)]


def qa_rows(tokenizer, squad: str, max_length: int) -> list[dict]:
    """Span features of the SQuAD v1.1 dev windows (max_length / stride 128 / question 64)."""
    records = load_task_data("squad", "validation", squad).records
    columns = {key: [r[key] for r in records] for key in ("id", "context", "question", "answers")}
    features = span_features(columns, tokenizer, SpanFeatureConfig(max_length, 128, 64), with_labels=True,
                             with_offsets=False)
    return [dict(zip(features, values)) for values in zip(*features.values())]


def sst2_rows(tokenizer, train_file: str, max_length: int) -> list[dict]:
    """Real SST-2 training sentences, tokenised and cut to max_length."""
    records = load_task_data("sst2", "train", train_file).records
    encoded = tokenizer([r["text"] for r in records], add_special_tokens=False, truncation=True,
                        max_length=max_length)["input_ids"]
    return [{"input_ids": ids or [tokenizer.eos_token_id], "labels": r["label"]} for ids, r in zip(encoded, records)]


def build_model(task: str, shape: str, tokenizer, attention: str, device: torch.device) -> torch.nn.Module:
    """A GPT-2 of `shape` with the task's head, initial weights from seed 0, on `device`."""
    torch.manual_seed(0)
    config = GPT2Config(vocab_size=len(tokenizer), n_positions=1024, pad_token_id=tokenizer.pad_token_id,
                        num_labels=2, **SHAPES[shape])
    config._attn_implementation = attention
    cls = GPT2ForQuestionAnswering if task == "qa" else GPT2ForSequenceClassification
    return cls(config).to(device)


def non_embedding_parameters(model: torch.nn.Module) -> int:
    """Parameters outside nn.Embedding layers (N in 6·N·T)."""
    embedded = {id(p) for m in model.modules() if isinstance(m, torch.nn.Embedding) for p in m.parameters()}
    return sum(p.numel() for p in model.parameters() if id(p) not in embedded)


def useful_flops(lengths: list[int], config: GPT2Config, non_embedding: int) -> float:
    """Training FLOPs (forward + backward) of sequences with these real lengths, padding excluded."""
    return float(sum(6 * non_embedding * t + 12 * config.n_layer * config.n_embd * t * t for t in lengths))


def run_once(model, rows, lengths, objective, settings: LoopSettings, ctx: RunContext) -> dict:
    """One call of the loop (`settings.max_steps` steps); its tokens, sequences, seconds and
    compile time."""
    if ctx.device.type == "cuda":
        torch.cuda.synchronize()
    started = time.perf_counter()
    metrics = train(model, rows, lengths, objective, settings, ctx, save_model=lambda m, f: None)
    if ctx.device.type == "cuda":
        torch.cuda.synchronize()
    seconds = time.perf_counter() - started
    return {"seconds": seconds, "tokens": metrics["train_tokens"], "passes": metrics["train_passes"],
            "steps": metrics["train_steps"], "compile_seconds": metrics.get("train_compile_seconds", 0.0),
            "compiled_graphs": metrics.get("train_compiled_graphs", 0)}


def measure_shape(task: str, shape: str, rows: list[dict], tokenizer, chosen: list[Variant], *, steps: int,
                  repeats: int, device: torch.device, precision, peak: float) -> dict:
    """Interleaved timings of every variant on one task and model shape."""
    batch_size, max_length = TASKS[task]["batch_size"], TASKS[task]["max_length"]
    # The same rows for every variant and repeat: enough for `steps` fixed batches of the default
    # size (token-budget batches hold more of them, so they take fewer steps over the same rows).
    rng = np.random.default_rng(0)
    subset = [rows[i] for i in rng.choice(len(rows), size=steps * batch_size, replace=False)]
    lengths = [len(row["input_ids"]) for row in subset]
    objective = SpanObjective(tokenizer.pad_token_id) if task == "qa" else ClassificationObjective(tokenizer.pad_token_id)
    base = LoopSettings(learning_rate=1e-5, num_train_epochs=1, per_device_train_batch_size=batch_size,
                        logging_steps=10 ** 6, seed=0, max_grad_norm=1.0)
    runs: dict[str, dict] = {}
    with tempfile.TemporaryDirectory() as scratch:
        for variant in chosen:
            settings = replace(base, optimizer_implementation=variant.optimizer_implementation,
                               max_tokens_per_batch=batch_size * max_length if variant.token_budget else None,
                               torch_compile=variant.torch_compile)
            ctx = RunContext(device, precision, output_dir=Path(scratch), compiler=make_compiler(settings))
            model = build_model(task, shape, tokenizer, variant.attention, device)
            if device.type == "cuda":
                torch.cuda.reset_peak_memory_stats()
            warm = run_once(model, subset, lengths, objective, settings, ctx)
            runs[variant.name] = {"model": model, "settings": settings, "ctx": ctx, "warm_up": warm, "repeats": [],
                                  "peak_memory_bytes": torch.cuda.max_memory_allocated() if device.type == "cuda" else None}
            print(f"  {task} {shape} {variant.name}: warm-up {warm['seconds']:.1f} s "
                  f"({warm['compiled_graphs']} graphs compiled)", flush=True)
        names = [v.name for v in chosen]
        for repeat in range(repeats):
            order = names[repeat % len(names):] + names[:repeat % len(names)]
            for name in order:
                run = runs[name]
                run["repeats"].append(run_once(run["model"], subset, lengths, objective, run["settings"], run["ctx"]))
            print(f"  repeat {repeat}: " + ", ".join(
                f"{n} {runs[n]['repeats'][-1]['tokens'] / runs[n]['repeats'][-1]['seconds']:.0f}" for n in names),
                flush=True)
    config = runs[names[0]]["model"].config
    non_embedding = non_embedding_parameters(runs[names[0]]["model"])
    flops = useful_flops(lengths, config, non_embedding)   # one pass over the subset, whatever the batching
    before = [r["tokens"] / r["seconds"] for r in runs["before"]["repeats"]]
    summary = {}
    for name in names:
        repeats_done = runs[name]["repeats"]
        rates = [r["tokens"] / r["seconds"] for r in repeats_done]
        ratios = [rate / base_rate for rate, base_rate in zip(rates, before)]
        summary[name] = {
            "tokens_per_second": rates, "median_tokens_per_second": statistics.median(rates),
            "ratio_to_before": {"min": min(ratios), "median": statistics.median(ratios), "max": max(ratios),
                                "per_repeat": ratios},
            "mfu": statistics.median(flops / r["seconds"] / peak for r in repeats_done),
            "sequences_per_step": len(subset) / statistics.median(r["steps"] for r in repeats_done),
            "steps": repeats_done[0]["steps"],
            "warm_up_seconds": runs[name]["warm_up"]["seconds"],
            "compile_seconds": runs[name]["warm_up"]["compile_seconds"],
            "compiled_graphs": runs[name]["warm_up"]["compiled_graphs"],
            "peak_memory_bytes": runs[name]["peak_memory_bytes"],
        }
    return {"task": task, "shape": shape, "batch_size": batch_size, "max_length": max_length,
            "rows": len(subset), "mean_real_tokens": float(np.mean(lengths)), "non_embedding_parameters": non_embedding,
            "variants": summary}


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--squad", default=str(SHARED / "squad_v1.1" / "dev-v1.1.json"), help="SQuAD v1.1 dev JSON.")
    parser.add_argument("--sst2", default=str(SHARED / "sst2" / "train.tsv"), help="GLUE SST-2 train.tsv.")
    parser.add_argument("--tokenizer", default=str(SHARED / "gpt2_tokenizer"), help="GPT-2 tokenizer folder.")
    parser.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"), help="Where to train.")
    parser.add_argument("--precision", default="auto", choices=("auto", "fp32", "bf16"),
                        help="Compute precision (auto: bf16 on GPU, fp32 on CPU).")
    parser.add_argument("--runs", nargs="+", default=None, metavar="TASK:SHAPE",
                        help="Which (task, shape) pairs: tasks qa, sst2; shapes " + ", ".join(SHAPES) +
                             ". Default on CPU: qa:tiny qa:6x256 sst2:tiny; on GPU: qa:gpt2-small sst2:gpt2-small.")
    parser.add_argument("--fast_compile", action="store_true",
                        help="Include --torch_compile in the fast path (where it measured faster: not on CPU).")
    parser.add_argument("--steps", type=int, default=8, help="Fixed-size batches of rows per repeat.")
    parser.add_argument("--repeats", type=int, default=7, help="Interleaved repeats (all recorded; medians reported).")
    parser.add_argument("--output", default=str(Path(__file__).parent / "results" / "training_throughput.json"),
                        help="Where to write the result JSON.")
    args = parser.parse_args(argv)
    device = resolve_device(args.device)
    precision = resolve_precision(args.precision, device)
    dtype = precision.autocast_dtype or torch.float32
    # The best matrix product in the run's precision: 2,048² on a CPU, 8,192² on a GPU (big enough to reach its peak).
    peak = measured_matmul_peak(device, dtype, size=2048 if device.type == "cpu" else 8192)
    tokenizer = load_tokenizer(args.tokenizer)
    chosen = variants(device, args.fast_compile)
    pairs = args.runs or (["qa:tiny", "qa:6x256", "sst2:tiny"] if device.type == "cpu"
                          else ["qa:gpt2-small", "sst2:gpt2-small"])
    rows_by_task: dict[str, list[dict]] = {}
    measured = []
    for pair in pairs:
        task, _, shape = pair.partition(":")
        if task not in TASKS or shape not in SHAPES:
            parser.error(f"--runs {pair}: expected TASK:SHAPE with TASK in {sorted(TASKS)} and SHAPE in {sorted(SHAPES)}")
        if task not in rows_by_task:
            rows_by_task[task] = (qa_rows(tokenizer, args.squad, TASKS[task]["max_length"]) if task == "qa"
                                  else sst2_rows(tokenizer, args.sst2, TASKS[task]["max_length"]))
        print(f"{task} on {shape}:", flush=True)
        # 6x256's buckets take minutes to compile on a 2-core CPU: measured without the compile variant there.
        here = [v for v in chosen if not (device.type == "cpu" and shape == "6x256" and v.torch_compile)]
        measured.append(measure_shape(task, shape, rows_by_task[task], tokenizer, here, steps=args.steps,
                                      repeats=args.repeats, device=device, precision=precision, peak=peak))
    qa_default = [m["variants"]["default"]["ratio_to_before"]["median"] for m in measured
                  if m["task"] == "qa" and "default" in m["variants"]]
    result = {
        "name": "training_throughput",
        "what": "training real (non-pad) tokens/s through the project's loop, each speed option on and off, "
                f"interleaved, {precision.name}; QA on SQuAD v1.1 dev windows, classification on SST-2 train",
        "unit": "real tokens per second",
        "baseline": {"label": "before: for-loop AdamW, SDPA, fixed batches, eager",
                     "value": measured[0]["variants"]["before"]["median_tokens_per_second"]},
        "ours": {"label": "default: what a user who sets nothing gets now (fused AdamW, SDPA, fixed batches, eager)",
                 "value": measured[0]["variants"].get("default", {}).get("median_tokens_per_second")},
        # The smallest QA ratio over the measured shapes (the acceptance is on every shape); every
        # variant's ratios, with their spread, are under extra.runs.
        "ratio": min(qa_default) if qa_default else None,
        "target_ratio": TARGET_RATIO,
        "extra": {"device": torch.cuda.get_device_name(0) if device.type == "cuda" else platform.processor() or "cpu",
                  "peak_flops": peak, "peak_source": f"measured {dtype} matmul", "steps": args.steps,
                  "peak_memory": "torch.cuda.max_memory_allocated per variant" if device.type == "cuda"
                  else "not measured on CPU (no per-variant allocator statistics)",
                  "repeats": args.repeats, "runs": measured},
        **provenance(),
    }
    write_result(args.output, result)
    for m in measured:
        print(f"{m['task']} {m['shape']}: " + ", ".join(
            f"{name} {v['ratio_to_before']['median']:.2f}x" for name, v in m["variants"].items()))
    return result


if __name__ == "__main__":
    main()
