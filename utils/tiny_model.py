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

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
from transformers import AutoTokenizer, GPT2Config, GPT2LMHeadModel, PreTrainedTokenizerFast

from utils.checkpoint import build_lineage, save_checkpoint
from utils.cli import positive_int, progress_enabled, silence_library_progress_bars
from utils.data import load_task_data
from utils.errors import ToolkitError
from utils.outputs import prepare_output_dir
from utils.runtime import set_seed
from utils.samples import SAMPLE_FILES, SAMPLES_DIR

logger = logging.getLogger(__name__)

END_OF_TEXT = "<|endoftext|>"


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
    backend = Tokenizer(models.BPE())
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    # GPT-2's tokenizer.json keeps the leading space inside offsets (trim_offsets false).
    backend.post_processor = processors.ByteLevel(trim_offsets=False)
    trainer = trainers.BpeTrainer(vocab_size=vocab_size - 1, min_frequency=2, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    backend.train_from_iterator(texts, trainer=trainer)
    backend.add_special_tokens([END_OF_TEXT])
    return PreTrainedTokenizerFast(tokenizer_object=backend, bos_token=END_OF_TEXT,
                                   eos_token=END_OF_TEXT, unk_token=END_OF_TEXT,
                                   pad_token=END_OF_TEXT, model_max_length=1024)


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
                     seed: int = 0) -> Path:
    """Build the tokenizer and a random tiny GPT-2 and save them as a checkpoint folder.

    Args:
        tokenizer_path: an existing tokenizer folder to reuse instead of training one (its
            vocabulary size then decides the model's).
        vocab_size: size of the trained tokenizer's vocabulary, `<|endoftext|>` included.
    """
    set_seed(seed)
    if tokenizer_path is not None:
        if not Path(tokenizer_path).is_dir():
            raise ToolkitError(f"--tokenizer {tokenizer_path} is not a folder")
        tokenizer = AutoTokenizer.from_pretrained(tokenizer_path)
        if tokenizer.eos_token is None:
            raise ToolkitError(f"the tokenizer in {tokenizer_path} has no eos token")
        if tokenizer.pad_token is None:
            tokenizer.pad_token = tokenizer.eos_token
    else:
        tokenizer = train_tokenizer(sample_texts(samples_dir), vocab_size)
    tokenizer.padding_side = "right"
    config = tiny_config(vocab_size=len(tokenizer), eos_token_id=tokenizer.eos_token_id, n_layer=n_layer,
                         n_embd=n_embd, n_head=n_head, n_positions=n_positions, dropout=dropout)
    config.pad_token_id = tokenizer.pad_token_id
    model = GPT2LMHeadModel(config)
    lineage = build_lineage(script="utils.tiny_model", task=None, objective=None, head="lm", seed=seed,
                            parent=None, extra={"tokenizer_source": tokenizer_path or str(samples_dir),
                                                "parameters": sum(p.numel() for p in model.parameters())})
    return save_checkpoint(model, tokenizer, output_dir, lineage)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m utils.tiny_model", description=__doc__.split("\n\n")[0])
    parser.add_argument("--output_dir", type=str, required=True, help="Checkpoint folder to write.")
    parser.add_argument("--overwrite_output_dir", action="store_true",
                        help="Replace an existing non-empty --output_dir.")
    parser.add_argument("--n_layer", type=positive_int, default=2, help="Transformer blocks.")
    parser.add_argument("--n_embd", type=positive_int, default=32, help="Hidden size.")
    parser.add_argument("--n_head", type=positive_int, default=2, help="Attention heads (divides --n_embd).")
    parser.add_argument("--n_positions", type=positive_int, default=512,
                        help="Longest sequence (QA windows need at least --max_seq_length).")
    parser.add_argument("--vocab_size", type=positive_int, default=1024,
                        help="Vocabulary of the trained tokenizer (ignored with --tokenizer).")
    parser.add_argument("--dropout", type=float, default=0.1,
                        help="Residual, embedding and attention dropout (GPT-2 uses 0.1).")
    parser.add_argument("--tokenizer", type=str, default=None,
                        help="Reuse this tokenizer folder (e.g. ../shared/data/tiny_gpt2 for the real "
                             "GPT-2 vocabulary) instead of training one on data/samples.")
    parser.add_argument("--samples_dir", type=str, default=str(SAMPLES_DIR),
                        help="Where the bundled samples are (text for the tokenizer).")
    parser.add_argument("--seed", type=int, default=0, help="Seed of the random initialisation.")
    parser.add_argument("--no_progress", action="store_true", help="No progress bars.")
    return parser


def main(argv: list[str] | None = None) -> dict:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not 0.0 <= args.dropout < 1.0:
        parser.error("--dropout must be in [0, 1)")
    if not progress_enabled(args.no_progress):
        silence_library_progress_bars()
    prepare_output_dir(args.output_dir, overwrite=args.overwrite_output_dir)
    path = build_tiny_model(args.output_dir, n_layer=args.n_layer, n_embd=args.n_embd, n_head=args.n_head,
                            n_positions=args.n_positions, vocab_size=args.vocab_size, dropout=args.dropout,
                            tokenizer_path=args.tokenizer, samples_dir=Path(args.samples_dir),
                            seed=args.seed)
    summary = {"output_dir": str(path), **{k: getattr(args, k) for k in
                                           ("n_layer", "n_embd", "n_head", "n_positions")}}
    tokenizer = AutoTokenizer.from_pretrained(path)
    summary["vocab_size"] = len(tokenizer)
    logger.info("tiny GPT-2 written to %s (vocabulary %d)", path, len(tokenizer))
    return summary


if __name__ == "__main__":
    from utils.cli import run_entry_point

    run_entry_point(main)
