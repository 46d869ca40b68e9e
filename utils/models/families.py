"""Model families: one small backbone adapter per family of causal LMs; the rest goes through `Auto*`.

A family says what a config alone does not: `body_names`, the backbone's attribute in its head
classes (Llama-style: `model` in the LM and classifier, `transformer` in the QA head, hence
`key_mapping`); `lm_head_prefixes`; `positions_keys`; and `structural_zero_bias`, the attention-bias
coordinates the loss cannot depend on (task2vec.embedding leaves them out).

    family     model types                      body        norms      weights
    gpt2       gpt2                             transformer LayerNorm  Conv1D, learned positions
    gpt_neo    gpt_neo                          transformer LayerNorm  Linear, learned positions
    gpt_neox   gpt_neox (Pythia)                gpt_neox    LayerNorm  Linear, (partial) rotary
    llama      llama (SmolLM), qwen2, qwen3,    model /     RMSNorm    Linear, rotary, tied or untied
               mistral                          transformer            embeddings, no pad token
"""
from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from utils.run.errors import CheckpointError

if TYPE_CHECKING:  # torch is not imported here: the commands' flag parsing reads FAMILIES before torch loads
    from torch import nn

# [start, end) ranges of a bias vector's coordinates.
Ranges = tuple[tuple[int, int], ...]


def _gpt2_key_bias(model: nn.Module, module_name: str) -> Ranges:
    """GPT-2's fused `c_attn` bias is [query | key | value], each `split_size` wide: the key part."""
    parent_name, _, child = module_name.rpartition(".")
    if child != "c_attn":
        return ()
    parent = model.get_submodule(parent_name)
    split = getattr(parent, "split_size", None)
    if split is None or getattr(parent, "is_cross_attention", False):
        return ()
    width = model.get_submodule(module_name).bias.shape[0]
    return ((split, 2 * split),) if width == 3 * split else ()


def _neox_unrotated_key_bias(model: nn.Module, module_name: str) -> Ranges:
    """GPT-NeoX's fused `query_key_value` bias is, per head h, [q_h | k_h | v_h] of `head_size` each.
    Rotary positions turn only the first dimensions of q and k: as many as the cos/sin tables are wide,
    2 * ceil(rotary_ndims / 2) (one inverse frequency per pair); in the others the key bias adds q_i·b
    to every logit of query i, which the softmax ignores. Those coordinates, per head."""
    parent_name, _, child = module_name.rpartition(".")
    if child != "query_key_value":
        return ()
    attention = model.get_submodule(parent_name)
    head_size, rotary = getattr(attention, "head_size", None), getattr(attention, "rotary_ndims", None)
    if head_size is None or rotary is None:
        return ()
    rotary = 2 * ((rotary + 1) // 2)
    if rotary >= head_size:
        return ()
    heads = model.get_submodule(module_name).bias.shape[0] // (3 * head_size)
    return tuple((h * 3 * head_size + head_size + rotary, h * 3 * head_size + 2 * head_size) for h in range(heads))


@dataclass(frozen=True)
class ModelFamily:
    """What the toolkit needs to know about one family of causal LMs (module docstring)."""

    name: str
    model_types: tuple[str, ...]
    body_names: tuple[str, ...]
    lm_head_prefixes: tuple[str, ...]
    positions_keys: tuple[str, ...]
    structural_zero_bias: Callable[[nn.Module, str], Ranges] = lambda model, module_name: ()


FAMILIES: Mapping[str, ModelFamily] = {family.name: family for family in (
    ModelFamily("gpt2", ("gpt2",), ("transformer",), ("lm_head.",), ("n_positions",), _gpt2_key_bias),
    ModelFamily("gpt_neo", ("gpt_neo",), ("transformer",), ("lm_head.",), ("max_position_embeddings",)),
    # GPT-NeoX's LM head is `embed_out` on disk (Pythia) and `lm_head` in transformers 5's model.
    ModelFamily("gpt_neox", ("gpt_neox",), ("gpt_neox",), ("embed_out.", "lm_head."), ("max_position_embeddings",),
                _neox_unrotated_key_bias),
    ModelFamily("llama", ("llama", "qwen2", "qwen3", "mistral"), ("model", "transformer"), ("lm_head.",),
                ("max_position_embeddings",)),
)}
MODEL_TYPES: Mapping[str, ModelFamily] = {t: family for family in FAMILIES.values() for t in family.model_types}
# Head weights of every head class of every family: never backbone tensors.
HEAD_PREFIXES: Mapping[str, tuple[str, ...]] = {
    "lm": tuple(sorted({p for family in FAMILIES.values() for p in family.lm_head_prefixes})),
    "qa": ("qa_outputs.",), "classification": ("score.",)}
ANY_HEAD_PREFIX = tuple(prefix for prefixes in HEAD_PREFIXES.values() for prefix in prefixes)


def family_of(config: Mapping[str, Any] | Any, source: str) -> ModelFamily:
    """The family of a model config (a config.json dict or a `PretrainedConfig`); a config without
    `model_type` (very old GPT-2 files) is GPT-2's, one no family covers a CheckpointError."""
    model_type = config.get("model_type") if isinstance(config, Mapping) else getattr(config, "model_type", None)
    if model_type is None:
        return FAMILIES["gpt2"]
    if model_type not in MODEL_TYPES:
        known = ", ".join(f"{f.name} ({'/'.join(f.model_types)})" for f in FAMILIES.values())
        raise CheckpointError(f"{source} holds a {model_type} model; the toolkit reads causal LMs of the families "
                              f"{known}: give a folder or Hub name of one of those, or a folder written by one of "
                              "the toolkit's scripts")
    return MODEL_TYPES[model_type]


def backbone(model: nn.Module) -> nn.Module:
    """The body (embeddings, blocks, final norm) of a head model, unwrapped from DDP if needed."""
    core = model.module if hasattr(model, "module") else model
    return getattr(core, core.base_model_prefix)


def max_positions(config: Any) -> int | None:
    """The longest sequence a model config allows (its family's key first), or None when it names none."""
    keys = (*family_of(config, "the model").positions_keys, "n_positions", "max_position_embeddings")
    return next((int(getattr(config, key)) for key in keys if getattr(config, key, None)), None)


def key_mapping(family: ModelFamily, body_name: str) -> dict[str, str]:
    """Checkpoint-key renames (regex -> replacement, `from_pretrained(key_mapping=...)`) that give
    the backbone the name `body_name` a head class expects, whatever head saved it."""
    return {rf"^{other}\.": f"{body_name}." for other in family.body_names if other != body_name}


def backbone_key(family: ModelFamily, key: str) -> str | None:
    """A state-dict key with the body's name removed ("layers.0.mlp.up_proj.weight"), or None for a
    head tensor: backbone tensors of two head models of one family compare under this key."""
    return next((key[len(name) + 1:] for name in family.body_names if key.startswith(name + ".")), None)
