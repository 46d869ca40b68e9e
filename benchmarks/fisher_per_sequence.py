"""The vectorised per-sequence Fisher (layer hooks, chunked vocabulary head) against the brute-force
loop over sequences, on the same real SQuAD sequences and sampled labels: a tiny GPT-2 with the full
GPT-2 vocabulary, fp32. Both must give the same Fisher (rtol 1e-5, checked here).
"""
from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import torch


from recording import paired_ratio_spread, provenance, write_result

from transformers import GPT2Config, GPT2LMHeadModel

from task2vec.embedding.fisher import diagonal_fisher, sample_labels
from task2vec.embedding.layout import flatten, select_parameters
from task2vec.embedding.predictions import next_token_predictions
from utils.data.loading import load_task_data
from utils.models.loading import load_tokenizer

SHARED = Path(__file__).resolve().parent.parent.parent / "shared" / "data"
VOCAB = 50257


def sequences(count: int, length: int, seed: int) -> tuple[torch.Tensor, str]:
    """(count, length) token ids: SQuAD contexts with the real tokenizer if available, else random."""
    squad, tokenizer_dir = SHARED / "squad_v1.1" / "dev-v1.1.json", SHARED / "gpt2_tokenizer"
    if squad.is_file() and tokenizer_dir.is_dir():
        tokenizer = load_tokenizer(tokenizer_dir)
        contexts = list(dict.fromkeys(r["context"] for r in load_task_data("squad", "validation", squad).records))
        encoded = [ids[:length] for ids in tokenizer(contexts[:4 * count])["input_ids"] if len(ids) >= length]
        return torch.tensor(encoded[:count]), "SQuAD v1.1 dev contexts, real GPT-2 tokenizer"
    generator = torch.Generator().manual_seed(seed)
    return torch.randint(0, VOCAB, (count, length), generator=generator), "random token ids"


def timed(function) -> tuple[float, dict]:
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    started = time.perf_counter()
    result = function()
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    return time.perf_counter() - started, result


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sequences", type=int, default=32, help="Sequences per Fisher estimate.")
    parser.add_argument("--length", type=int, default=128, help="Tokens per sequence.")
    parser.add_argument("--num_samples", type=int, default=1, help="K label samples per position.")
    parser.add_argument("--repeats", type=int, default=7,
                        help="Interleaved repeats (every one recorded; the median of the paired ratios is reported).")
    parser.add_argument("--device", default="cpu", help="cpu or cuda.")
    parser.add_argument("--gpt2_small", action="store_true", help="GPT-2 small shape (12x768) instead of the tiny model.")
    parser.add_argument("--skip_loop", action="store_true", help="Time only the vectorised path (large settings).")
    parser.add_argument("--output", default=str(Path(__file__).parent / "results" / "fisher_per_sequence.json"),
                        help="Where to write the result JSON.")
    args = parser.parse_args(argv)
    if args.repeats < 1:
        parser.error(f"--repeats must be at least 1, got {args.repeats}")
    device = torch.device(args.device)
    torch.manual_seed(0)
    shape = dict(n_layer=12, n_embd=768, n_head=12) if args.gpt2_small else dict(n_layer=2, n_embd=32, n_head=2)
    model = GPT2LMHeadModel(GPT2Config(vocab_size=VOCAB, n_positions=max(128, args.length), **shape)).to(device).eval()
    ids, source = sequences(args.sequences, args.length, seed=0)
    ids, mask = ids.to(device), torch.ones_like(ids).to(device)
    covered = select_parameters(model, "transformer")
    labels = sample_labels(next_token_predictions(model, {"input_ids": ids, "attention_mask": mask}), args.num_samples,
                           torch.Generator(device=device).manual_seed(1))

    def run(method: str) -> dict:
        return diagonal_fisher(model, ids, mask, num_samples=args.num_samples, labels=labels, method=method)

    methods = ("hooks",) if args.skip_loop else ("hooks", "loop")
    times: dict[str, list[float]] = {m: [] for m in methods}
    results: dict[str, dict] = {}
    for method in methods:  # warm-up
        run(method)
    for repeat in range(args.repeats):
        for method in (methods if repeat % 2 == 0 else methods[::-1]):
            seconds, results[method] = timed(lambda: run(method))
            times[method].append(seconds)
        print(f"repeat {repeat}: " + ", ".join(f"{m} {times[m][-1]:.3f} s" for m in methods), flush=True)
    extra = {"repeats": times, "sequences": args.sequences, "tokens_per_sequence": args.length,
             "num_samples": args.num_samples, "vocab_size": VOCAB, "model": shape, "data": source,
             "coordinates": int(flatten(covered, results["hooks"]).numel())}
    ours = statistics.median(times["hooks"])
    result = {"name": "fisher_per_sequence",
              "what": f"diagonal Fisher (mc, K={args.num_samples}) of {args.sequences} sequences x {args.length} tokens, "
                      f"GPT-2 {shape['n_layer']}x{shape['n_embd']} with the full vocabulary, {device.type} fp32",
              "unit": "seconds per estimate (lower is better; ratio = baseline / ours)",
              "ours": {"label": "layer hooks, one batched forward, factored chunked vocabulary head", "value": ours},
              **provenance(f", {torch.cuda.get_device_name()}" if device.type == "cuda" else ""), "extra": extra}
    if "loop" in times:
        base = statistics.median(times["loop"])
        # Each repeat times both sides back to back on the same labels: loop_i / hooks_i is paired.
        spread = paired_ratio_spread(times["loop"], times["hooks"])
        worst = max(float(((results["hooks"][n] - results["loop"][n]).abs()
                           / results["loop"][n].abs().clamp_min(1e-30)).max()) for n in results["loop"])
        same = all(torch.allclose(results["hooks"][n], results["loop"][n], rtol=1e-5, atol=0.0) for n in results["loop"])
        result.update({"baseline": {"label": "loop over sequences, full logits, autograd per sequence", "value": base},
                       "ratio": spread["median"], "target_ratio": 3.0})
        extra.update({"paired_ratio": spread, "ratio_of_medians": base / ours,
                      "max_relative_difference": worst, "equal_rtol_1e-5": same})
    if device.type == "cuda":
        extra["peak_memory_gib"] = torch.cuda.max_memory_allocated() / 2**30
    write_result(args.output, result)
    print(json.dumps({k: result.get(k) for k in ("ours", "baseline", "ratio")}, indent=1))
    if "loop" in times:
        print(f"paired loop/hooks over {args.repeats} repeats: median {spread['median']:.2f} "
              f"(min {spread['min']:.2f}, max {spread['max']:.2f})")
        print(f"same result: {same} (max relative difference {worst:.2e})")
    return result


if __name__ == "__main__":
    main()
