"""Benchmark: Reptile's outer-step bookkeeping (snapshot, sum, update, restore) with the
project's in-place multi-tensor buffers, against a deepcopy-per-task implementation, on
GPT-2-small-shaped parameters (124M, random weights), in the same run.

Peak memory of each variant is measured in a fresh child process (VmHWM growth over the model
alone), so the two cannot share an allocator's cache.

    python benchmarks/reptile_bookkeeping.py        # writes results/reptile_bookkeeping.json
"""
from __future__ import annotations

import argparse

import copy
import json
import multiprocessing
import statistics
import time
from pathlib import Path

import torch


from recording import paired_ratio_spread, provenance, write_result

from transformers import GPT2Config, GPT2LMHeadModel

from utils.meta.reptile import ReptileBuffers, meta_parameters

TASKS = 4
EPSILON = 0.5


def gpt2_small() -> torch.nn.Module:
    torch.manual_seed(0)
    return GPT2LMHeadModel(GPT2Config(n_layer=12, n_embd=768, n_head=12, vocab_size=50257, n_positions=1024))


def ours(model: torch.nn.Module, buffers: ReptileBuffers) -> None:
    """One outer step's bookkeeping for TASKS tasks (the inner steps themselves are not timed)."""
    buffers.begin()
    for _ in range(TASKS):
        buffers.restore()
        buffers.add_adapted()
    buffers.update(EPSILON)


def deepcopy_per_task(model: torch.nn.Module) -> None:
    """The common alternative: a deep copy per task, state-dict arithmetic, load the result."""
    theta = {k: v.clone() for k, v in model.state_dict().items()}
    total = None
    for _ in range(TASKS):
        learner = copy.deepcopy(model)
        adapted = learner.state_dict()
        total = {k: v.clone() for k, v in adapted.items()} if total is None else \
            {k: total[k] + adapted[k] for k in total}
        del learner
    model.load_state_dict({k: theta[k] + EPSILON * (total[k] / TASKS - theta[k]) if theta[k].is_floating_point()
                           else theta[k] for k in theta})


def _peak_rss_kib() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    return -1


def _rss_kib() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return -1


def _measure_memory(variant: str, queue) -> None:
    torch.set_num_threads(2)
    model = gpt2_small()
    base = _rss_kib()
    if variant == "ours":
        buffers = ReptileBuffers(meta_parameters(model))
        ours(model, buffers)
    else:
        deepcopy_per_task(model)
    queue.put((_peak_rss_kib() - base) * 1024)


def peak_extra_bytes(variant: str) -> int:
    context = multiprocessing.get_context("spawn")
    queue = context.Queue()
    process = context.Process(target=_measure_memory, args=(variant, queue))
    process.start()
    value = queue.get()
    process.join()
    return value


