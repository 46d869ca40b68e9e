"""The checkpoint folder one script writes and the next reads by path (DESIGN.md section 6).

A checkpoint is a `save_pretrained` folder (safetensors only) plus the tokenizer files and
`lineage.json`, which records where the weights came from: the script, task, objective and head
of every stage of the chain, each with the sha256 of the weights it produced.

Loading a folder into a head is `utils.models.loading`'s.

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
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from transformers import PreTrainedModel

from utils.models.families import family_of
from utils.models.tokenization import has_tokenizer_files
from utils.run.errors import JSON_TOO_DEEP, CheckpointError
from utils.run.fs import (disk_full_error, is_disk_full, make_shareable, replace_folder, require_free_space,
                          staging_folder)
from utils.run.outputs import utc_now, write_json

logger = logging.getLogger(__name__)

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


# ----------------------------------------------------------------------------- digests

def sha256_file(path: str | os.PathLike, chunk_bytes: int = 1 << 22) -> str:
    """Hex sha256 of a file, read in 4 MiB chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(chunk_bytes), b""):
            digest.update(chunk)
    return digest.hexdigest()


def weight_files(folder: str | os.PathLike) -> list[Path]:
    """The folder's safetensors files: `model.safetensors`, or the shards its index names, in
    file-name order."""
    folder = Path(folder)
    single = folder / WEIGHTS_FILE
    if single.exists():
        return [single]
    index = json.loads((folder / WEIGHTS_INDEX_FILE).read_text(encoding="utf-8"))
    return [folder / shard for shard in sorted(set(index["weight_map"].values()))]


def require_readable_weights(folder: str | os.PathLike) -> None:
    """Open each weights file's safetensors header, which must describe exactly the file's bytes.

    Raises:
        CheckpointError: a file that is missing, cut short or not safetensors at all, so that a
            checkpoint without lineage.json (no recorded sha256 to compare) fails in one line too.
    """
    for path in weight_files(folder):
        try:
            with safe_open(str(path), framework="pt"):
                pass
        except (SafetensorError, OSError) as err:
            raise CheckpointError(f"{path}: not a complete safetensors file ({err}); the weights were cut short "
                                  "or damaged after saving: save the checkpoint again") from None


def weights_sha256(folder: str | os.PathLike) -> str:
    """sha256 of the folder's weights: `model.safetensors`, or the digests of its shards in
    file-name order."""
    files = weight_files(folder)
    if files == [Path(folder) / WEIGHTS_FILE]:
        return sha256_file(files[0])
    digest = hashlib.sha256()
    for shard in files:
        digest.update(sha256_file(shard).encode())
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
             "head": lineage["head"], "sha256": digest,
             # the meta-training algorithm and the stage's training compute, where the stage recorded them
             **{key: lineage[key] for key in ("algorithm", "compute") if key in lineage}}
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
    needed = checkpoint_bytes(model, tokenizer)
    require_free_space(destination.parent, needed, f"saving the checkpoint {destination}")
    staging = staging_folder(destination)
    make_shareable(staging)
    try:
        (staging / INCOMPLETE_MARKER).write_text("save in progress\n", encoding="utf-8")
        # The weights as the model names them: transformers would otherwise undo at saving the renames
        # used at loading (key_mapping: a Llama QA head's backbone is `transformer`, its LM's `model`), and
        # a QA checkpoint would load into plain AutoModelForQuestionAnswering with a random backbone.
        model.save_pretrained(staging, save_original_format=False)
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


def checkpoint_bytes(model: torch.nn.Module, tokenizer: Any = None) -> int:
    """A lower bound of the bytes a checkpoint folder takes: each distinct tensor of the state dict
    once (tied weights are saved once), config.json, and the tokenizer's tokenizer.json as it is
    written (for GPT-2's vocabulary several times the weights of a tiny model), so a save refused
    for it could never have fitted."""
    seen: set[tuple[int, int]] = set()
    total = 0
    for tensor in model.state_dict().values():
        key = (tensor.untyped_storage().data_ptr(), tensor.storage_offset())
        if key not in seen:
            seen.add(key)
            total += tensor.numel() * tensor.element_size()
    total += len(model.config.to_json_string().encode())
    backend = getattr(tokenizer, "backend_tokenizer", None)     # a fast tokenizer: tokenizer.json
    if backend is not None:
        total += len(backend.to_str(pretty=True).encode())
    return total


def _move_into_place(staging: Path, destination: Path) -> None:
    """Replace `destination` by the complete `staging` folder (`replace_folder`), carrying the old
    folder's non-checkpoint files (logs, results, intermediate checkpoints) over."""
    old = replace_folder(staging, destination)
    if old is None:
        return
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
            than those of utils.models.families, PyTorch-pickle weights only, or weights whose sha256 differs from the one
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
    family_of(read_model_config(folder), str(folder))
    if not has_tokenizer_files(folder):
        raise CheckpointError(f"{folder} has no tokenizer files (tokenizer.json, vocab.json + merges.txt, or "
                              "encoder.json + vocab.bpe); save the tokenizer with the model")
    if not (folder / WEIGHTS_FILE).exists() and not (folder / WEIGHTS_INDEX_FILE).exists():
        extra = (" (it has PyTorch pickle weights only; convert them with save_pretrained to "
                 "safetensors)") if any(folder.glob("*.bin")) else ""
        raise CheckpointError(f"{folder} has no {WEIGHTS_FILE}{extra}")
    require_readable_weights(folder)
    lineage = read_lineage(folder)
    digest = weights_sha256(folder)
    if lineage is not None and lineage.get("sha256") and digest != lineage["sha256"]:
        raise CheckpointError(f"{folder}: the weights' sha256 {digest[:12]}... differs from the "
                              f"{lineage['sha256'][:12]}... recorded in {LINEAGE_FILE}; the "
                              "weights were changed or truncated after saving")
    return Provenance(str(folder.resolve()), digest, lineage)


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
