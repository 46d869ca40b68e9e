"""The checkpoint folder one script writes and the next reads by path (DESIGN.md section 6).

A checkpoint is a `save_pretrained` folder (safetensors only) plus the tokenizer files and
`lineage.json`, which records where the weights came from: the script, task, objective and head
of every stage of the chain, each with the sha256 of the weights it produced.

Loading into a head (`lm`, `qa`, `classification`) keeps every backbone tensor and creates only
the new head; anything else missing, unexpected or mismatched is an error that names the keys.

Saving is atomic: the folder is assembled under a hidden sibling name (marked incomplete until
its lineage.json is written) and then exchanged with the old folder in one step, so an
interrupted save leaves the previous checkpoint where it was and nothing the loader accepts.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import shutil
import tempfile
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Any, Literal

import torch
from transformers import (AutoTokenizer, GPT2ForQuestionAnswering, GPT2ForSequenceClassification,
                          GPT2LMHeadModel, PretrainedConfig, PreTrainedModel)

from utils.run.errors import JSON_TOO_DEEP, CheckpointError, ToolkitError
from utils.run.fs import disk_full_error, exchange_paths, is_disk_full, make_shareable, require_free_space
from utils.models.hub import hub_reachable, hub_load_failed, require_hub
from utils.run.outputs import utc_now, write_json
from utils.models.tokenization import has_tokenizer_files, load_tokenizer

logger = logging.getLogger(__name__)

Head = Literal["lm", "qa", "classification"]
HEAD_CLASSES: Mapping[str, type[PreTrainedModel]] = MappingProxyType({
    "lm": GPT2LMHeadModel,
    "qa": GPT2ForQuestionAnswering,
    "classification": GPT2ForSequenceClassification,
})
HEAD_PREFIXES: Mapping[str, tuple[str, ...]] = MappingProxyType({
    "lm": ("lm_head.",),
    "qa": ("qa_outputs.",),
    "classification": ("score.",),
})
ANY_HEAD_PREFIX = tuple(prefix for prefixes in HEAD_PREFIXES.values() for prefix in prefixes)

SCHEMA_VERSION = 1
LINEAGE_FILE = "lineage.json"
WEIGHTS_FILE = "model.safetensors"
WEIGHTS_INDEX_FILE = "model.safetensors.index.json"
INCOMPLETE_MARKER = ".incomplete"
# Files a save may produce; the rest of an output folder (logs, results, predictions,
# intermediate checkpoints) is carried over when a new checkpoint replaces an old one.
CHECKPOINT_FILES = frozenset({
    "config.json", "generation_config.json", WEIGHTS_FILE, WEIGHTS_INDEX_FILE, "tokenizer.json",
    "tokenizer_config.json", "special_tokens_map.json", "vocab.json", "merges.txt",
    "added_tokens.json", "chat_template.jinja", LINEAGE_FILE, INCOMPLETE_MARKER,
})


@dataclass(frozen=True)
class Provenance:
    """Where loaded weights came from: a folder or Hub name, their digest, their lineage."""

    path: str
    sha256: str | None
    lineage: dict | None


@dataclass
class LoadedModel:
    """A model with its head, its tokenizer (pad token set, right padding) and its provenance."""

    model: PreTrainedModel
    tokenizer: Any
    provenance: Provenance
    head: str


# ----------------------------------------------------------------------------- digests

def sha256_file(path: str | os.PathLike, chunk_bytes: int = 1 << 22) -> str:
    """Hex sha256 of a file, read in 4 MiB chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(chunk_bytes), b""):
            digest.update(chunk)
    return digest.hexdigest()


def weights_sha256(folder: str | os.PathLike) -> str:
    """sha256 of the folder's weights: `model.safetensors`, or the digests of its shards in
    file-name order."""
    folder = Path(folder)
    single = folder / WEIGHTS_FILE
    if single.exists():
        return sha256_file(single)
    index = json.loads((folder / WEIGHTS_INDEX_FILE).read_text(encoding="utf-8"))
    digest = hashlib.sha256()
    for shard in sorted(set(index["weight_map"].values())):
        digest.update(sha256_file(folder / shard).encode())
    return digest.hexdigest()


# ----------------------------------------------------------------------------- lineage

