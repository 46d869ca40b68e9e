"""Loading GPT-2-style tokenizers from any of the layouts they come in.

- a Hugging Face folder (`tokenizer.json` and/or `vocab.json` + `merges.txt`);
- OpenAI's original release files, `encoder.json` + `vocab.bpe` (e.g. ../shared/data/gpt2_tokenizer).

Every tokenizer returned is fast (it gives character offsets), has `<|endoftext|>` as bos, eos and
unk, uses EOS as its pad token (GPT-2 has none) and pads on the right.
"""
from __future__ import annotations

import os
from pathlib import Path

from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers, processors
from transformers import AutoTokenizer, PreTrainedTokenizerFast

from utils.run.errors import ToolkitError

END_OF_TEXT = "<|endoftext|>"
OPENAI_FILES = ("encoder.json", "vocab.bpe")


def gpt2_style_backend(model: models.Model) -> Tokenizer:
    """A tokenizers pipeline with GPT-2's byte-level pre-tokenizer, decoder and post-processor.

    As in GPT-2's tokenizer.json: no prefix space is added and offsets are not trimmed, so a word's
    offsets include its leading space.
    """
    backend = Tokenizer(model)
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    backend.post_processor = processors.ByteLevel(trim_offsets=False)
    return backend


def wrap_backend(backend: Tokenizer) -> PreTrainedTokenizerFast:
    """A transformers tokenizer around `backend`, with GPT-2's special tokens and padding."""
    backend.add_special_tokens([AddedToken(END_OF_TEXT, special=True, normalized=False)])
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=backend, bos_token=END_OF_TEXT, eos_token=END_OF_TEXT,
                                        unk_token=END_OF_TEXT, pad_token=END_OF_TEXT, model_max_length=1024)
    tokenizer.padding_side = "right"
    return tokenizer


def has_tokenizer_files(folder: Path) -> bool:
    """Whether a folder holds a complete tokenizer in one of the accepted layouts."""
    return (folder / "tokenizer.json").exists() \
        or all((folder / name).exists() for name in ("vocab.json", "merges.txt")) \
        or all((folder / name).exists() for name in OPENAI_FILES)


def load_tokenizer(path: str | os.PathLike):
    """A fast GPT-2-style tokenizer from a Hugging Face folder or OpenAI's encoder.json + vocab.bpe.

    Raises:
        ToolkitError: the folder is missing, holds no tokenizer, or the tokenizer is not fast.
    """
    folder = Path(path)
    if not folder.is_dir():
        raise ToolkitError(f"tokenizer folder {folder} does not exist")
    if not has_tokenizer_files(folder):
        raise ToolkitError(f"{folder} holds no tokenizer: expected tokenizer.json, vocab.json + merges.txt, "
                           "or OpenAI's encoder.json + vocab.bpe")
    if (folder / "tokenizer.json").exists() or (folder / "vocab.json").exists():
        tokenizer = AutoTokenizer.from_pretrained(str(folder))
    else:
        tokenizer = wrap_backend(gpt2_style_backend(
            models.BPE.from_file(str(folder / "encoder.json"), str(folder / "vocab.bpe"))))
    if not tokenizer.is_fast:
        raise ToolkitError(f"the tokenizer in {folder} is not a fast tokenizer; character offsets are needed")
    if tokenizer.eos_token is None:
        raise ToolkitError(f"the tokenizer in {folder} has no eos token")
    if tokenizer.pad_token is None:
        # GPT-2 has no pad token; EOS is safe as pad because attention masks hide padding.
        tokenizer.pad_token = tokenizer.eos_token
    tokenizer.padding_side = "right"
    return tokenizer


def truncation_note(name: str, cut: int, total: int, max_tokens: int, unit: str = "sentences") -> str | None:
    """One line saying how many of a split's texts were cut, or None when none was.

    The tokenizer's own warning is silenced (utils.run.cli.configure_logging): it fires on the long
    contexts QA windows on purpose, and says nothing about the cuts that change what a model sees.

        >>> truncation_note("sst2-train", 12, 6920, 128)
        'sst2-train: 12 of 6920 sentences were cut to 128 tokens'
    """
    if cut == 0:
        return None
    return f"{name}: {cut} of {total} {unit} were cut to {max_tokens} tokens"
