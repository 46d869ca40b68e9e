"""A tiny causal LM of any family, built offline: the model the demo and the tests run on,
and the synthetic QA tasks with their tokenizers that tests and benchmarks train on.

The tokenizer is a byte-level BPE trained on the text of `data/samples/` with GPT-2's pre- and
post-processing (no prefix space, offsets not trimmed, `<|endoftext|>` as the last id and as bos,
eos and unk), or an existing tokenizer folder. The model is a randomly initialised causal LM of the
chosen family, laid out as the family's real models are: GPT-2 (Conv1D, learned positions, tied
embeddings), GPT-Neo (Linear, alternating global and local attention), GPT-NeoX / Pythia (fused QKV
with bias, rotary on a quarter of each head, parallel residual, untied output), Llama (RMSNorm,
rotary, SwiGLU, grouped-query attention, untied output, no pad token). The folder is a normal
checkpoint that loads with the LM, QA and classification heads.
"""
from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path

import torch
from tokenizers import models, pre_tokenizers, trainers
from transformers import (AutoModelForCausalLM, GPT2Config, GPTNeoConfig, GPTNeoXConfig, LlamaConfig, PretrainedConfig,
                          PreTrainedTokenizerFast)

from utils.data.loading import SAMPLE_FILES, SAMPLES_DIR, load_task_data
from utils.data.records import write_jsonl
from utils.data.synthetic_qa import SyntheticTask, synthetic_records
from utils.models.checkpoint import build_lineage, save_checkpoint
from utils.models.families import FAMILIES
from utils.models.loading import gpt2_style_backend, load_tokenizer, wrap_backend
from utils.run.errors import ToolkitError

logger = logging.getLogger(__name__)


def sample_texts(samples_dir: Path = SAMPLES_DIR) -> Iterator[str]:
    """Every piece of text in the bundled samples, read through the task adapters."""
    seen: set[str] = set()
    for task, files in SAMPLE_FILES.items():
        for split, relative in files.items():
            for record in load_task_data(task, split, samples_dir / relative).records:
                if "text" in record:   # a classification record: one text, or a pair
                    pieces = [record["text"], *([record["text_pair"]] if "text_pair" in record else [])]
                else:
                    pieces = [record["context"], record["question"], *record["answers"]["text"]]
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


FAMILY_CHOICES = tuple(FAMILIES)


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


# ----------------------------------------------------------------------------- synthetic tasks for tests and benchmarks

def write_family(folder: Path, family: dict[str, SyntheticTask], *, train_examples: int = 600,
                 dev_examples: int = 100, vocab_size: int = 400) -> list[str]:
    """Write `<name>_train.jsonl` and `<name>_dev.jsonl` for every member of `family` and a
    tokenizer trained on their text (`tokenizer/`) into `folder`; return the maml_qa.py
    `--task_file NAME=PATH` arguments of the training files."""
    texts: list[str] = []
    files: list[str] = []
    for index, (name, task) in enumerate(family.items()):
        train = synthetic_records(task, train_examples, seed=10 + index)
        write_jsonl(folder / f"{name}_train.jsonl", train)
        write_jsonl(folder / f"{name}_dev.jsonl", synthetic_records(task, dev_examples, seed=50 + index))
        texts += [record["context"] + " " + record["question"] for record in train]
        files += ["--task_file", f"{name}={folder / f'{name}_train.jsonl'}"]
    train_tokenizer(iter(texts), vocab_size).save_pretrained(str(folder / "tokenizer"))
    return files


def write_learnable_task(folder: Path, *, train_examples: int = 10000, dev_examples: int = 200,
                         vocab_size: int = 400) -> Path:
    """Write one synthetic task (`train.jsonl`, `dev.jsonl`) and a tiny GPT-2 (2 layers, 64 wide, no
    dropout, `tiny/`) whose tokenizer was trained on its text, into `folder`; return the model's
    folder. The task the QA learning checks (tests/test_qa_script.py) train on."""
    task = SyntheticTask("event")
    train = synthetic_records(task, train_examples, seed=1)
    write_jsonl(folder / "train.jsonl", train)
    write_jsonl(folder / "dev.jsonl", synthetic_records(task, dev_examples, seed=2))
    texts = [r["context"] + " " + r["question"] for r in train] + ["Question: Answer: unanswerable"] * 5
    train_tokenizer(iter(texts), vocab_size).save_pretrained(str(folder / "tokenizer"))
    return build_tiny_model(folder / "tiny", n_layer=2, n_embd=64, n_head=4, n_positions=128, dropout=0.0,
                            tokenizer_path=str(folder / "tokenizer"), seed=0)
