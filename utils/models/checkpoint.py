"""The checkpoint folder one script writes and the next reads by path: a `save_pretrained` folder
(safetensors only), the tokenizer files and `lineage.json` (script, task, objective, head and weights'
sha256 of every stage of the chain). Saving is atomic: the folder is assembled under a hidden sibling
name (marked incomplete until lineage.json is written) and then renamed into place.
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
from utils.run.errors import JSON_TOO_DEEP, CheckpointError
from utils.run.outputs import (disk_full_error, is_disk_full, make_shareable, replace_folder, require_free_space,
                               staging_folder, utc_now, write_json)

logger = logging.getLogger(__name__)

SCHEMA_VERSION = 1
LINEAGE_FILE = "lineage.json"
WEIGHTS_FILE = "model.safetensors"
WEIGHTS_INDEX_FILE = "model.safetensors.index.json"
INCOMPLETE_MARKER = ".incomplete"
# Files a save may produce; the rest of an output folder (logs, results, predictions,
# intermediate checkpoints) is carried over when a new checkpoint replaces an old one.
CHECKPOINT_FILES = frozenset({"config.json", "generation_config.json", WEIGHTS_FILE, WEIGHTS_INDEX_FILE,
                              "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "vocab.json",
                              "merges.txt", "added_tokens.json", "chat_template.jinja", LINEAGE_FILE, INCOMPLETE_MARKER})


@dataclass(frozen=True)
class Provenance:
    """Where loaded weights came from: a folder or Hub name, their digest, their lineage."""

    path: str
    sha256: str | None
    lineage: dict | None


def sha256_file(path: str | os.PathLike) -> str:
    """Hex sha256 of a file."""
    with open(path, "rb") as handle:
        return hashlib.file_digest(handle, "sha256").hexdigest()


def weights_sha256(folder: str | os.PathLike) -> str:
    """sha256 of `model.safetensors`, or of the digests of its shards in file-name order; a
    CheckpointError for a weights file that is missing, cut short or not safetensors (its header must
    describe exactly its bytes), so a folder without a recorded sha256 fails in one line too."""
    folder = Path(folder)
    if (folder / WEIGHTS_FILE).exists():
        files = [folder / WEIGHTS_FILE]
    else:
        index = json.loads((folder / WEIGHTS_INDEX_FILE).read_text(encoding="utf-8"))
        files = [folder / shard for shard in sorted(set(index["weight_map"].values()))]
    for path in files:
        try:
            with safe_open(str(path), framework="pt"):
                pass
        except (SafetensorError, OSError) as err:
            raise CheckpointError(f"{path}: not a complete safetensors file ({err}); the weights were cut short "
                                  "or damaged after saving: save the checkpoint again") from None
    if files == [folder / WEIGHTS_FILE]:
        return sha256_file(files[0])
    return hashlib.sha256("".join(sha256_file(shard) for shard in files).encode()).hexdigest()


def read_lineage(folder: str | os.PathLike) -> dict | None:
    """The folder's lineage.json, or None for a folder we did not write (a Hub download)."""
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
                  parent: Provenance | None, metrics: dict | None = None, extra: dict | None = None) -> dict:
    """The lineage of a checkpoint about to be saved: the parent's chain (or one `external` entry for
    weights we did not write, such as `gpt2` from the Hub), to which saving appends this stage."""
    chain = [] if parent is None else list(parent.lineage.get("chain", [])) if parent.lineage is not None else \
        [{"script": "external", "task": None, "objective": None, "path": parent.path, "sha256": parent.sha256}]
    return {"schema_version": SCHEMA_VERSION, "script": script, "task": task, "objective": objective, "head": head,
            "seed": seed, "parent": None if parent is None else {"path": parent.path, "sha256": parent.sha256},
            "chain": chain, "metrics": metrics or {}, "created_at": utc_now(), **(extra or {})}


