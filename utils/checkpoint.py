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
                          GPT2LMHeadModel, PreTrainedModel)

from utils.errors import CheckpointError
from utils.fs import exchange_paths, make_shareable
from utils.hub import hub_reachable, hub_load_failed, require_hub
from utils.outputs import utc_now, write_json
from utils.tokenization import has_tokenizer_files, load_tokenizer

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
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    _move_into_place(staging, destination)
    logger.info("saved checkpoint %s (weights sha256 %s)", destination, digest[:12])
    return destination


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
        CheckpointError: missing folder or files, an interrupted save, PyTorch-pickle weights only,
            or weights whose sha256 differs from the one lineage.json recorded.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise CheckpointError(f"{folder} is not a folder")
    if (folder / INCOMPLETE_MARKER).exists():
        raise CheckpointError(f"{folder} holds an incomplete checkpoint (an interrupted save); "
                              "delete it and use the previous one")
    if not (folder / "config.json").exists():
        raise CheckpointError(f"{folder} has no config.json: not a checkpoint folder")
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


def check_loading_info(info: dict, head: str, source: str) -> None:
    """Fail unless only head weights were created, dropped or re-initialised.

    Raises:
        CheckpointError: a backbone key is missing, unexpected or mismatched, naming the keys.
    """
    target = HEAD_PREFIXES[head]
    missing = sorted(k for k in info.get("missing_keys", ()) if not k.startswith(target))
    unexpected = sorted(k for k in info.get("unexpected_keys", ()) if not k.startswith(ANY_HEAD_PREFIX))
    mismatched = sorted(item[0] if isinstance(item, tuple) else item
                        for item in info.get("mismatched_keys", ()))
    mismatched = [k for k in mismatched if not k.startswith(target)]
    problems = []
    if missing:
        problems.append(f"missing from the checkpoint (would be random): {missing}")
    if unexpected:
        problems.append(f"in the checkpoint but not in the model (would be dropped): {unexpected}")
    if mismatched:
        problems.append(f"of a different shape: {mismatched}")
    if info.get("error_msgs"):
        problems.append(f"loader errors: {info['error_msgs']}")
    if problems:
        raise CheckpointError(f"loading {source} into a {head} model would lose weights that are not "
                              "the head's: " + "; ".join(problems))


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
        CheckpointError: the folder is incomplete or loading would lose backbone weights.
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
