"""Reptile's outer-step bookkeeping (snapshot, sum, update, restore) with in-place multi-tensor
buffers against a deepcopy per task, on GPT-2-small-shaped parameters (124M, random weights). Peak
memory of each is measured in a fresh child process (VmHWM growth over the model alone).
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

from utils.meta.algorithms import MetaBuffers, meta_parameters

TASKS = 4
EPSILON = 0.5


def gpt2_small() -> torch.nn.Module:
    torch.manual_seed(0)
    return GPT2LMHeadModel(GPT2Config(n_layer=12, n_embd=768, n_head=12, vocab_size=50257, n_positions=1024))


def ours(model: torch.nn.Module, buffers: MetaBuffers) -> None:
    """One outer step's bookkeeping for TASKS tasks (the inner steps themselves are not timed)."""
    buffers.begin()
    for _ in range(TASKS):
        buffers.restore()
        buffers.add()
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


def _status_kib(field: str) -> int:
    """A memory field of /proc/self/status (VmHWM: peak resident set; VmRSS: current), in KiB."""
    line = next(line for line in Path("/proc/self/status").read_text().splitlines() if line.startswith(field))
    return int(line.split()[1])


def _measure_memory(variant: str, queue) -> None:
    torch.set_num_threads(2)
    model = gpt2_small()
    base = _status_kib("VmRSS:")
    if variant == "ours":
        buffers = MetaBuffers(meta_parameters(model))
        ours(model, buffers)
    else:
        deepcopy_per_task(model)
    queue.put((_status_kib("VmHWM:") - base) * 1024)


def peak_extra_bytes(variant: str) -> int:
    context = multiprocessing.get_context("spawn")
    queue = context.Queue()
    process = context.Process(target=_measure_memory, args=(variant, queue))
    process.start()
    value = queue.get()
    process.join()
    return value


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=7,
                        help="Interleaved repeats (every one recorded; the median of the paired ratios is reported).")
    parser.add_argument("--output", default=str(Path(__file__).parent / "results" / "reptile_bookkeeping.json"),
                        help="Where to write the result JSON.")
    args = parser.parse_args(argv)
    model = gpt2_small()
    parameter_bytes = sum(p.numel() * p.element_size() for p in meta_parameters(model))
    buffers = MetaBuffers(meta_parameters(model))
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
    ours_s, base_s = statistics.median(times["ours"]), statistics.median(times["deepcopy"])
    spread = paired_ratio_spread(times["deepcopy"], times["ours"])   # seconds: baseline / ours per repeat
    result = {
        "name": "reptile_bookkeeping",
        "what": f"outer-step bookkeeping for {TASKS} tasks (snapshot, restore per task, running sum, update) on "
                "GPT-2-small-shaped parameters (124M fp32), CPU",
        "unit": "seconds per outer step (lower is better; ratio = baseline / ours)",
        "baseline": {"label": "deepcopy per task + state-dict arithmetic", "value": base_s},
        "ours": {"label": "MetaBuffers: two preallocated buffers, torch._foreach_* in place", "value": ours_s},
        "ratio": spread["median"],
        "target_ratio": 3.0,
        "extra": {"repeats": times, "paired_ratio": spread, "ratio_of_medians": base_s / ours_s,
                  "parameter_bytes": parameter_bytes,
                  "peak_extra_bytes_ours": memory["ours"], "peak_extra_bytes_deepcopy": memory["deepcopy"],
                  "peak_extra_over_parameter_bytes_ours": memory["ours"] / parameter_bytes,
                  "peak_extra_over_parameter_bytes_deepcopy": memory["deepcopy"] / parameter_bytes},
        **provenance(),
    }
    write_result(args.output, result)
    print(json.dumps({k: result[k] for k in ("ours", "baseline", "ratio")}, indent=1))
    print(f"peak extra memory: ours {memory['ours'] / parameter_bytes:.2f}x the parameters, "
          f"deepcopy {memory['deepcopy'] / parameter_bytes:.2f}x")
    return result


if __name__ == "__main__":
    main()