def read_lineage(folder: str | os.PathLike) -> dict | None:
    """The folder's lineage.json, or None for a folder we did not write (e.g. a Hub download).

    Raises:
        CheckpointError: lineage.json exists but is not valid JSON.
    """
    path = Path(folder) / LINEAGE_FILE
    if not path.exists():
        return None
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise CheckpointError(f"{path}: malformed JSON at line {err.lineno}, column {err.colno}") from None
    except RecursionError:
        raise CheckpointError(f"{path}: {JSON_TOO_DEEP}") from None


def build_lineage(*, script: str, task: str | None, objective: str | None, head: str, seed: int | None,
                  parent: Provenance | None, metrics: dict | None = None,
                  extra: dict | None = None) -> dict:
    """The lineage of a checkpoint about to be saved; `save_checkpoint` adds its own digest.

    The chain is the parent's chain (or one `external` entry for weights we did not write, such as
    `gpt2` from the Hub), and saving appends this stage, so it grows by one entry per script.
    """
    if parent is None:
        chain: list[dict] = []
        parent_entry = None
    else:
        parent_entry = {"path": parent.path, "sha256": parent.sha256}
        if parent.lineage is not None:
            chain = list(parent.lineage.get("chain", []))
        else:
            chain = [{"script": "external", "task": None, "objective": None, "path": parent.path,
                      "sha256": parent.sha256}]
    return {
        "schema_version": SCHEMA_VERSION,
        "script": script,
        "task": task,
        "objective": objective,
        "head": head,
        "seed": seed,
        "parent": parent_entry,
        "chain": chain,
        "metrics": metrics or {},
        "created_at": utc_now(),
        **(extra or {}),
    }


def _complete_lineage(lineage: dict, digest: str) -> dict:
    entry = {"script": lineage["script"], "task": lineage["task"], "objective": lineage["objective"],
             "head": lineage["head"], "sha256": digest}
    return {**lineage, "sha256": digest, "chain": [*lineage.get("chain", []), entry]}


# ----------------------------------------------------------------------------- saving

def save_checkpoint(model: PreTrainedModel, tokenizer: Any, output_dir: str | os.PathLike,
                    lineage: dict) -> Path:
    """Write model (safetensors), tokenizer and lineage.json into `output_dir`, atomically.

    Steps: assemble everything in a hidden sibling folder marked incomplete; write lineage.json
    (with the weights' sha256) last and remove the mark; move the old folder aside, move the new
    one into place, carry the old folder's non-checkpoint files (logs, results) over, delete the
    old folder. An interruption before the moves leaves the previous checkpoint untouched.

    Raises:
        ValueError: the tokenizer has no pad token or the model config disagrees with it.
    """
    if tokenizer.pad_token is None or model.config.pad_token_id != tokenizer.pad_token_id:
        raise ValueError("set tokenizer.pad_token and model.config.pad_token_id (equal) before saving")
    destination = Path(output_dir).resolve()
    destination.parent.mkdir(parents=True, exist_ok=True)
    needed = checkpoint_bytes(model)
    require_free_space(destination.parent, needed, f"saving the checkpoint {destination}")
    staging = Path(tempfile.mkdtemp(prefix=f".{destination.name}.partial-", dir=destination.parent))
    make_shareable(staging)
    try:
        (staging / INCOMPLETE_MARKER).write_text("save in progress\n", encoding="utf-8")
        model.save_pretrained(staging)
        tokenizer.save_pretrained(staging)
        for written in staging.iterdir():
            make_shareable(written)  # some writers create private (0600) files
        digest = weights_sha256(staging)
        write_json(staging / LINEAGE_FILE, _complete_lineage(lineage, digest))
        (staging / INCOMPLETE_MARKER).unlink()
    except BaseException as err:
        shutil.rmtree(staging, ignore_errors=True)
        if is_disk_full(err):
            raise disk_full_error(f"saving the checkpoint {destination}", destination.parent, needed) from None
        raise
    _move_into_place(staging, destination)
    logger.info("saved checkpoint %s (weights sha256 %s)", destination, digest[:12])
    return destination


