"""A task's data from wherever it is, seeded subsets of it, its tokenized features, the bundled samples.

Sources: an explicit local file (the dataset's original format, canonical JSON lines, JSON rows, a
TSV or CSV) or `datasets` save_to_disk folder, else the task's Hub dataset (`HF_HUB_OFFLINE` says
whether it may be downloaded; a failed download is one line naming the flag to use).
"""
from __future__ import annotations

import dataclasses
import hashlib
import inspect
import json
import logging
import numbers
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any

import datasets
import numpy as np
from huggingface_hub import constants as hub_constants

from utils.data.formats import (AdapterStats, adapt_canonical_classification, adapt_canonical_qa,
                                adapt_classification_rows, adapt_drop_json, adapt_drop_rows, adapt_duorc_json,
                                adapt_duorc_rows, adapt_squad_json, adapt_squad_rows, adapt_table, resolve_columns)
from utils.data.records import has_training_span, read_jsonl
from utils.data.registry import SPLITS, TaskSpec, get_task
from utils.run.errors import JSON_TOO_DEEP, DataError, HubUnavailableError, ToolkitError
from utils.run.outputs import atomic_folder

logger = logging.getLogger(__name__)

DEFAULT_LOCAL_HINT = "--train_file / --validation_file"
SAMPLES_DIR = Path(__file__).resolve().parents[2] / "data" / "samples"
# Which original layouts each adapter family reads (JSON lines, JSON rows and saved datasets: all).
_NATIVE_FORMATS = {"squad": ("squad_json",), "quoref": ("squad_json",), "mlqa": ("squad_json",),
                   "duorc": ("duorc_json",), "drop": ("drop_json",), "glue": ("tsv", "csv")}
_FORMAT_DESCRIPTIONS = {"squad_json": "SQuAD JSON (data -> paragraphs -> qas)",
                        "duorc_json": "DuoRC JSON (a list of movies with plot and qa)",
                        "drop_json": "DROP JSON (passage ids -> passage, qa_pairs)",
                        "tsv": "a GLUE TSV", "csv": "a CSV table"}
_JSON_LINES = object()  # _read_json's answer for a .json file that holds JSON lines


@dataclass(frozen=True)
class TaskData:
    """Canonical records of one split of one task (every question: what evaluation scores), and
    what the adapter did to get them."""

    spec: TaskSpec
    split: str
    records: list[dict]
    stats: AdapterStats

    def span_records(self) -> list[dict]:
        """The records a span objective (and the Task2Vec probe) can learn from: QA records with a
        located answer or none at all; every record of a classification task."""
        return [r for r in self.records if has_training_span(r)] if self.spec.kind == "qa" else list(self.records)


def hub_unavailable(what: str, local_hint: str, error: BaseException) -> HubUnavailableError:
    """The one-line error for `what` (a Hub dataset or model) that could not be loaded from the Hub,
    or, in huggingface_hub's offline mode, from its cache; it names the flag that gives a local file."""
    first_line = str(error).splitlines()[0] if str(error) else ""
    where = ("is not in the local Hugging Face cache and offline mode is on (HF_HUB_OFFLINE)"
             if hub_constants.HF_HUB_OFFLINE else "could not be loaded from the Hugging Face Hub")
    return HubUnavailableError(f"{what} {where} ({type(error).__name__}: {first_line}). "
                               f"Use local files instead: {local_hint}.")


# ----------------------------------------------------------------------------- local files

def _read_json(path: Path) -> Any:
    """Parse a JSON file (_JSON_LINES when it holds one value per line), or a one-line DataError."""
    try:
        with open(path, encoding="utf-8-sig") as handle:  # -sig: a byte-order mark is skipped, not an error
            return json.load(handle)
    except json.JSONDecodeError as err:
        if err.msg == "Extra data" and err.lineno > 1 and err.colno == 1:
            return _JSON_LINES      # `Dataset.to_json("x.json")` writes JSON lines under a .json name
        raise DataError(f"malformed JSON at line {err.lineno}, column {err.colno} "
                        f"(character {err.pos}): {err.msg}", file=str(path)) from None
    except UnicodeDecodeError as err:
        raise DataError(f"not UTF-8 text (byte {err.start})", file=str(path)) from None
    except RecursionError:
        raise DataError(JSON_TOO_DEEP, file=str(path)) from None


