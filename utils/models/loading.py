"""Loading a checkpoint folder or a Hub model, with its tokenizer, into a causal LM, QA or classification
head of any family: every backbone tensor arrives bit-identical and only the new head is created.
Tokenizers are fast (character offsets), with EOS as pad and right padding.
"""
from __future__ import annotations

import logging
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch
from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers, processors
from transformers import AutoConfig, AutoTokenizer, PretrainedConfig, PreTrainedModel, PreTrainedTokenizerFast
from transformers.models.auto.modeling_auto import (MODEL_FOR_CAUSAL_LM_MAPPING, MODEL_FOR_QUESTION_ANSWERING_MAPPING,
                                                    MODEL_FOR_SEQUENCE_CLASSIFICATION_MAPPING)

from utils.data.loading import hub_unavailable
from utils.models.checkpoint import Provenance, has_tokenizer_files, read_model_config, verify_checkpoint_folder
from utils.models.families import ANY_HEAD_PREFIX, HEAD_PREFIXES, ModelFamily, family_of, key_mapping, max_positions
from utils.run.errors import CheckpointError, ToolkitError

logger = logging.getLogger(__name__)

Head = Literal["lm", "qa", "classification"]
HEAD_MAPPINGS = {"lm": MODEL_FOR_CAUSAL_LM_MAPPING, "qa": MODEL_FOR_QUESTION_ANSWERING_MAPPING,
                 "classification": MODEL_FOR_SEQUENCE_CLASSIFICATION_MAPPING}
END_OF_TEXT = "<|endoftext|>"


def gpt2_style_backend(model: models.Model) -> Tokenizer:
    """GPT-2's byte-level pipeline around `model`: no prefix space, untrimmed offsets (a word's
    offsets include its leading space)."""
    backend = Tokenizer(model)
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    backend.post_processor = processors.ByteLevel(trim_offsets=False)
    return backend


def wrap_backend(backend: Tokenizer) -> PreTrainedTokenizerFast:
    """A transformers tokenizer around `backend`, with GPT-2's special tokens and padding."""
    backend.add_special_tokens([AddedToken(END_OF_TEXT, special=True, normalized=False)])
    return PreTrainedTokenizerFast(tokenizer_object=backend, bos_token=END_OF_TEXT, eos_token=END_OF_TEXT,
                                   unk_token=END_OF_TEXT, pad_token=END_OF_TEXT, model_max_length=1024,
                                   padding_side="right")


def load_tokenizer(path: str | os.PathLike) -> PreTrainedTokenizerFast:
    """A fast GPT-2-style tokenizer from a Hugging Face folder or OpenAI's encoder.json + vocab.bpe."""
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
    return _pad_right(tokenizer)


def _pad_right(tokenizer: Any) -> Any:
    # GPT-2 and Llama-style tokenizers have no pad token; EOS is safe as pad because attention masks
    # hide padding and classification pools on the last real token.
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    tokenizer.padding_side = "right"
    return tokenizer


def truncation_note(name: str, cut: int, total: int, max_tokens: int, unit: str = "sentences") -> str | None:
    """"NAME: CUT of TOTAL sentences were cut to MAX tokens", or None when none was (the tokenizer's
    own warning is silenced: it fires on the long contexts QA windows on purpose)."""
    return f"{name}: {cut} of {total} {unit} were cut to {max_tokens} tokens" if cut else None


@dataclass
class LoadedModel:
    """A model with its head, its tokenizer (pad token set, right padding) and its provenance."""

    model: PreTrainedModel
    tokenizer: Any
    provenance: Provenance
    head: str
    family: ModelFamily


def require_positions(length: int, model_config: Any, flag: str, source: str) -> None:
    """Refuse sequences longer than the model's positions (they would fail deep inside the forward pass)."""
    positions = max_positions(model_config)
    if positions is not None and length > positions:
        raise ToolkitError(f"{flag} {length} exceeds the {positions} positions of {source}; use {flag} {positions} "
                           "or less")


def check_loading_info(info: dict, head: str, source: str) -> None:
    """Fail unless only head weights were created, dropped or re-initialised: with the family checked
    first, a backbone tensor missing, unexpected or of another shape means config.json does not
    describe the weights (an edited n_layer, n_embd, n_head, ...)."""
    def natural(keys: Any) -> list[str]:     # transformer.h.2 before transformer.h.10
        return sorted(keys, key=lambda key: [int(p) if p.isdigit() else p for p in re.split(r"(\d+)", key)])

    def first(keys: list[str], shown: int = 3) -> str:    # the first few say what is wrong, the rest is noise
        return ", ".join(keys[:shown]) + (f", ... ({len(keys)} tensors)" if len(keys) > shown else "")

    target = HEAD_PREFIXES[head]
    missing = natural(k for k in info.get("missing_keys", ()) if not k.startswith(target))
    unexpected = natural(k for k in info.get("unexpected_keys", ()) if not k.startswith(ANY_HEAD_PREFIX))
    shapes = {item[0]: item[1:] if isinstance(item, tuple) else () for item in info.get("mismatched_keys", ())}
    mismatched = natural(k for k in shapes if not k.startswith(target))
    problems = []
    if missing:
        problems.append(f"config.json describes tensors the weights lack: {first(missing)}")
    if unexpected:
        problems.append(f"the weights hold tensors config.json does not describe: {first(unexpected)}")
    if mismatched:
        sizes = shapes[mismatched[0]]
        shown = (f" ({mismatched[0]}: {tuple(int(n) for n in sizes[0])} in the weights, "
                 f"{tuple(int(n) for n in sizes[1])} by config.json)") if len(sizes) == 2 else ""
        problems.append(f"tensors of another shape than config.json says: {first(mismatched)}{shown}")
    if info.get("error_msgs"):
        problems.append(f"loader errors: {'; '.join(map(str, info['error_msgs']))[:300]}")
    if problems:
        raise CheckpointError(f"{source} cannot be loaded into a {head} model without losing weights that are not "
                              f"the head's: " + "; ".join(problems) + ". Was its config.json edited (layers, "
                              "hidden size, heads)? Restore the config.json saved with the weights")