def checkpoint_bytes(model: torch.nn.Module) -> int:
    """The bytes of a checkpoint's weights: each distinct tensor of the state dict once (tied
    weights are saved once). A lower bound of the folder's size (the tokenizer files come on top:
    about 3 MB for GPT-2's), so a save refused for it could never have fitted."""
    seen: set[tuple[int, int]] = set()
    total = 0
    for tensor in model.state_dict().values():
        key = (tensor.untyped_storage().data_ptr(), tensor.storage_offset())
        if key not in seen:
            seen.add(key)
            total += tensor.numel() * tensor.element_size()
    return total


def _move_into_place(staging: Path, destination: Path) -> None:
    """Replace `destination` by the complete `staging` folder, keeping non-checkpoint files.

    Where the system allows it the two folders are exchanged in one atomic step, so there is no
    moment without a complete checkpoint at `destination`. Elsewhere the old folder is renamed
    aside and the new one into place; a failure in between puts the old one back.
    """
    if not destination.exists():
        os.replace(staging, destination)
        return
    if exchange_paths(staging, destination):
        old = staging
    else:
        old = destination.parent / f".{destination.name}.old-{uuid.uuid4().hex[:8]}"
        os.replace(destination, old)
        try:
            os.replace(staging, destination)
        except BaseException:
            os.replace(old, destination)
            raise
    for entry in old.iterdir():
        if entry.name not in CHECKPOINT_FILES and not (destination / entry.name).exists():
            os.replace(entry, destination / entry.name)
    shutil.rmtree(old)


# ----------------------------------------------------------------------------- loading

