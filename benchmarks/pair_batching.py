"""Benchmark: sentence-pair training throughput of the project's batching against padding to --max_length.

The pairs are QNLI-SHAPED, built here from real SQuAD v1.1 dev (not GLUE QNLI itself, which is not
on this machine). GLUE built QNLI from SQuAD the same way: (question, one sentence of the
paragraph), entailment iff the sentence holds the answer. Each paragraph is cut into sentences at
every whitespace run that follows ".", "?" or "!" (a simple rule: "U.S. Army" is cut too). Every
question whose paragraph has at least two sentences, one holding its first answer's start, gives
two pairs, so labels are balanced: (question, that sentence) with label 0 (entailment), and
(question, another sentence of the paragraph, drawn with a seeded numpy Generator) with label 1.

Pairs are joined `question <eos> sentence` and cut by the project's own feature code
(utils.classification.objective.classification_features). Both variants train the same tiny GPT-2
classifier (2x128, real GPT-2 vocabulary) on the same pairs, interleaved, several repeats:
length-grouped batches padded to their own longest pair (ours) against random batches padded to
--max_length (128, the target script's default and run_glue's). Reported: real (non-pad) tokens
per second of every repeat, the ratio (the median of the paired per-repeat ratios
ours_i / baseline_i) with their min and max, and MFU against a matrix-multiply peak measured in
the same run.

    python benchmarks/pair_batching.py          # writes results/pair_batching.json
"""
from __future__ import annotations

import argparse
import json
import re
import statistics
from pathlib import Path

import numpy as np
import torch


from recording import paired_ratio_spread, provenance, write_result

from sst2_batching import classifier_throughput

from utils.classification.objective import classification_features
from utils.data.loading import load_task_data
from utils.training.runtime import resolve_device, resolve_precision
from utils.models.tokenization import load_tokenizer

SHARED = Path(__file__).resolve().parent.parent.parent / "shared" / "data"
SENTENCE_BOUNDARY = re.compile(r"(?<=[.?!])\s+")
ENTAILMENT, NOT_ENTAILMENT = 0, 1


def sentence_spans(context: str) -> list[tuple[int, int]]:
    """(start, end) character spans of the context's sentences, cut at whitespace after . ? or !
    (the whitespace itself belongs to no sentence)."""
    spans, start = [], 0
    for boundary in SENTENCE_BOUNDARY.finditer(context):
        spans.append((start, boundary.start()))
        start = boundary.end()
    if start < len(context):
        spans.append((start, len(context)))
    return spans


def qnli_shaped_pairs(records: list[dict], seed: int) -> dict[str, list]:
    """{"text": questions, "text_pair": sentences, "label": labels}: per question with a located
    answer and at least two sentences, its answer sentence (ENTAILMENT) and one other sentence
    drawn with numpy's Generator seeded `seed` (NOT_ENTAILMENT), in record order."""
    rng = np.random.default_rng(seed)
    pairs: dict[str, list] = {"text": [], "text_pair": [], "label": []}
    for record in records:
        starts = record["answers"]["answer_start"]
        spans = sentence_spans(record["context"])
        # An answer start in the whitespace between sentences (or none) locates no sentence.
        holding = [i for i, (begin, end) in enumerate(spans) if starts and begin <= starts[0] < end]
        if len(spans) < 2 or not holding:
            continue
        others = [i for i in range(len(spans)) if i != holding[0]]
        for index, label in ((holding[0], ENTAILMENT), (others[int(rng.integers(len(others)))], NOT_ENTAILMENT)):
            begin, end = spans[index]
            pairs["text"].append(record["question"])
            pairs["text_pair"].append(record["context"][begin:end])
            pairs["label"].append(label)
    return pairs


