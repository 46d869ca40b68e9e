"""Loading a checkpoint folder or a Hub model into a head, for any family of utils.models.families.

The head class comes from transformers' `Auto*` mappings (causal LM, question answering, sequence
classification) for the model's config. Loading keeps every backbone tensor bit-identical and
creates only the new head; a backbone tensor that is missing, unexpected or of another shape is an
error that names the keys. The backbone is renamed where the family's head classes call it by
different names (Llama-style QA heads), so any head's checkpoint loads into any other head.
"""
from __future__ import annotations

import logging
import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Any, Literal

import torch
from transformers import AutoConfig, AutoTokenizer, PretrainedConfig, PreTrainedModel
from transformers.models.auto.modeling_auto import (MODEL_FOR_CAUSAL_LM_MAPPING, MODEL_FOR_QUESTION_ANSWERING_MAPPING,
                                                    MODEL_FOR_SEQUENCE_CLASSIFICATION_MAPPING)

from utils.models.checkpoint import Provenance, read_model_config, verify_checkpoint_folder
from utils.models.families import (ANY_HEAD_PREFIX, HEAD_PREFIXES, ModelFamily, family_of, key_mapping,
                                   max_positions)
from utils.models.hub import hub_load_failed, hub_reachable, require_hub
from utils.models.tokenization import load_tokenizer
from utils.run.errors import CheckpointError, ToolkitError

logger = logging.getLogger(__name__)

Head = Literal["lm", "qa", "classification"]
HEAD_MAPPINGS: Mapping[str, Any] = MappingProxyType({
    "lm": MODEL_FOR_CAUSAL_LM_MAPPING,
    "qa": MODEL_FOR_QUESTION_ANSWERING_MAPPING,
    "classification": MODEL_FOR_SEQUENCE_CLASSIFICATION_MAPPING,
})
# How many tensors a loading error names: the first few say what is wrong, the rest is noise.
KEYS_SHOWN = 3


@dataclass
class LoadedModel:
    """A model with its head, its tokenizer (pad token set, right padding) and its provenance."""

    model: PreTrainedModel
    tokenizer: Any
    provenance: Provenance
    head: str
    family: ModelFamily


def head_class(config: PretrainedConfig, head: str, source: str) -> type[PreTrainedModel]:
    """The transformers class of `head` for this config (e.g. LlamaForQuestionAnswering).

    Raises:
        CheckpointError: transformers has no such head for the model type.
    """
    try:
        return HEAD_MAPPINGS[head][type(config)]
    except KeyError:
        raise CheckpointError(f"{source}: transformers has no {head} head for {config.model_type} models") from None


def require_positions(length: int, model_config: Any, flag: str, source: str) -> None:
    """Refuse sequences longer than the model's position embeddings (they would fail with an
    IndexError deep inside the forward pass).

    Args:
        length: the longest sequence the run will build (e.g. --max_length).
        model_config: the loaded model's config (its family says which key holds the positions).
        flag: the flag that set `length`, named in the message.
        source: the checkpoint, named in the message.

    Raises:
        ToolkitError: `length` exceeds the model's positions.
    """
    positions = max_positions(model_config)
    if positions is not None and length > positions:
        raise ToolkitError(f"{flag} {length} exceeds the {positions} positions of {source}; use {flag} {positions} "
                           "or less")



def _natural_key(key: str) -> list:
    """Sort key that puts transformer.h.2 before transformer.h.10."""
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", key)]


def _first_keys(keys: list[str]) -> str:
    shown = ", ".join(keys[:KEYS_SHOWN])
    return shown + (f", ... ({len(keys)} tensors)" if len(keys) > KEYS_SHOWN else "")


def _shape(size: Any) -> str:
    return str(tuple(int(n) for n in size))


def check_loading_info(info: dict, head: str, source: str) -> None:
    """Fail unless only head weights were created, dropped or re-initialised.

    With the model family checked first, a backbone tensor that is missing, unexpected or of
    another shape means the checkpoint's config.json does not describe its weights (an edited
    n_layer, n_embd, n_head, ...); the message names the first few tensors and how many there are.

    Raises:
        CheckpointError: a backbone key is missing, unexpected or mismatched.
    """
    target = HEAD_PREFIXES[head]
    missing = sorted((k for k in info.get("missing_keys", ()) if not k.startswith(target)), key=_natural_key)
    unexpected = sorted((k for k in info.get("unexpected_keys", ()) if not k.startswith(ANY_HEAD_PREFIX)),
                        key=_natural_key)
    shapes = {item[0]: item[1:] if isinstance(item, tuple) else () for item in info.get("mismatched_keys", ())}
    mismatched = sorted((k for k in shapes if not k.startswith(target)), key=_natural_key)
    problems = []
    if missing:
        problems.append(f"config.json describes tensors the weights lack: {_first_keys(missing)}")
    if unexpected:
        problems.append(f"the weights hold tensors config.json does not describe: {_first_keys(unexpected)}")
    if mismatched:
        first = mismatched[0]
        shown = (f" ({first}: {_shape(shapes[first][0])} in the weights, {_shape(shapes[first][1])} by "
                 "config.json)") if len(shapes[first]) == 2 else ""
        problems.append(f"tensors of another shape than config.json says: {_first_keys(mismatched)}{shown}")
    if info.get("error_msgs"):
        problems.append(f"loader errors: {'; '.join(map(str, info['error_msgs']))[:300]}")
    if problems:
        raise CheckpointError(f"{source} cannot be loaded into a {head} model without losing weights that are not "
                              f"the head's: " + "; ".join(problems) + ". Was its config.json edited (layers, "
                              "hidden size, heads)? Restore the config.json saved with the weights")


