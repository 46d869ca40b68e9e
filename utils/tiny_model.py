"""`python -m utils.tiny_model`: a tiny causal LM of any family, built offline (utils.models.tiny),
its flags and output folder checked before torch and transformers load.

    python -m utils.tiny_model --output_dir tiny_gpt2 [--n_layer 2 --n_embd 32 ...]
    python -m utils.tiny_model --output_dir tiny_gpt2 --tokenizer ../shared/data/tiny_gpt2
    python -m utils.tiny_model --output_dir tiny_llama --family llama
"""
from __future__ import annotations

import argparse
import logging
from pathlib import Path

from utils.data.loading import SAMPLES_DIR
from utils.models.families import FAMILIES
from utils.run.flags import add_output_args, add_progress_arg, add_seed_arg, number
from utils.run.progress import progress_enabled, run_entry_point, silence_library_progress_bars
from utils.run.outputs import hold_run_folder

logger = logging.getLogger(__name__)


def build_parser() -> argparse.ArgumentParser:
    """The command line of `python -m utils.tiny_model`."""
    parser = argparse.ArgumentParser(prog="python -m utils.tiny_model", description="A tiny causal LM of any family, built offline: the model the demo and the tests run on.")
    add_output_args(parser)
    group = parser.add_argument_group("model")
    group.add_argument("--family", choices=tuple(FAMILIES), default="gpt2",
                       help="Model family (utils.models.families): gpt2 (default), gpt_neo, gpt_neox (Pythia's "
                            "layout), llama (Llama / SmolLM / Qwen2's layout).")
    group.add_argument("--n_layer", type=number(int, minimum=1), default=2, help="Transformer blocks (any family).")
    group.add_argument("--n_embd", type=number(int, minimum=1), default=32, help="Hidden size.")
    group.add_argument("--n_head", type=number(int, minimum=1), default=2, help="Attention heads (divides --n_embd).")
    group.add_argument("--n_positions", type=number(int, minimum=1), default=512,
                       help="Longest sequence, max_position_embeddings outside GPT-2 (QA windows need at least "
                            "--max_seq_length).")
    group.add_argument("--vocab_size", type=number(int, minimum=1), default=1024,
                       help="Vocabulary of the trained tokenizer (ignored with --tokenizer).")
    group.add_argument("--dropout", type=number(float, minimum=0, maximum=1), default=0.1,
                       help="Residual, embedding and attention dropout (GPT-2 uses 0.1).")
    group.add_argument("--tokenizer", type=str, default=None,
                       help="Reuse this tokenizer folder instead of training one on data/samples: a "
                            "Hugging Face folder (e.g. ../shared/data/tiny_gpt2) or OpenAI's encoder.json "
                            "+ vocab.bpe (e.g. ../shared/data/gpt2_tokenizer), both the real GPT-2 vocabulary.")
    group.add_argument("--samples_dir", type=str, default=str(SAMPLES_DIR),
                       help="Where the bundled samples are (text for the tokenizer).")
    add_seed_arg(group)
    add_progress_arg(group)
    return parser


def main(argv: list[str] | None = None) -> dict:
    """Build the tiny model into --output_dir; returns its sizes."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if not 0.0 <= args.dropout < 1.0:
        parser.error("--dropout must be in [0, 1)")
    if not progress_enabled(args.no_progress):
        silence_library_progress_bars()
    with hold_run_folder(args.output_dir, overwrite=args.overwrite_output_dir) as folder:
        # torch and transformers load here, once the flags and the output folder are checked
        from utils.models.loading import load_tokenizer
        from utils.models.tiny import build_tiny_model

        path = build_tiny_model(folder.path, family=args.family, n_layer=args.n_layer, n_embd=args.n_embd, n_head=args.n_head,
                                n_positions=args.n_positions, vocab_size=args.vocab_size, dropout=args.dropout,
                                tokenizer_path=args.tokenizer, samples_dir=Path(args.samples_dir),
                                seed=args.seed)
    summary = {"output_dir": str(path), **{k: getattr(args, k) for k in
                                           ("family", "n_layer", "n_embd", "n_head", "n_positions")}}
    summary["vocab_size"] = len(load_tokenizer(path))
    logger.info("tiny %s model written to %s (vocabulary %d)", args.family, path, summary["vocab_size"])
    return summary


if __name__ == "__main__":
    run_entry_point(main)