def detect_format(path: Path, payload: Any = None) -> str:
    """Name the layout of a local data source from its suffix and, for JSON, its structure."""
    if path.is_dir():
        if any((path / marker).exists() for marker in ("dataset_info.json", "state.json", "dataset_dict.json")):
            return "saved_dataset"
        raise DataError("is a folder but not a `datasets` save_to_disk folder (no dataset_info.json, "
                        "state.json or dataset_dict.json)", file=str(path))
    suffix = path.suffix.lower()
    if suffix in (".tsv", ".csv", ".jsonl"):
        return suffix[1:]
    if suffix != ".json":
        raise DataError(f"unsupported file type {suffix or '(none)'}: use .json (the dataset's original format), "
                        ".jsonl (canonical records or Hub rows), .tsv, .csv, or a save_to_disk folder", file=str(path))
    if isinstance(payload, dict) and isinstance(payload.get("data"), list):
        return "squad_json"
    if isinstance(payload, list) and payload and isinstance(payload[0], dict) and {"plot", "qa"} <= set(payload[0]):
        return "duorc_json"
    if isinstance(payload, list):
        return "json_rows"
    if isinstance(payload, dict) and payload and all(
            isinstance(v, dict) and "qa_pairs" in v for v in list(payload.values())[:5]):
        return "drop_json"
    raise DataError("unrecognised JSON layout: expected SQuAD JSON ({'data': [...]}), DuoRC JSON (a list of "
                    "movies), DROP JSON ({passage_id: {passage, qa_pairs}}) or a list of records", file=str(path))


def _adapt_rows(spec: TaskSpec, rows: list[tuple[Any, Any]], stats: AdapterStats, text_column: str | None,
                label_column: str | None, text_pair_column: str | None) -> list[dict]:
    """Records given row by row (JSON lines, JSON arrays, saved datasets, the Hub)."""
    if not rows:
        return []
    for where, row in rows:
        if not isinstance(row, dict):
            raise DataError(f"expected a JSON object, got {type(row).__name__}", file=stats.source, record=where)
    keys = set(rows[0][1])
    if spec.kind == "classification":
        if text_column is None and text_pair_column is None and {"text", "label", "id"} <= keys:
            stats.format += ":canonical"
            return adapt_canonical_classification(spec, rows, stats)
        columns = resolve_columns(spec, list(rows[0][1]), file=stats.source, where=rows[0][0], text_column=text_column,
                                  text_pair_column=text_pair_column, label_column=label_column)
        stats.format += ":rows"
        return adapt_classification_rows(spec, rows, stats, columns)
    if "is_impossible" in keys:
        stats.format += ":canonical"
        return adapt_canonical_qa(spec, rows, stats)
    # squad, quoref and mlqa rows share SQuAD's fields
    needed, adapt = {"duorc": ({"plot"}, adapt_duorc_rows), "drop": ({"answers_spans"}, adapt_drop_rows)}.get(
        spec.adapter, ({"context", "answers"}, adapt_squad_rows))
    if needed <= keys:
        stats.format += ":hub_rows"
        return adapt(spec, [row for _, row in rows], stats)
    raise DataError(f"records with fields {sorted(keys)} are neither canonical QA records (id, context, question, "
                    f"answers, is_impossible) nor rows of the {spec.name} Hub dataset", file=stats.source,
                    record=rows[0][0])


def _load_local(spec: TaskSpec, split: str, path: Path, columns: tuple[str | None, str | None, str | None]) -> TaskData:
    """Records of a local file or folder; `columns` = (text, label, text_pair) column flags."""
    if not path.exists():
        raise DataError("file not found", file=str(path))
    payload = _read_json(path) if path.suffix.lower() == ".json" and path.is_file() else None
    fmt = "jsonl" if payload is _JSON_LINES else detect_format(path, payload)
    stats = AdapterStats(task=spec.name, source=str(path), format=fmt, split=split)
    native = _NATIVE_FORMATS[spec.adapter]
    if fmt in _FORMAT_DESCRIPTIONS and fmt not in native:
        expected = " or ".join(_FORMAT_DESCRIPTIONS[f] for f in native)
        raise DataError(f"looks like {_FORMAT_DESCRIPTIONS[fmt]}, but task {spec.name} reads {expected}, "
                        "canonical JSON lines or Hub rows", file=str(path))
    adapters = {"squad_json": adapt_squad_json, "duorc_json": adapt_duorc_json, "drop_json": adapt_drop_json}
    if fmt in adapters:
        records = adapters[fmt](spec, payload, stats)
    elif fmt in ("tsv", "csv"):
        records = adapt_table(spec, path, fmt, stats, *columns)
    else:
        rows = (list(read_jsonl(path)) if fmt == "jsonl" else
                [(f"[{i}]", row) for i, row in enumerate(payload)] if fmt == "json_rows" else
                _saved_dataset_rows(spec, split, path))
        records = _adapt_rows(spec, rows, stats, *columns)
    return TaskData(spec, split, records, stats)