def verify_checkpoint_folder(folder: str | os.PathLike) -> Provenance:
    """Check that a local folder holds a complete checkpoint; return its digest and lineage
    (the lineage is None for a folder we did not write).

    Raises:
        CheckpointError: missing folder or files, an interrupted save, a model of another family
            than GPT-2, PyTorch-pickle weights only, or weights whose sha256 differs from the one
            lineage.json recorded.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise CheckpointError(f"{folder} is not a folder")
    if (folder / INCOMPLETE_MARKER).exists():
        raise CheckpointError(f"{folder} holds an incomplete checkpoint (an interrupted save); "
                              "delete it and use the previous one")
    if not (folder / "config.json").exists():
        raise CheckpointError(f"{folder} has no config.json: not a checkpoint folder")
    require_gpt2_family(read_model_config(folder), str(folder))
    if not has_tokenizer_files(folder):
        raise CheckpointError(f"{folder} has no tokenizer files (tokenizer.json, vocab.json + merges.txt, or "
                              "encoder.json + vocab.bpe); save the tokenizer with the model")
    if not (folder / WEIGHTS_FILE).exists() and not (folder / WEIGHTS_INDEX_FILE).exists():
        extra = (" (it has PyTorch pickle weights only; convert them with save_pretrained to "
                 "safetensors)") if any(folder.glob("*.bin")) else ""
        raise CheckpointError(f"{folder} has no {WEIGHTS_FILE}{extra}")
    lineage = read_lineage(folder)
    digest = weights_sha256(folder)
    if lineage is not None and lineage.get("sha256") and digest != lineage["sha256"]:
        raise CheckpointError(f"{folder}: the weights' sha256 {digest[:12]}... differs from the "
                              f"{lineage['sha256'][:12]}... recorded in {LINEAGE_FILE}; the "
                              "weights were changed or truncated after saving")
    return Provenance(str(folder.resolve()), digest, lineage)


# The model family every head class here (GPT2LMHeadModel, GPT2For...) is built for.
GPT2_MODEL_TYPE = "gpt2"
# How many tensors a loading error names: the first few say what is wrong, the rest is noise.
KEYS_SHOWN = 3


def read_model_config(folder: str | os.PathLike) -> dict:
    """The folder's config.json as a dict.

    Raises:
        CheckpointError: config.json is not a JSON object.
    """
    path = Path(folder) / "config.json"
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError, RecursionError) as err:
        raise CheckpointError(f"{path}: not a readable model config ({type(err).__name__}); restore the "
                              "config.json saved with the weights") from None
    if not isinstance(config, dict):
        raise CheckpointError(f"{path}: expected a JSON object, got {type(config).__name__}")
    return config


def require_gpt2_family(config: Mapping[str, Any], source: str) -> None:
    """Refuse a model of another family before its weights are loaded into a GPT-2 head (which
    would otherwise fail with a list of every tensor).

    A config without `model_type` (very old files) is let through; the weights check follows.

    Raises:
        CheckpointError: `model_type` is not gpt2.
    """
    model_type = config.get("model_type")
    if model_type is not None and model_type != GPT2_MODEL_TYPE:
        raise CheckpointError(f"{source} holds a {model_type} model; the toolkit reads causal LMs of the GPT-2 "
                              f"family (model_type {GPT2_MODEL_TYPE}): give 'gpt2', a GPT-2 checkpoint folder "
                              "or a folder written by one of the toolkit's scripts")


def require_positions(length: int, model_config: Any, flag: str, source: str) -> None:
    """Refuse sequences longer than the model's position embeddings (they would fail with an
    IndexError deep inside the forward pass).

    Args:
        length: the longest sequence the run will build (e.g. --max_length).
        model_config: the loaded model's config (`n_positions`, or `max_position_embeddings`).
        flag: the flag that set `length`, named in the message.
        source: the checkpoint, named in the message.

    Raises:
        ToolkitError: `length` exceeds the model's positions.
    """
    positions = getattr(model_config, "n_positions", None) or getattr(model_config, "max_position_embeddings", None)
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
                              f"the head's: " + "; ".join(problems) + ". Was its config.json edited (n_layer, "
                              "n_embd, n_head)? Restore the config.json saved with the weights")


def _head_config(head: str, label_names: tuple[str, ...] | None) -> dict[str, Any]:
    if head != "classification":
        return {}
    if not label_names:
        raise ValueError("a classification head needs label_names")
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
               probe: Callable[[], bool] = hub_reachable) -> LoadedModel:
    """Load a checkpoint folder (ours or any `save_pretrained` folder) or a Hub name into a head.

    The new head (if any) is initialised from torch's global generator, so call `set_seed` first.
    The tokenizer comes from the same place; it gets `pad_token = eos_token` when it has none
    (GPT-2 has none) and right padding, and `model.config.pad_token_id` is set to match.

    Raises:
        CheckpointError: the folder is incomplete, holds a model of another family than GPT-2, or
            loading would lose backbone weights (a config.json that disagrees with the weights).
        HubUnavailableError: a Hub name without a network.
    """
    if head not in HEAD_CLASSES:
        raise ValueError(f"head must be one of {sorted(HEAD_CLASSES)}, got {head!r}")
    source = str(name_or_path)
    if is_local_path(source):
        provenance = verify_checkpoint_folder(Path(source).expanduser())
        load_from = provenance.path
    else:
        require_hub(f"model {source!r} (no local folder of that name)", local_hint, probe=probe)
        provenance = Provenance(source, None, None)
        load_from = source
    try:
        if provenance.sha256 is None:  # a Hub model: its family is checked as a local folder's is
            require_gpt2_family(PretrainedConfig.get_config_dict(load_from)[0], source)
        # Mismatched shapes are let through here and judged by check_loading_info, which allows
        # them only in the new head (e.g. a classifier with another number of labels).
        model, info = HEAD_CLASSES[head].from_pretrained(
            load_from, output_loading_info=True, use_safetensors=True, dtype=torch.float32,
            ignore_mismatched_sizes=True, **_head_config(head, label_names))
        tokenizer = load_tokenizer(load_from) if provenance.sha256 else AutoTokenizer.from_pretrained(load_from)
    except OSError as err:
        if provenance.sha256 is None:
            raise hub_load_failed(f"model {source!r} (no local folder of that name)", local_hint, err) from err
        raise CheckpointError(f"{source}: {err}") from err
    check_loading_info(info, head, source)
    if len(tokenizer) > model.config.vocab_size:
        raise CheckpointError(f"{source}: the tokenizer has {len(tokenizer)} tokens but the model's vocabulary "
                              f"has {model.config.vocab_size}; they do not belong together")
    logger.info("loaded %s into a %s head%s", source, head,
                f" (new: {sorted(info['missing_keys'])})" if info.get("missing_keys") else "")
    if tokenizer.pad_token is None:
        # GPT-2 has no pad token; EOS is safe as pad because attention masks hide padding and
        # classification pools on the last non-pad token.
        tokenizer.pad_token = tokenizer.eos_token
    tokenizer.padding_side = "right"
    model.config.pad_token_id = tokenizer.pad_token_id
    return LoadedModel(model=model, tokenizer=tokenizer, provenance=provenance, head=head)
