"""Loading a task's data from wherever it is, through the right adapter.

Sources, in order of preference (DESIGN.md section 5): an explicit local file (the dataset's
original format, canonical JSON lines, a JSON array or JSON lines of Hub-schema rows, a GLUE TSV or
a CSV) or a `datasets` save_to_disk folder; otherwise the task's Hugging Face Hub dataset.

The command line over this module, `python -m utils.data`, is in `utils.data.cli`.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from utils.data.adapters import AdapterStats, adapt_canonical_classification, adapt_canonical_qa
from utils.data.classification_adapters import adapt_classification_rows, adapt_table, resolve_columns
from utils.data.drop_adapters import adapt_drop_json, adapt_drop_rows
from utils.data.duorc_adapters import adapt_duorc_json, adapt_duorc_rows
from utils.data.squad_adapters import adapt_squad_json, adapt_squad_rows
from utils.run.errors import JSON_TOO_DEEP, DataError, ToolkitError
from utils.models.hub import hub_reachable, hub_load_failed, require_hub
from utils.data.records import has_training_span, read_jsonl
from utils.data.registry import SPLITS, TaskSpec, get_task

logger = logging.getLogger(__name__)

DEFAULT_LOCAL_HINT = "--train_file / --validation_file"
JSON_LINES = object()  # read_json's answer for a .json file that holds JSON lines
# Which original file layouts each adapter family reads (JSON lines, JSON rows and saved
# datasets are accepted by every family).
_NATIVE_FORMATS = {
    "squad": ("squad_json",), "quoref": ("squad_json",), "mlqa": ("squad_json",),
    "duorc": ("duorc_json",), "drop": ("drop_json",), "glue": ("tsv", "csv"),
}
_FORMAT_DESCRIPTIONS = {
    "squad_json": "SQuAD JSON (data -> paragraphs -> qas)",
    "duorc_json": "DuoRC JSON (a list of movies with plot and qa)",
    "drop_json": "DROP JSON (passage ids -> passage, qa_pairs)",
    "tsv": "a GLUE TSV", "csv": "a CSV table",
}


@dataclass(frozen=True)
class TaskData:
    """Canonical records of one split of one task, and what the adapter did to get them.

    `records` holds every question of the source (what evaluation scores); `span_records()` the
    QA questions a span objective can learn from.
    """

    spec: TaskSpec
    split: str
    records: list[dict]
    stats: AdapterStats

    @property
    def label_names(self) -> tuple[str, ...] | None:
        """Class names of a classification task (index = label), None for QA."""
        return self.spec.label_names

    def span_records(self) -> list[dict]:
        """QA records with a located answer or no answer at all (every record of a classification
        task): what span training and the Task2Vec probe rows use."""
        if self.spec.kind != "qa":
            return list(self.records)
        return [record for record in self.records if has_training_span(record)]


# ----------------------------------------------------------------------------- reading files

def read_json(path: Path) -> Any:
    """Parse a JSON file (or return JSON_LINES when it holds one JSON value per line).

    Raises:
        DataError: the file is not valid JSON (the message gives line, column and character), not
            UTF-8, or nested too deeply to parse.
    """
    try:
        with open(path, encoding="utf-8-sig") as handle:  # -sig: a byte-order mark is skipped, not an error
            return json.load(handle)
    except json.JSONDecodeError as err:
        if err.msg == "Extra data" and err.lineno > 1 and err.colno == 1:
            # `Dataset.to_json("x.json")` writes JSON lines under a .json name.
            return JSON_LINES
        raise DataError(f"malformed JSON at line {err.lineno}, column {err.colno} "
                        f"(character {err.pos}): {err.msg}", file=str(path)) from None
    except UnicodeDecodeError as err:
        raise DataError(f"not UTF-8 text (byte {err.start})", file=str(path)) from None
    except RecursionError:
        raise DataError(JSON_TOO_DEEP, file=str(path)) from None


def detect_format(path: Path, payload: Any = None) -> str:
    """Name the layout of a local data source from its suffix and, for JSON, its structure."""
    if path.is_dir():
        markers = ("dataset_info.json", "state.json", "dataset_dict.json")
        if any((path / marker).exists() for marker in markers):
            return "saved_dataset"
        raise DataError("is a folder but not a `datasets` save_to_disk folder (no dataset_info.json, "
                        "state.json or dataset_dict.json)", file=str(path))
    suffix = path.suffix.lower()
    if suffix in (".tsv", ".csv", ".jsonl"):
        return suffix[1:]
    if suffix != ".json":
        raise DataError(f"unsupported file type {suffix or '(none)'}: use .json (the dataset's original "
                        "format), .jsonl (canonical records or Hub rows), .tsv, .csv, or a "
                        "save_to_disk folder", file=str(path))
    if isinstance(payload, dict) and isinstance(payload.get("data"), list):
        return "squad_json"
    if isinstance(payload, list) and payload and isinstance(payload[0], dict) and "plot" in payload[0] \
            and "qa" in payload[0]:
        return "duorc_json"
    if isinstance(payload, list):
        return "json_rows"
    if isinstance(payload, dict) and payload and all(
            isinstance(v, dict) and "qa_pairs" in v for v in list(payload.values())[:5]):
        return "drop_json"
    raise DataError("unrecognised JSON layout: expected SQuAD JSON ({'data': [...]}), DuoRC JSON (a "
                    "list of movies), DROP JSON ({passage_id: {passage, qa_pairs}}) or a list of "
                    "records", file=str(path))


# ----------------------------------------------------------------------------- dispatch

def _adapt_rows(spec: TaskSpec, rows: list[tuple[Any, Any]], stats: AdapterStats,
                text_column: str | None, label_column: str | None,
                text_pair_column: str | None = None) -> list[dict]:
    """Records given row by row (JSON lines, JSON arrays, saved datasets, the Hub)."""
    if not rows:
        return []
    first = rows[0][1]
    if not isinstance(first, dict):
        raise DataError(f"expected JSON objects, got {type(first).__name__}", file=stats.source,
                        record=rows[0][0])
    for where, row in rows:
        if not isinstance(row, dict):
            raise DataError(f"expected a JSON object, got {type(row).__name__}", file=stats.source, record=where)
    keys = set(first)
    if spec.kind == "classification":
        if text_column is None and text_pair_column is None and {"text", "label", "id"} <= keys:
            stats.format += ":canonical"
            return adapt_canonical_classification(spec, rows, stats)
        columns = resolve_columns(spec, list(first), file=stats.source, where=rows[0][0], text_column=text_column,
                                  text_pair_column=text_pair_column, label_column=label_column)
        stats.format += ":rows"
        return adapt_classification_rows(spec, rows, stats, text_column=columns.text, label_column=columns.label,
                                         text_pair_column=columns.text_pair)
    if "is_impossible" in keys:
        stats.format += ":canonical"
        return adapt_canonical_qa(spec, rows, stats)
    plain = [row for _, row in rows]
    if spec.adapter == "duorc" and "plot" in keys:
        stats.format += ":hub_rows"
        return adapt_duorc_rows(spec, plain, stats)
    if spec.adapter == "drop" and "answers_spans" in keys:
        stats.format += ":hub_rows"
        return adapt_drop_rows(spec, plain, stats)
    if spec.adapter in ("squad", "quoref", "mlqa") and {"context", "answers"} <= keys:
        stats.format += ":hub_rows"
        return adapt_squad_rows(spec, plain, stats)
    raise DataError(f"records with fields {sorted(keys)} are neither canonical QA records "
                    f"(id, context, question, answers, is_impossible) nor rows of the {spec.name} "
                    f"Hub dataset", file=stats.source, record=rows[0][0])


def _load_local(spec: TaskSpec, split: str, path: Path, text_column: str | None,
                label_column: str | None, text_pair_column: str | None = None) -> TaskData:
    if not path.exists():
        raise DataError("file not found", file=str(path))
    payload = read_json(path) if path.suffix.lower() == ".json" and path.is_file() else None
    fmt = "jsonl" if payload is JSON_LINES else detect_format(path, payload)
    stats = AdapterStats(task=spec.name, source=str(path), format=fmt, split=split)
    native = _NATIVE_FORMATS[spec.adapter]
    if fmt in _FORMAT_DESCRIPTIONS and fmt not in native:
        expected = " or ".join(_FORMAT_DESCRIPTIONS[f] for f in native)
        raise DataError(f"looks like {_FORMAT_DESCRIPTIONS[fmt]}, but task {spec.name} reads {expected}, "
                        "canonical JSON lines or Hub rows", file=str(path))
    if fmt == "squad_json":
        records = adapt_squad_json(spec, payload, stats)
    elif fmt == "duorc_json":
        records = adapt_duorc_json(spec, payload, stats)
    elif fmt == "drop_json":
        records = adapt_drop_json(spec, payload, stats)
    elif fmt in ("tsv", "csv"):
        records = adapt_table(spec, path, fmt, stats, text_column, label_column, text_pair_column)
    elif fmt == "jsonl":
        records = _adapt_rows(spec, list(read_jsonl(path)), stats, text_column, label_column, text_pair_column)
    elif fmt == "json_rows":
        records = _adapt_rows(spec, [(f"[{i}]", row) for i, row in enumerate(payload)], stats,
                              text_column, label_column, text_pair_column)
    else:  # saved_dataset
        records = _adapt_rows(spec, _saved_dataset_rows(spec, split, path), stats, text_column,
                              label_column, text_pair_column)
    return TaskData(spec, split, records, stats)


def _saved_dataset_rows(spec: TaskSpec, split: str, path: Path) -> list[tuple[int, dict]]:
    import datasets  # deferred: importing `datasets` costs seconds that file loading does not need

    loaded = datasets.load_from_disk(str(path))
    if isinstance(loaded, datasets.DatasetDict):
        for name in (spec.hub_split(split), split):
            if name in loaded:
                loaded = loaded[name]
                break
        else:
            raise DataError(f"has splits {list(loaded)} but none named {spec.hub_split(split)!r}",
                            file=str(path))
    return list(enumerate(loaded))


def _load_hub(spec: TaskSpec, split: str, text_column: str | None, label_column: str | None,
              text_pair_column: str | None, local_hint: str, probe: Callable[[], bool]) -> TaskData:
    if not spec.hub_id:   # a task file's task: its data are the user's files
        raise ToolkitError(f"task {spec.name} has no Hub dataset; give its {split} data as a local file "
                           "(--train_file / --validation_file)")
    name = spec.hub_id + (f" ({spec.hub_config})" if spec.hub_config else "")
    require_hub(f"dataset {name}", local_hint, probe=probe)
    import datasets  # deferred: see _saved_dataset_rows

    try:
        loaded = datasets.load_dataset(spec.hub_id, spec.hub_config, split=spec.hub_split(split))
    except (ConnectionError, OSError, ValueError, RuntimeError) as err:
        raise hub_load_failed(f"dataset {name}", local_hint, err) from err
    source = f"hub:{spec.hub_id}" + (f"/{spec.hub_config}" if spec.hub_config else "") + \
        f"[{spec.hub_split(split)}]"
    stats = AdapterStats(task=spec.name, source=source, format="hub", split=split)
    records = _adapt_rows(spec, list(enumerate(loaded)), stats, text_column, label_column, text_pair_column)
    return TaskData(spec, split, records, stats)


def load_task_data(task: str | TaskSpec, split: str = "train", file: str | os.PathLike | None = None, *,
                   text_column: str | None = None, label_column: str | None = None,
                   text_pair_column: str | None = None, local_hint: str = DEFAULT_LOCAL_HINT,
                   probe: Callable[[], bool] = hub_reachable) -> TaskData:
    """Canonical records of one split of a task, from `file` if given, else from the Hub.

    Args:
        task: a registered task name or alias, or its spec.
        split: "train" or "validation" (mapped to the Hub's split names by the registry).
        file: a local file or save_to_disk folder; None means the task's Hub dataset.
        text_column, text_pair_column, label_column: column (or row field) names of a
            classification table, when not the task's own: by default its original TSV's columns
            (TableLayout), its Hub fields, then `sentence` or `text` (`text` and `text_pair` for a
            sentence-pair task) and `label`. A table whose columns are named this way needs no code.
        local_hint: the flag(s) named in the error when the Hub cannot be reached.
        probe: the Hub reachability check (tests pass one that needs no network).

    Raises:
        DataError: the file is missing, malformed (a line with the wrong number of columns, a
            column the task needs missing) or holds a record the task cannot use (a label outside
            its label space); the message names the file, the line or record and the field.
        UnknownTaskError: `task` is not registered.
        HubUnavailableError: no file and no Hub.
    """
    spec = task if isinstance(task, TaskSpec) else get_task(task)
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    if file is not None:
        data = _load_local(spec, split, Path(file), text_column, label_column, text_pair_column)
    else:
        data = _load_hub(spec, split, text_column, label_column, text_pair_column, local_hint, probe)
    if data.stats.records_read == 0:
        raise DataError("holds no records", file=data.stats.source)
    if data.stats.kept == 0:
        reasons = ", ".join(f"{reason}: {count}" for reason, count in sorted(data.stats.dropped.items()))
        raise DataError(f"none of its {data.stats.records_read} records is usable for task {spec.name} "
                        f"(dropped: {reasons})", file=data.stats.source)
    logger.debug("%s %s: kept %d of %d records from %s", spec.name, split, data.stats.kept,
                data.stats.records_read, data.stats.source)
    return data


# ----------------------------------------------------------------------------- train vs evaluation data

def companion_file(validation_file: str | os.PathLike | None, explicit: str | os.PathLike | None, suffix: str,
                   flag: str) -> str | None:
    """The local file of a task's companion dev set (MNLI's mismatched one): `explicit` when given;
    else, beside `validation_file`, GLUE's dev_<suffix>.tsv or the validation file's own name with
    "matched" turned into "<suffix>"; None when there is no local validation file (the Hub's split).

    Raises:
        ToolkitError: a local validation file with no companion beside it (name it with `flag`).
    """
    if explicit is not None:
        return str(explicit)
    if validation_file is None:
        return None
    given = Path(validation_file).expanduser()
    candidates = [given.parent / f"dev_{suffix}.tsv"]
    if "matched" in given.name:
        candidates.append(given.parent / given.name.replace("matched", suffix, 1))
    for candidate in candidates:
        if candidate.exists() and candidate.resolve() != given.resolve():
            return str(candidate)
    raise ToolkitError(f"--validation_file {validation_file}: the {suffix} dev set is evaluated too, and none of "
                       f"{', '.join(c.name for c in candidates)} lies beside it; give its file with {flag}")


def same_file_warning(train_file: str | os.PathLike | None, validation_file: str | os.PathLike | None) -> str | None:
    """A warning when the training and evaluation data are one file (or folder), else None.

    The same path (after resolving links and relative parts) or the same content (a copy)
    counts. Training on the evaluation data is rarely what a researcher means, and then every
    evaluation number measures memory, not generalisation; with --max_train_samples the subset
    is drawn from the evaluation data all the same. A path that does not exist gives None: the
    loader reports it.
    """
    if train_file is None or validation_file is None:  # the Hub's own splits are disjoint
        return None
    train, validation = Path(train_file).expanduser(), Path(validation_file).expanduser()
    if not (train.exists() and validation.exists()):
        return None
    consequence = ("the model is evaluated on data it was trained on, so the evaluation numbers are not held out; "
                   "give a separate --validation_file unless this is deliberate")
    if train.resolve() == validation.resolve():
        return f"--train_file and --validation_file are the same file ({train.resolve()}): {consequence}"
    if train.is_dir() != validation.is_dir():
        return None
    if train.is_file() and train.stat().st_size != validation.stat().st_size:  # no need to read them
        return None
    if _content_digest(train) == _content_digest(validation):
        return f"--train_file {train} and --validation_file {validation} have the same content: {consequence}"
    return None


def _content_digest(path: Path) -> str:
    """sha256 of a file's bytes, or of a folder's files (relative names and bytes, in name order)."""
    digest = hashlib.sha256()
    files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    for file in files:
        if path.is_dir():
            digest.update(str(file.relative_to(path)).encode() + b"\0")
        with open(file, "rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
        digest.update(b"\0")
    return digest.hexdigest()