def _saved_dataset_rows(spec: TaskSpec, split: str, path: Path) -> list[tuple[int, dict]]:
    loaded = datasets.load_from_disk(str(path))
    if isinstance(loaded, datasets.DatasetDict):
        name = next((n for n in (spec.hub_split(split), split) if n in loaded), None)
        if name is None:
            raise DataError(f"has splits {list(loaded)} but none named {spec.hub_split(split)!r}", file=str(path))
        loaded = loaded[name]
    return list(enumerate(loaded))


def _load_hub(spec: TaskSpec, split: str, columns: tuple[str | None, str | None, str | None],
              local_hint: str) -> TaskData:
    if not spec.hub_id:   # a task file's task: its data are the user's files
        raise ToolkitError(f"task {spec.name} has no Hub dataset; give its {split} data as a local file "
                           "(--train_file / --validation_file)")
    name = spec.hub_id + (f" ({spec.hub_config})" if spec.hub_config else "")
    try:
        loaded = datasets.load_dataset(spec.hub_id, spec.hub_config, split=spec.hub_split(split))
    except (ConnectionError, OSError, ValueError, RuntimeError) as err:
        raise hub_unavailable(f"dataset {name}", local_hint, err) from err
    source = f"hub:{spec.hub_id}" + (f"/{spec.hub_config}" if spec.hub_config else "") + f"[{spec.hub_split(split)}]"
    stats = AdapterStats(task=spec.name, source=source, format="hub", split=split)
    return TaskData(spec, split, _adapt_rows(spec, list(enumerate(loaded)), stats, *columns), stats)


def load_task_data(task: str | TaskSpec, split: str = "train", file: str | os.PathLike | None = None, *,
                   text_column: str | None = None, label_column: str | None = None,
                   text_pair_column: str | None = None, local_hint: str = DEFAULT_LOCAL_HINT) -> TaskData:
    """Canonical records of one split ("train" or "validation") of a task (a name, alias, task file
    or spec), from `file` (a local file or save_to_disk folder) if given, else from the Hub.

    The column flags name a classification table's columns when not the task's own; `local_hint` is
    the flag the HubUnavailableError names. A DataError names the file, line or record and field.
    """
    spec = task if isinstance(task, TaskSpec) else get_task(task)
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    columns = (text_column, label_column, text_pair_column)
    data = _load_local(spec, split, Path(file), columns) if file is not None else \
        _load_hub(spec, split, columns, local_hint)
    if data.stats.records_read == 0:
        raise DataError("holds no records", file=data.stats.source)
    if data.stats.kept == 0:
        reasons = ", ".join(f"{reason}: {count}" for reason, count in sorted(data.stats.dropped.items()))
        raise DataError(f"none of its {data.stats.records_read} records is usable for task {spec.name} "
                        f"(dropped: {reasons})", file=data.stats.source)
    logger.debug("%s %s: kept %d of %d records from %s", spec.name, split, data.stats.kept,
                 data.stats.records_read, data.stats.source)
    return data


