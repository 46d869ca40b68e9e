"""A tiny GPT-2 built offline: the model the demo and the tests run on (DESIGN.md section 7).

    python -m utils.tiny_model --output_dir tiny_gpt2 [--n_layer 2 --n_embd 32 ...]
    python -m utils.tiny_model --output_dir tiny_gpt2 --tokenizer ../shared/data/tiny_gpt2

The tokenizer is a byte-level BPE trained on the text of `data/samples/` with GPT-2's pre- and
post-processing (no prefix space, offsets not trimmed, `<|endoftext|>` as the last id and as bos,
eos and unk), or an existing tokenizer folder given with --tokenizer. The model is a randomly
initialised `GPT2LMHeadModel`; the folder is a normal checkpoint that loads with the LM, QA and
classification heads.
"""
from __future__ import annotations

import argparse
import logging
from collections.abc import Iterator
from pathlib import Path

import torch
from tokenizers import models, pre_tokenizers, trainers
from transformers import GPT2Config, GPT2LMHeadModel, PreTrainedTokenizerFast

from utils.models.checkpoint import build_lineage, save_checkpoint
from utils.run.cli import (add_output_args, add_progress_arg, add_seed_arg, positive_int, progress_enabled,
                       silence_library_progress_bars, unit_interval_float)
from utils.data.loading import load_task_data
from utils.run.errors import ToolkitError
from utils.run.folder import hold_run_folder
from utils.data.samples import SAMPLE_FILES, SAMPLES_DIR
from utils.models.tokenization import gpt2_style_backend, load_tokenizer, wrap_backend

logger = logging.getLogger(__name__)



def sample_texts(samples_dir: Path = SAMPLES_DIR) -> Iterator[str]:
    """Every piece of text in the bundled samples, read through the task adapters."""
    seen: set[str] = set()
    for task, files in SAMPLE_FILES.items():
        for split, relative in files.items():
            for record in load_task_data(task, split, samples_dir / relative).records:
                pieces = [record["text"]] if "text" in record else \
                    [record["context"], record["question"], *record["answers"]["text"]]
                for piece in pieces:
                    if piece not in seen:
                        seen.add(piece)
                        yield piece


def train_tokenizer(texts: Iterator[str], vocab_size: int) -> PreTrainedTokenizerFast:
    """A byte-level BPE tokenizer laid out like GPT-2's, trained on `texts`.

    Every byte is in the initial alphabet, so no input is ever unknown; `<|endoftext|>` is added
    after training so that, as in GPT-2, it has the last id.
    """
    backend = gpt2_style_backend(models.BPE())
    trainer = trainers.BpeTrainer(vocab_size=vocab_size - 1, min_frequency=2, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    backend.train_from_iterator(texts, trainer=trainer)
    return wrap_backend(backend)


def tiny_config(*, vocab_size: int, eos_token_id: int, n_layer: int, n_embd: int, n_head: int,
                n_positions: int, dropout: float) -> GPT2Config:
    """A GPT2Config of the given size; bos = eos = pad = `<|endoftext|>` as in GPT-2."""
    if n_embd % n_head:
        raise ToolkitError(f"--n_embd ({n_embd}) must be a multiple of --n_head ({n_head})")
    return GPT2Config(vocab_size=vocab_size, n_positions=n_positions, n_embd=n_embd, n_layer=n_layer,
                      n_head=n_head, resid_pdrop=dropout, embd_pdrop=dropout, attn_pdrop=dropout,
                      bos_token_id=eos_token_id, eos_token_id=eos_token_id, pad_token_id=eos_token_id)


def build_tiny_model(output_dir: str | Path, *, n_layer: int = 2, n_embd: int = 32, n_head: int = 2,
                     n_positions: int = 512, vocab_size: int = 1024, dropout: float = 0.1,
                     tokenizer_path: str | None = None, samples_dir: Path = SAMPLES_DIR,
                     seed: int = 42) -> Path:
    """Build the tokenizer and a random tiny GPT-2 and save them as a checkpoint folder.

    Args:
        tokenizer_path: an existing tokenizer folder to reuse instead of training one (its
            vocabulary size then decides the model's).
        vocab_size: size of the trained tokenizer's vocabulary, `<|endoftext|>` included.
    """
    if tokenizer_path is not None:
        tokenizer = load_tokenizer(tokenizer_path)
    else:
        tokenizer = train_tokenizer(sample_texts(samples_dir), vocab_size)
    config = tiny_config(vocab_size=len(tokenizer), eos_token_id=tokenizer.eos_token_id, n_layer=n_layer,
                         n_embd=n_embd, n_head=n_head, n_positions=n_positions, dropout=dropout)
    config.pad_token_id = tokenizer.pad_token_id
    # The weights depend on `seed` alone, and the caller's random state is left as it was.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = GPT2LMHeadModel(config)
    lineage = build_lineage(script="utils.tiny_model", task=None, objective=None, head="lm", seed=seed,
                            parent=None, extra={"tokenizer_source": tokenizer_path or str(samples_dir),
                                                "parameters": sum(p.numel() for p in model.parameters())})
    return save_checkpoint(model, tokenizer, output_dir, lineage)


def build_parser() -> argparse.ArgumentParser:
    """The command line of `python -m utils.tiny_model`."""
    parser = argparse.ArgumentParser(prog="python -m utils.tiny_model", description=__doc__.split("\n\n")[0])
    add_output_args(parser)
    group = parser.add_argument_group("model")
    group.add_argument("--n_layer", type=positive_int, default=2, help="Transformer blocks.")
    group.add_argument("--n_embd", type=positive_int, default=32, help="Hidden size.")
    group.add_argument("--n_head", type=positive_int, default=2, help="Attention heads (divides --n_embd).")
    group.add_argument("--n_positions", type=positive_int, default=512,
                       help="Longest sequence (QA windows need at least --max_seq_length).")
    group.add_argument("--vocab_size", type=positive_int, default=1024,
                       help="Vocabulary of the trained tokenizer (ignored with --tokenizer).")
    group.add_argument("--dropout", type=unit_interval_float, default=0.1,
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
        path = build_tiny_model(folder.path, n_layer=args.n_layer, n_embd=args.n_embd, n_head=args.n_head,
                                n_positions=args.n_positions, vocab_size=args.vocab_size, dropout=args.dropout,
                                tokenizer_path=args.tokenizer, samples_dir=Path(args.samples_dir),
                                seed=args.seed)
    summary = {"output_dir": str(path), **{k: getattr(args, k) for k in
                                           ("n_layer", "n_embd", "n_head", "n_positions")}}
    summary["vocab_size"] = len(load_tokenizer(path))
    logger.info("tiny GPT-2 written to %s (vocabulary %d)", path, summary["vocab_size"])
    return summary