def bookkeeping_share(inner_steps: int = 5, repeats: int = 5) -> dict:
    """Share of an outer step (TASKS tasks × k inner Adam steps on the tiny GPT-2, batch 8×64) spent
    on Reptile's bookkeeping."""
    torch.manual_seed(0)
    model = GPT2LMHeadModel(GPT2Config(n_layer=2, n_embd=32, n_head=2, vocab_size=1024, n_positions=128))
    params = meta_parameters(model)
    buffers = ReptileBuffers(params)
    batches = [torch.randint(0, 1024, (8, 64)) for _ in range(inner_steps)]
    total_times, book_times = [], []
    for _ in range(repeats):
        book = 0.0
        started = time.perf_counter()
        tick = time.perf_counter()
        buffers.begin()
        book += time.perf_counter() - tick
        for _ in range(TASKS):
            tick = time.perf_counter()
            buffers.restore()
            book += time.perf_counter() - tick
            optimizer = torch.optim.Adam(params, lr=1e-3, betas=(0.0, 0.999))
            for ids in batches:
                model(input_ids=ids, labels=ids).loss.backward()
                optimizer.step()
                optimizer.zero_grad(set_to_none=True)
            tick = time.perf_counter()
            buffers.add_adapted()
            book += time.perf_counter() - tick
        tick = time.perf_counter()
        buffers.update(EPSILON)
        book += time.perf_counter() - tick
        total_times.append(time.perf_counter() - started)
        book_times.append(book)
    return {"outer_step_seconds": statistics.median(total_times), "bookkeeping_seconds": statistics.median(book_times),
            "bookkeeping_share": statistics.median(b / t for b, t in zip(book_times, total_times)),
            "setting": f"tiny GPT-2 (2x32, vocab 1024), {TASKS} tasks x {inner_steps} Adam steps, batch 8x64"}


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=7,
                        help="Interleaved repeats (every one recorded; the median of the paired ratios is reported).")
    parser.add_argument("--output", default=str(Path(__file__).parent / "results" / "reptile_bookkeeping.json"),
                        help="Where to write the result JSON.")
    args = parser.parse_args(argv)
    model = gpt2_small()
    parameter_bytes = sum(p.numel() * p.element_size() for p in meta_parameters(model))
    buffers = ReptileBuffers(meta_parameters(model))
    ours(model, buffers)  # warm-up
    deepcopy_per_task(model)
    times = {"ours": [], "deepcopy": []}
    for repeat in range(args.repeats):
        for label in (("ours", "deepcopy") if repeat % 2 == 0 else ("deepcopy", "ours")):
            started = time.perf_counter()
            ours(model, buffers) if label == "ours" else deepcopy_per_task(model)
            times[label].append(time.perf_counter() - started)
        print(f"repeat {repeat}: ours {times['ours'][-1] * 1000:.0f} ms, deepcopy {times['deepcopy'][-1] * 1000:.0f} ms",
              flush=True)
    memory = {variant: peak_extra_bytes(variant) for variant in ("ours", "deepcopy")}
    share = bookkeeping_share()
    ours_s, base_s = statistics.median(times["ours"]), statistics.median(times["deepcopy"])
    spread = paired_ratio_spread(times["deepcopy"], times["ours"])   # seconds: baseline / ours per repeat
    result = {
        "name": "reptile_bookkeeping",
        "what": f"outer-step bookkeeping for {TASKS} tasks (snapshot, restore per task, running sum, update) on "
                "GPT-2-small-shaped parameters (124M fp32), CPU",
        "unit": "seconds per outer step (lower is better; ratio = baseline / ours)",
        "baseline": {"label": "deepcopy per task + state-dict arithmetic", "value": base_s},
        "ours": {"label": "ReptileBuffers: two preallocated buffers, torch._foreach_* in place", "value": ours_s},
        "ratio": spread["median"],
        "target_ratio": 3.0,
        "extra": {"repeats": times, "paired_ratio": spread, "ratio_of_medians": base_s / ours_s,
                  "parameter_bytes": parameter_bytes,
                  "peak_extra_bytes_ours": memory["ours"], "peak_extra_bytes_deepcopy": memory["deepcopy"],
                  "peak_extra_over_parameter_bytes_ours": memory["ours"] / parameter_bytes,
                  "peak_extra_over_parameter_bytes_deepcopy": memory["deepcopy"] / parameter_bytes,
                  "tiny_model_outer_step": share},
        **provenance(),
    }
    write_result(args.output, result)
    print(json.dumps({k: result[k] for k in ("ours", "baseline", "ratio")}, indent=1))
    print(f"peak extra memory: ours {memory['ours'] / parameter_bytes:.2f}x the parameters, "
          f"deepcopy {memory['deepcopy'] / parameter_bytes:.2f}x")
    print(f"tiny model: bookkeeping {share['bookkeeping_share']:.2%} of an outer step "
          f"({share['outer_step_seconds'] * 1000:.0f} ms)")
    return result


if __name__ == "__main__":
    main()