def _head_config(head: str, label_names: tuple[str, ...] | None, regression: bool = False) -> dict[str, Any]:
    if head != "classification":
        return {}
    if regression:
        # One output, read as a score (MSE); problem_type set so the model's own loss agrees.
        return {"num_labels": 1, "id2label": {0: "score"}, "label2id": {"score": 0}, "problem_type": "regression"}
    if not label_names:
        raise ValueError("a classification head needs label_names (or regression=True)")
    return {
        "num_labels": len(label_names),
        "id2label": dict(enumerate(label_names)),
        "label2id": {name: i for i, name in enumerate(label_names)},
        # Inherited from a parent config this could be anything; the target is single-label.
        "problem_type": "single_label_classification",
    }


def is_local_path(name_or_path: str | os.PathLike) -> bool:
    """A local path if it exists or is spelled like one (./x, ../x, /x, ~/x); else a Hub name."""
    text = str(name_or_path)
    return Path(text).expanduser().exists() or text.startswith((".", "/", "~"))


def load_model(name_or_path: str | os.PathLike, head: Head, *, label_names: tuple[str, ...] | None = None,
               local_hint: str = "--model_name PATH_TO_A_LOCAL_CHECKPOINT",
               probe: Callable[[], bool] = hub_reachable, allow_new_lm_head: bool = False,
               regression: bool = False, attn_implementation: str | None = None) -> LoadedModel:
    """Load a checkpoint folder (ours or any `save_pretrained` folder) or a Hub name into a head.

    The new head (if any) is initialised from torch's global generator, so call `set_seed` first.
    The tokenizer comes from the same place; it gets `pad_token = eos_token` when it has none
    (GPT-2 and Llama-style models have none) and right padding, and `model.config.pad_token_id` is
    set to match.

    Args:
        regression: with head "classification", a one-output head for a real-valued target
            (`label_names` unused).
        allow_new_lm_head: with head "lm", accept a checkpoint without LM head weights (a chain
            through a QA or classification head of a family with untied embeddings) and start a
            random one; for uses that never read the LM head (Task2Vec's task objective).
        attn_implementation: transformers' attention ("sdpa", "eager"); None keeps transformers'
            default (sdpa). It is not written into the checkpoint's config.json.

    Raises:
        CheckpointError: the folder is incomplete, holds a model of no known family, loading would
            lose backbone weights (a config.json that disagrees with the weights), or an LM head
            would be random without `allow_new_lm_head`.
        HubUnavailableError: a Hub name without a network.
    """
    if head not in HEAD_MAPPINGS:
        raise ValueError(f"head must be one of {sorted(HEAD_MAPPINGS)}, got {head!r}")
    source = str(name_or_path)
    if is_local_path(source):
        provenance = verify_checkpoint_folder(Path(source).expanduser())
        load_from = provenance.path
    else:
        require_hub(f"model {source!r} (no local folder of that name)", local_hint, probe=probe)
        provenance = Provenance(source, None, None)
        load_from = source
    try:
        raw = read_model_config(load_from) if provenance.sha256 else PretrainedConfig.get_config_dict(load_from)[0]
        family = family_of(raw, source)
        # From the raw dict: a config without model_type (old GPT-2 files) is GPT-2's, as family_of says.
        model_type = raw.get("model_type") or family.model_types[0]
        config = AutoConfig.for_model(model_type, **{k: v for k, v in raw.items() if k != "model_type"})
        cls = head_class(config, head, source)
        # Mismatched shapes are let through here and judged by check_loading_info, which allows
        # them only in the new head (e.g. a classifier with another number of labels).
        model, info = cls.from_pretrained(
            load_from, output_loading_info=True, use_safetensors=True, dtype=torch.float32,
            ignore_mismatched_sizes=True, key_mapping=key_mapping(family, cls.base_model_prefix) or None,
            **({"attn_implementation": attn_implementation} if attn_implementation else {}),
            **_head_config(head, label_names, regression))
        tokenizer = load_tokenizer(load_from) if provenance.sha256 else AutoTokenizer.from_pretrained(load_from)
    except OSError as err:
        if provenance.sha256 is None:
            raise hub_load_failed(f"model {source!r} (no local folder of that name)", local_hint, err) from err
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
    if tokenizer.pad_token is None:
        # GPT-2 and Llama-style tokenizers have no pad token; EOS is safe as pad because attention
        # masks hide padding and classification pools on the last real token.
        tokenizer.pad_token = tokenizer.eos_token
    tokenizer.padding_side = "right"
    model.config.pad_token_id = tokenizer.pad_token_id
    return LoadedModel(model=model, tokenizer=tokenizer, provenance=provenance, head=head, family=family)