def save_checkpoint(model: PreTrainedModel, tokenizer: Any, output_dir: str | os.PathLike,
                    lineage: dict) -> Path:
    """Write model (safetensors), tokenizer and lineage.json (with the weights' sha256, last) into
    `output_dir`, atomically (module docstring); the old folder's other files (logs, results) are kept."""
    if tokenizer.pad_token is None or model.config.pad_token_id != tokenizer.pad_token_id:
        raise ValueError("set tokenizer.pad_token and model.config.pad_token_id (equal) before saving")
    destination = Path(output_dir).resolve()
    destination.parent.mkdir(parents=True, exist_ok=True)
    needed = checkpoint_bytes(model, tokenizer)
    require_free_space(destination.parent, needed, f"saving the checkpoint {destination}")
    staging = staging_folder(destination)
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
        entry = {"script": lineage["script"], "task": lineage["task"], "objective": lineage["objective"],
                 "head": lineage["head"], "sha256": digest,
                 # the meta-training algorithm and the stage's training compute, where the stage recorded them
                 **{key: lineage[key] for key in ("algorithm", "compute") if key in lineage}}
        write_json(staging / LINEAGE_FILE, {**lineage, "sha256": digest, "chain": [*lineage.get("chain", []), entry]})
        (staging / INCOMPLETE_MARKER).unlink()
    except BaseException as err:
        shutil.rmtree(staging, ignore_errors=True)
        if is_disk_full(err):
            raise disk_full_error(f"saving the checkpoint {destination}", destination.parent, needed) from None
        raise
    old = replace_folder(staging, destination)
    if old is not None:     # carry the old folder's other files (logs, results, intermediate checkpoints) over
        for entry in old.iterdir():
            if entry.name not in CHECKPOINT_FILES and not (destination / entry.name).exists():
                os.replace(entry, destination / entry.name)
        shutil.rmtree(old)
    logger.info("saved checkpoint %s (weights sha256 %s)", destination, digest[:12])
    return destination


def checkpoint_bytes(model: torch.nn.Module, tokenizer: Any = None) -> int:
    """A lower bound of a checkpoint folder's bytes, so a save refused for it could never have fitted:
    each distinct tensor once (tied weights are saved once), config.json, and tokenizer.json."""
    sizes = {(tensor.untyped_storage().data_ptr(), tensor.storage_offset()): tensor.numel() * tensor.element_size()
             for tensor in model.state_dict().values()}
    backend = getattr(tokenizer, "backend_tokenizer", None)     # a fast tokenizer: tokenizer.json
    return sum(sizes.values()) + len(model.config.to_json_string().encode()) + \
        (len(backend.to_str(pretty=True).encode()) if backend is not None else 0)


def has_tokenizer_files(folder: Path) -> bool:
    """Whether a folder holds tokenizer.json, vocab.json + merges.txt, or OpenAI's encoder.json + vocab.bpe."""
    return (folder / "tokenizer.json").exists() or any(
        all((folder / name).exists() for name in names) for names in (("vocab.json", "merges.txt"),
                                                                      ("encoder.json", "vocab.bpe")))


def verify_checkpoint_folder(folder: str | os.PathLike) -> Provenance:
    """Check that a local folder holds a complete checkpoint (else a CheckpointError saying what is
    missing or wrong); return its digest and lineage."""
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
    digest = weights_sha256(folder)
    lineage = read_lineage(folder)
    if lineage is not None and lineage.get("sha256") and digest != lineage["sha256"]:
        raise CheckpointError(f"{folder}: the weights' sha256 {digest[:12]}... differs from the "
                              f"{lineage['sha256'][:12]}... recorded in {LINEAGE_FILE}; the "
                              "weights were changed or truncated after saving")
    return Provenance(str(folder.resolve()), digest, lineage)


def read_model_config(folder: str | os.PathLike) -> dict:
    """The folder's config.json as a dict, or a CheckpointError when it is not a readable JSON object."""
    path = Path(folder) / "config.json"
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError, RecursionError) as err:
        raise CheckpointError(f"{path}: not a readable model config ({type(err).__name__}); restore the "
                              "config.json saved with the weights") from None
    if not isinstance(config, dict):
        raise CheckpointError(f"{path}: expected a JSON object, got {type(config).__name__}")
    return config
