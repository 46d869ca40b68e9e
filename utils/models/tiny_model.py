"""A tiny causal LM of any family, built offline: the model the demo and the tests run on (DESIGN.md
section 7).

    python -m utils.tiny_model --output_dir tiny_gpt2 [--n_layer 2 --n_embd 32 ...]
    python -m utils.tiny_model --output_dir tiny_gpt2 --tokenizer ../shared/data/tiny_gpt2
    python -m utils.tiny_model --output_dir tiny_llama --family llama

The tokenizer is a byte-level BPE trained on the text of `data/samples/` with GPT-2's pre- and
post-processing (no prefix space, offsets not trimmed, `<|endoftext|>` as the last id and as bos,
eos and unk), or an existing tokenizer folder given with --tokenizer. The model is a randomly
initialised causal LM of the chosen family (utils.models.families), laid out as the family's real
models are: GPT-2 (Conv1D, learned positions, tied embeddings), GPT-Neo (Linear, alternating
global and local attention), GPT-NeoX / Pythia (fused QKV with bias, rotary on a quarter of each
head, parallel residual, untied output), Llama (RMSNorm, rotary, SwiGLU, grouped-query attention,
untied output, no pad token). The folder is a normal checkpoint that loads with the LM, QA and
classification heads.
"""
from __future__ import annotations

import argparse
import logging
from collections.abc import Iterator
from pathlib import Path

import torch
from tokenizers import models, pre_tokenizers, trainers
from transformers import (AutoModelForCausalLM, GPT2Config, GPTNeoConfig, GPTNeoXConfig, LlamaConfig, PretrainedConfig,
                          PreTrainedTokenizerFast)

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


FAMILY_CHOICES = ("gpt2", "gpt_neo", "gpt_neox", "llama")