def pair_rows(squad_path: str, tokenizer, max_length: int, seed: int) -> tuple[list[dict], dict]:
    """Training rows ({"input_ids", "labels"}) of the QNLI-shaped pairs of SQuAD dev, and counts
    describing them (questions read and used, pairs, label balance, pairs cut to max_length)."""
    records = load_task_data("squad", "validation", squad_path).records
    pairs = qnli_shaped_pairs(records, seed)
    features = classification_features(pairs, tokenizer, max_length)
    rows = [{"input_ids": ids, "labels": label} for ids, label in zip(features["input_ids"], features["labels"])]
    counts = {"questions": len(records), "questions_used": len(rows) // 2, "pairs": len(rows),
              "entailment_share": pairs["label"].count(ENTAILMENT) / max(1, len(rows)),
              "pairs_cut_to_max_length": int(sum(features["truncated"]))}
    return rows, counts


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """The command line (defaults keep a run at one to two minutes on two CPU cores)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--squad", default=str(SHARED / "squad_v1.1" / "dev-v1.1.json"), help="SQuAD v1.1 dev JSON.")
    parser.add_argument("--tokenizer", default=str(SHARED / "gpt2_tokenizer"), help="GPT-2 tokenizer folder.")
    parser.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"), help="Where to train.")
    parser.add_argument("--batch_size", type=int, default=32, help="Pairs per batch.")
    parser.add_argument("--steps", type=int, default=10, help="Batches per variant and repeat.")
    parser.add_argument("--repeats", type=int, default=7, help="Interleaved repeats (every one is recorded).")
    parser.add_argument("--max_length", type=int, default=128, help="The baseline pads to this (and pairs are cut).")
    parser.add_argument("--seed", type=int, default=0, help="Seed of the negative-sentence draw and the model.")
    parser.add_argument("--output", default=str(Path(__file__).parent / "results" / "pair_batching.json"),
                        help="Where to write the result JSON.")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> dict:
    """Time both variants, write the result JSON (the file's schema: benchmarks/README.md) and return it."""
    args = parse_args(argv)
    device = resolve_device(args.device)
    precision = resolve_precision("auto", device)
    torch.manual_seed(args.seed)
    tokenizer = load_tokenizer(args.tokenizer)
    rows, counts = pair_rows(args.squad, tokenizer, args.max_length, args.seed)
    lengths = [len(row["input_ids"]) for row in rows]
    summary, peak = classifier_throughput(rows, tokenizer, max_length=args.max_length, batch_size=args.batch_size,
                                          steps=args.steps, repeats=args.repeats, device=device, precision=precision,
                                          unit="tokens", rate_unit="tokens")
    (ours, mfu_ours), (base, mfu_base) = summary["ours"], summary["baseline"]
    spread = paired_ratio_spread(ours, base)
    result = {
        "name": "pair_batching",
        "what": f"sentence-pair training real (non-pad) tokens/s, tiny GPT-2 classifier (2x128, GPT-2 vocabulary), "
                f"batch {args.batch_size}, {precision.name}; QNLI-shaped (question, sentence) pairs built from SQuAD "
                f"v1.1 dev (not GLUE QNLI itself), joined question <eos> sentence by classification_features",
        "unit": "real tokens per second",
        "baseline": {"label": f"random batches padded to --max_length {args.max_length}", "value": statistics.median(base)},
        "ours": {"label": "length-grouped batches, dynamic padding", "value": statistics.median(ours)},
        "ratio": spread["median"],
        "target_ratio": 1.5,
        "extra": {"repeats": {"ours": ours, "baseline": base},
                  "paired_ratio": spread, "ratio_of_medians": statistics.median(ours) / statistics.median(base),
                  "mfu_ours": mfu_ours, "mfu_baseline": mfu_base,
                  "peak_flops": peak, "peak_source": "measured fp32 matmul",
                  "mean_pair_tokens": float(np.mean(lengths)), "baseline_padded_width": args.max_length,
                  "pairs_per_repeat": args.steps * args.batch_size, **counts},
        **provenance(),
    }
    write_result(args.output, result)
    print(json.dumps({k: result[k] for k in ("ours", "baseline", "ratio")}, indent=1))
    print(f"paired ratios min {spread['min']:.2f}, median {spread['median']:.2f}, max {spread['max']:.2f}; "
          f"MFU ours {mfu_ours}, baseline {mfu_base}")
    return result


if __name__ == "__main__":
    main()