def companion_file(validation_file: str | os.PathLike | None, explicit: str | os.PathLike | None, suffix: str,
                   flag: str) -> str | None:
    """The local file of a task's companion dev set (MNLI's mismatched one): `explicit` when given;
    else, beside `validation_file`, dev_<suffix>.tsv or the validation file's name with "matched"
    turned into "<suffix>"; None without a local validation file (the Hub's split)."""
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
    """A warning when the training and evaluation data are one file or folder (same path or content)."""
    if train_file is None or validation_file is None:  # the Hub's own splits are disjoint
        return None
    train, validation = Path(train_file).expanduser(), Path(validation_file).expanduser()
    if not (train.exists() and validation.exists()):
        return None                                     # the loader reports a missing file
    consequence = ("the model is evaluated on data it was trained on, so the evaluation numbers are not held out; "
                   "give a separate --validation_file unless this is deliberate")
    if train.resolve() == validation.resolve():
        return f"--train_file and --validation_file are the same file ({train.resolve()}): {consequence}"
    if train.is_dir() != validation.is_dir() or train.is_file() and train.stat().st_size != validation.stat().st_size:
        return None
    if _content_digest(train) == _content_digest(validation):
        return f"--train_file {train} and --validation_file {validation} have the same content: {consequence}"
    return None


def _content_digest(path: Path) -> str:
    """sha256 of a file's bytes, or of a folder's files (relative names and bytes, in name order)."""
    digest = hashlib.sha256()
    for file in sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]:
        if path.is_dir():
            digest.update(str(file.relative_to(path)).encode() + b"\0")
        digest.update(file.read_bytes() + b"\0")
    return digest.hexdigest()


# ----------------------------------------------------------------------------- seeded subsets

LABEL_BINS = 5


def document_key(record: dict) -> str:
    """A record's document: its article title, movie or passage id, else its context, else its id."""
    meta = record.get("meta") or {}
    for name in ("title", "movie_id", "passage_id"):
        if meta.get(name):
            return f"{name}:{meta[name]}"
    return f"context:{record['context']}" if "context" in record else f"id:{record['id']}"


def split_kind(records: Sequence[dict]) -> str:
    """The one stratification rule of a split ("document" for none): "document" (QA: a `context`,
    or no `label`), "class" (int labels, not bools) or "score" (other real labels); a ValueError for
    another label or a split that mixes kinds."""
    first: dict[str, Any] = {}
    for record in records:
        label = record.get("label")
        if "context" in record or "label" not in record:
            kind = "document"
        elif isinstance(label, (bool, np.bool_)) or not isinstance(label, numbers.Real):
            raise ValueError(f"record {record.get('id')!r}: label {label!r} is neither an int class index nor a "
                             "float score; load the records through the task's adapter "
                             "(utils.data.records.validate_classification_record) so labels have their task's type")
        else:
            kind = "class" if isinstance(label, numbers.Integral) else "score"
        first.setdefault(kind, record.get("id"))
    if len(first) > 1:
        examples = ", ".join(f"{kind} (e.g. record {rid!r})" for kind, rid in first.items())
        raise ValueError(f"cannot stratify a split that mixes record kinds: {examples}. A class task's labels "
                         "must all be ints and a regression task's all floats (write 3.0, not 3, or load the file "
                         "through the task's adapter, which converts scores); QA and classification records "
                         "belong in different splits")
    return next(iter(first), "document")