def _head_config(head: str, label_names: tuple[str, ...] | None, regression: bool) -> dict[str, Any]:
    if head != "classification":
        return {}
    if regression:
        # One output, read as a score (MSE); problem_type set so the model's own loss agrees.
        return {"num_labels": 1, "id2label": {0: "score"}, "label2id": {"score": 0}, "problem_type": "regression"}
    if not label_names:
        raise ValueError("a classification head needs label_names (or regression=True)")
    # problem_type: inherited from a parent config it could be anything; the target is single-label.
    return {"num_labels": len(label_names), "id2label": dict(enumerate(label_names)),
            "label2id": {name: i for i, name in enumerate(label_names)}, "problem_type": "single_label_classification"}


def load_model(name_or_path: str | os.PathLike, head: Head, *, label_names: tuple[str, ...] | None = None,
               local_hint: str = "--model_name PATH_TO_A_LOCAL_CHECKPOINT", allow_new_lm_head: bool = False,
               regression: bool = False, attn_implementation: str | None = None) -> LoadedModel:
    """Load a checkpoint folder (ours or any `save_pretrained` folder) or a Hub name into a head.

    The new head (if any) is initialised from torch's global generator, so call `set_seed` first.
    The tokenizer comes from the same place, and `model.config.pad_token_id` is set to match.

    Args:
        regression: with head "classification", a one-output head for a real-valued target.
        allow_new_lm_head: with head "lm", start a random LM head where the checkpoint has none (a
            chain through another head, untied embeddings), for uses that never read it (Task2Vec).
        attn_implementation: transformers' attention ("sdpa", "eager"); None keeps its default.
    """
    if head not in HEAD_MAPPINGS:
        raise ValueError(f"head must be one of {sorted(HEAD_MAPPINGS)}, got {head!r}")
    source = str(name_or_path)
    # A local path if it exists or is spelled like one (./x, ../x, /x, ~/x); else a Hub name.
    local = Path(source).expanduser().exists() or source.startswith((".", "/", "~"))
    provenance = verify_checkpoint_folder(Path(source).expanduser()) if local else Provenance(source, None, None)
    try:
        raw = read_model_config(provenance.path) if local else PretrainedConfig.get_config_dict(source)[0]
        family = family_of(raw, source)
        # From the raw dict: a config without model_type (old GPT-2 files) is GPT-2's, as family_of says.
        config = AutoConfig.for_model(raw.get("model_type") or family.model_types[0],
                                      **{k: v for k, v in raw.items() if k != "model_type"})
        cls = HEAD_MAPPINGS[head].get(type(config), None)
        if cls is None:
            raise CheckpointError(f"{source}: transformers has no {head} head for {config.model_type} models")
        # Mismatched shapes are let through here and judged by check_loading_info, which allows
        # them only in the new head (e.g. a classifier with another number of labels).
        model, info = cls.from_pretrained(
            provenance.path, output_loading_info=True, use_safetensors=True, dtype=torch.float32,
            ignore_mismatched_sizes=True, key_mapping=key_mapping(family, cls.base_model_prefix) or None,
            **({"attn_implementation": attn_implementation} if attn_implementation else {}),
            **_head_config(head, label_names, regression))
        tokenizer = load_tokenizer(provenance.path) if local else AutoTokenizer.from_pretrained(source)
    except OSError as err:
        if not local:
            raise hub_unavailable(f"model {source!r} (no local folder of that name)", local_hint, err) from err
        raise CheckpointError(f"{source}: {err}") from err
    check_loading_info(info, head, source)
    new_lm_head = sorted(k for k in info.get("missing_keys", ()) if k.startswith(HEAD_PREFIXES["lm"]))
    if head == "lm" and new_lm_head and not allow_new_lm_head:
        raise CheckpointError(f"{source} has no LM head weights ({new_lm_head[0]}): its chain went through a QA or "
                              f"classification head, and {family.name} models do not tie the LM head to the "
                              "embeddings, so an LM head here would be random. Use the span objective (or "
                              "Task2Vec's task objective), or a checkpoint saved with its LM head")
    if len(tokenizer) > model.config.vocab_size:
        raise CheckpointError(f"{source}: the tokenizer has {len(tokenizer)} tokens but the model's vocabulary "
                              f"has {model.config.vocab_size}; they do not belong together")
    logger.info("loaded %s (%s family) into a %s head%s", source, family.name, head,
                f" (new: {sorted(info['missing_keys'])})" if info.get("missing_keys") else "")
    model.config.pad_token_id = _pad_right(tokenizer).pad_token_id
    return LoadedModel(model=model, tokenizer=tokenizer, provenance=provenance, head=head, family=family)