def tiny_config(*, family: str = "gpt2", vocab_size: int, eos_token_id: int, n_layer: int, n_embd: int, n_head: int,
                n_positions: int, dropout: float) -> PretrainedConfig:
    """The config of a tiny model of `family`; bos = eos = pad = `<|endoftext|>` as in GPT-2.

    The MLP is 4 x n_embd wide (Llama's SwiGLU: 8/3 x n_embd, rounded up to a multiple of 8, the
    same number of weights); Llama uses half as many key/value heads as query heads when n_head is
    even (grouped-query attention, as Llama 2/3 and SmolLM do).
    """
    if n_embd % n_head:
        raise ToolkitError(f"--n_embd ({n_embd}) must be a multiple of --n_head ({n_head})")
    tokens = {"bos_token_id": eos_token_id, "eos_token_id": eos_token_id, "pad_token_id": eos_token_id}
    if family == "gpt2":
        return GPT2Config(vocab_size=vocab_size, n_positions=n_positions, n_embd=n_embd, n_layer=n_layer,
                          n_head=n_head, resid_pdrop=dropout, embd_pdrop=dropout, attn_pdrop=dropout, **tokens)
    if family == "gpt_neo":
        pattern = [[["global", "local"], n_layer // 2]] if n_layer % 2 == 0 else [[["global"], n_layer]]
        return GPTNeoConfig(vocab_size=vocab_size, max_position_embeddings=n_positions, hidden_size=n_embd,
                            num_layers=n_layer, num_heads=n_head, attention_types=pattern,
                            window_size=min(256, n_positions), resid_dropout=dropout, embed_dropout=dropout,
                            attention_dropout=dropout, **tokens)
    if family == "gpt_neox":
        return GPTNeoXConfig(vocab_size=vocab_size, max_position_embeddings=n_positions, hidden_size=n_embd,
                             num_hidden_layers=n_layer, num_attention_heads=n_head, intermediate_size=4 * n_embd,
                             rotary_pct=0.25, use_parallel_residual=True, hidden_dropout=dropout,
                             attention_dropout=dropout, tie_word_embeddings=False, **tokens)
    if family == "llama":
        return LlamaConfig(vocab_size=vocab_size, max_position_embeddings=n_positions, hidden_size=n_embd,
                           intermediate_size=-(-8 * n_embd // 3 // 8) * 8, num_hidden_layers=n_layer,
                           num_attention_heads=n_head, num_key_value_heads=n_head // 2 if n_head % 2 == 0 else n_head,
                           attention_dropout=dropout, tie_word_embeddings=False, **tokens)
    raise ToolkitError(f"unknown family {family!r}; choose from {', '.join(FAMILY_CHOICES)}")


def build_tiny_model(output_dir: str | Path, *, family: str = "gpt2", n_layer: int = 2, n_embd: int = 32, n_head: int = 2,
                     n_positions: int = 512, vocab_size: int = 1024, dropout: float = 0.1,
                     tokenizer_path: str | None = None, samples_dir: Path = SAMPLES_DIR,
                     seed: int = 42) -> Path:
    """Build the tokenizer and a random tiny model of `family` and save them as a checkpoint folder.

    Args:
        tokenizer_path: an existing tokenizer folder to reuse instead of training one (its
            vocabulary size then decides the model's).
        vocab_size: size of the trained tokenizer's vocabulary, `<|endoftext|>` included.
    """
    if tokenizer_path is not None:
        tokenizer = load_tokenizer(tokenizer_path)
    else:
        tokenizer = train_tokenizer(sample_texts(samples_dir), vocab_size)
    config = tiny_config(family=family, vocab_size=len(tokenizer), eos_token_id=tokenizer.eos_token_id, n_layer=n_layer,
                         n_embd=n_embd, n_head=n_head, n_positions=n_positions, dropout=dropout)
    config.pad_token_id = tokenizer.pad_token_id
    # The weights depend on `seed` alone, and the caller's random state is left as it was.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = AutoModelForCausalLM.from_config(config)
    lineage = build_lineage(script="utils.tiny_model", task=None, objective=None, head="lm", seed=seed,
                            parent=None, extra={"family": family, "tokenizer_source": tokenizer_path or str(samples_dir),
                                                "parameters": sum(p.numel() for p in model.parameters())})
    return save_checkpoint(model, tokenizer, output_dir, lineage)


def build_parser() -> argparse.ArgumentParser:
    """The command line of `python -m utils.tiny_model`."""
    parser = argparse.ArgumentParser(prog="python -m utils.tiny_model", description=__doc__.split("\n\n")[0])
    add_output_args(parser)
    group = parser.add_argument_group("model")
    group.add_argument("--family", choices=FAMILY_CHOICES, default="gpt2",
                       help="Model family (utils.models.families): gpt2 (default), gpt_neo, gpt_neox (Pythia's "
                            "layout), llama (Llama / SmolLM / Qwen2's layout).")
    group.add_argument("--n_layer", type=positive_int, default=2, help="Transformer blocks (any family).")
    group.add_argument("--n_embd", type=positive_int, default=32, help="Hidden size.")
    group.add_argument("--n_head", type=positive_int, default=2, help="Attention heads (divides --n_embd).")
    group.add_argument("--n_positions", type=positive_int, default=512,
                       help="Longest sequence, max_position_embeddings outside GPT-2 (QA windows need at least "
                            "--max_seq_length).")
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
        path = build_tiny_model(folder.path, family=args.family, n_layer=args.n_layer, n_embd=args.n_embd, n_head=args.n_head,
                                n_positions=args.n_positions, vocab_size=args.vocab_size, dropout=args.dropout,
                                tokenizer_path=args.tokenizer, samples_dir=Path(args.samples_dir),
                                seed=args.seed)
    summary = {"output_dir": str(path), **{k: getattr(args, k) for k in
                                           ("family", "n_layer", "n_embd", "n_head", "n_positions")}}
    summary["vocab_size"] = len(load_tokenizer(path))
    logger.info("tiny %s model written to %s (vocabulary %d)", args.family, path, summary["vocab_size"])
    return summary