def label_bin(labels: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """Bin index #{j : edges_j <= y} of each label y: a label equal to an edge goes to the bin above."""
    return np.searchsorted(np.asarray(edges, dtype=np.float64), np.asarray(labels, dtype=np.float64), side="right")


def strata(records: Sequence[dict], bins: int = LABEL_BINS) -> tuple[str, list[list[int]], list[float] | None]:
    """A split's strategy, its strata (record indices in file order, none empty) and, for
    regression, the inner bin edges.

    Documents in first-appearance order; classes in increasing label order (the unlabelled -1 a
    class of its own); regression labels in `bins` quantile bins with inner edges
    e_j = quantile(y, j / bins, method="linear"), j = 1..bins-1, a label equal to an edge going to
    the bin above (`label_bin`); bins no label falls in (tied edges) are dropped.
    """
    kind = split_kind(records)
    groups: dict[Any, list[int]] = {}
    if kind == "document":
        for index, record in enumerate(records):
            groups.setdefault(document_key(record), []).append(index)
        return "stratified_by_document", list(groups.values()), None
    labels = np.asarray([record["label"] for record in records], dtype=np.float64)
    if kind == "class":
        keys, edges = labels.astype(np.int64).tolist(), None
    else:
        if bins < 1 or not np.all(np.isfinite(labels)):
            raise ValueError(f"label bins need at least one label bin (bins={bins}) and finite labels only; check "
                             "the regression task's scores")
        edges = np.quantile(labels, np.arange(1, bins) / bins, method="linear")
        keys = label_bin(labels, edges).tolist()
    for index, key in enumerate(keys):
        groups.setdefault(key, []).append(index)
    return ("stratified_by_label" if kind == "class" else "stratified_by_label_bins", [groups[k] for k in sorted(groups)],
            None if edges is None else [float(edge) for edge in edges])


def proportional_quotas(sizes: Sequence[int], count: int, rng: np.random.Generator) -> np.ndarray:
    """Per-stratum sample sizes summing to `count` (proportionate stratified sampling):

        quota_h = floor(N·n_h / M) + B_h,   P(B_h = 1) = frac(N·n_h / M),   Σ_h quota_h = N,

    n_h the stratum's size, M the total; the rounding bits B_h come from systematic sampling over
    the fractional parts (one uniform draw), so every record is chosen with probability N / M.
    """
    sizes = np.asarray(sizes, dtype=np.int64)
    total = int(sizes.sum())
    if np.any(sizes <= 0):
        raise ValueError("every stratum needs at least one record")
    if not 0 <= count <= total:
        raise ValueError(f"cannot draw {count} of {total} records")
    exact = count * sizes                                        # quota × total, in integers
    quotas = exact // total
    remainders = exact % total                                   # fractional parts × total
    extra = int(remainders.sum() // total)
    if extra:
        # Strata in a random order: stratum h is rounded up iff one of the points u, u + total, ...
        # falls in its slice of length remainders[h].
        order = rng.permutation(len(sizes))
        edges = np.cumsum(remainders[order])                     # (S,)
        points = int(rng.integers(total)) + total * np.arange(extra)
        quotas[order[np.searchsorted(edges, points, side="right")]] += 1
    return quotas


@dataclass(frozen=True)
class SubsetInfo:
    """How a subset was drawn (data_subsets.json); `documents` counts the strata, whatever they are."""

    seed: int
    total: int
    count: int
    strategy: str
    documents: int
    documents_sampled: int
    ids: list[str] = field(default_factory=list)
    bin_edges: list[float] | None = None

    def to_dict(self) -> dict[str, Any]:
        out = {"strategy": self.strategy, **{k: v for k, v in dataclasses.asdict(self).items() if k != "strategy"}}
        return out if self.bin_edges is not None else {k: v for k, v in out.items() if k != "bin_edges"}


def stratified_sample(records: Sequence[dict], count: int | None, seed: int, *,
                      bins: int = LABEL_BINS) -> tuple[list[dict], SubsetInfo]:
    """`count` records, a seeded random sample stratified by document, class or label bin (never the
    first N: the first 200 SQuAD dev questions are one article), in their original order; all of
    them when count is None or not smaller. Same seed and records, same subset; mixed record kinds
    or a mistyped label raise even when every record is kept."""
    strategy, members, edges = strata(records, bins)
    total = len(records)
    if count is None or count >= total:
        return list(records), SubsetInfo(seed, total, total, "all", len(members), len(members))
    rng = np.random.default_rng(seed)
    quotas = proportional_quotas([len(m) for m in members], count, rng)
    chosen = sorted(i for indices, quota in zip(members, quotas) if quota
                    for i in rng.choice(indices, size=int(quota), replace=False).tolist())
    subset = [records[i] for i in chosen]
    return subset, SubsetInfo(seed, total, len(subset), strategy, len(members), int(np.count_nonzero(quotas)),
                              [str(record["id"]) for record in subset], edges)


# ----------------------------------------------------------------------------- feature cache

def tokenizer_digest(tokenizer: Any) -> str:
    """sha256 of the tokenizer's full definition (vocabulary, merges, special tokens)."""
    return hashlib.sha256(tokenizer.backend_tokenizer.to_str().encode()).hexdigest()


def source_digest(*functions: Callable) -> str:
    """sha256 of the source files defining `functions`: a change to the feature code is a new key."""
    digest = hashlib.sha256()
    for path in sorted({inspect.getsourcefile(function) for function in functions}):
        digest.update(Path(path).read_bytes())
    return digest.hexdigest()


def build_features(records: list[dict], fn: Callable[[dict[str, list], list[int]], dict[str, list]], *,
                   name: str, settings: dict[str, Any], cache_dir: Path | None,
                   batch_size: int = 1000) -> datasets.Dataset:
    """Map canonical records to features in batches through an on-disk cache (None: no cache) in
    `cache_dir/name-KEY`, KEY hashing the records' canonical JSON and `settings` (everything else that
    changes the features), so a second run with the same data and settings reads them. `fn` maps
    (columns of a batch of records, their indices) to feature columns of any number of rows."""
    digest = hashlib.sha256()
    for record in records:
        digest.update(json.dumps(record, sort_keys=True, ensure_ascii=False).encode() + b"\n")
    key = hashlib.sha256(json.dumps({"settings": settings, "records": digest.hexdigest()},
                                    sort_keys=True).encode()).hexdigest()[:20]
    folder = cache_dir / f"{name}-{key}" if cache_dir is not None else None
    # datasets' own "Saving/Loading the dataset" bars would be noise between the lines that matter.
    bars_were_on = not datasets.are_progress_bars_disabled()
    try:
        if folder is not None and folder.exists():
            logger.info("features read from cache %s", folder)
            datasets.disable_progress_bars()
            return datasets.load_from_disk(str(folder))
        if records and "context" in records[0]:
            columns: tuple[str, ...] = ("id", "context", "question", "answers")
            columns += ("gold",) if all("gold" in record for record in records) else ()
        else:
            columns = ("id", "text", "text_pair", "label") if records and "text_pair" in records[0] \
                else ("id", "text", "label")
        source = datasets.Dataset.from_dict({column: [record[column] for record in records] for column in columns})
        features = source.map(fn, batched=True, batch_size=batch_size, with_indices=True,
                              remove_columns=list(columns), keep_in_memory=True, desc=f"features {name}")
        if folder is None:
            return features
        datasets.disable_progress_bars()
        # keep_existing: another process that finished the same features first wrote identical ones.
        with atomic_folder(folder, keep_existing=True) as staging:
            features.save_to_disk(str(staging))
        return datasets.load_from_disk(str(folder))
    finally:
        if bars_were_on:
            datasets.enable_progress_bars()


# ----------------------------------------------------------------------------- bundled samples

# task -> {logical split: file under data/samples}, each in the dataset's ORIGINAL format.
SAMPLE_FILES: Mapping[str, Mapping[str, str]] = MappingProxyType({
    "squad": {"train": "squad/train-v1.1.json", "validation": "squad/dev-v1.1.json"},
    "squad_v2": {"train": "squad_v2/train-v2.0.json", "validation": "squad_v2/dev-v2.0.json"},
    "duorc-p": {"train": "duorc/ParaphraseRC_train.json", "validation": "duorc/ParaphraseRC_dev.json"},
    "duorc-s": {"train": "duorc/SelfRC_train.json", "validation": "duorc/SelfRC_dev.json"},
    "drop": {"train": "drop/drop_dataset_train.json", "validation": "drop/drop_dataset_dev.json"},
    "quoref": {"train": "quoref/quoref-train.json", "validation": "quoref/quoref-dev.json"},
    # MLQA has no training split; its test file plays that part (see the registry).
    "mlqa_en": {"train": "mlqa/test-context-en-question-en.json", "validation": "mlqa/dev-context-en-question-en.json"},
    "sst2": {"train": "sst2/train.tsv", "validation": "sst2/dev.tsv"},
    **{task: {"train": f"glue/{task}/train.tsv", "validation": f"glue/{task}/dev.tsv"}
       for task in ("cola", "mrpc", "stsb", "qqp")},
    # MNLI's two tasks share its training file and differ in the dev file.
    "mnli": {"train": "glue/mnli/train.tsv", "validation": "glue/mnli/dev_matched.tsv"},
    "mnli-mm": {"train": "glue/mnli/train.tsv", "validation": "glue/mnli/dev_mismatched.tsv"},
    **{task: {"train": f"glue/{task}/train.tsv", "validation": f"glue/{task}/dev.tsv"} for task in ("qnli", "rte", "wnli")},
})


def sample_file(task: str, split: str, samples_dir: Path = SAMPLES_DIR) -> Path:
    """Path of the bundled sample of a task (name or alias) and split, or a KeyError naming those there are."""
    name = get_task(task).name
    if name not in SAMPLE_FILES:
        raise KeyError(f"no bundled sample for task {name!r}; samples exist for {sorted(SAMPLE_FILES)}")
    return samples_dir / SAMPLE_FILES[name][split]
