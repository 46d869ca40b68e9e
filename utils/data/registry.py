"""The task registry: one frozen `TaskSpec` per task; names match case-insensitively and the original
repository's spellings (`duorc;SelfRC`, `glue;sst2`, ...) are aliases. A task argument ending in
`.json` names a task file of the user's own (`task_from_file`):

    {"name": "reviews", "labels": ["negative", "neutral", "positive"],   (or "score_range": [0, 1])
     "text_column": "review", "text_pair_column": "reply",               (the pair column is optional)
     "label_column": "stars", "metrics": ["accuracy", "matthews_correlation"]}   (optional, primary first)

Its data come from local files only, read as the GLUE tables are (utils.data.formats).
"""
from __future__ import annotations

import argparse
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Any, Literal

from utils.run.errors import ToolkitError, UnknownTaskError

TaskKind = Literal["qa", "classification"]
AdapterFamily = Literal["squad", "duorc", "drop", "quoref", "mlqa", "glue"]
# Each dataset's official evaluation (utils.qa); a GLUE task's primary metric (utils.classification).
MetricName = Literal["squad_v1", "squad_v2", "duorc", "drop", "quoref", "mlqa", "accuracy",
                     "matthews_correlation", "f1", "pearson"]
SPLITS = ("train", "validation")


@dataclass(frozen=True)
class TableLayout:
    """Where a classification task's release TSV (`text_columns`, `label_column`) and its Hub rows
    (`hub_fields`; the label is `label`) keep the texts and the label; `headerless` names the columns
    of a release file without a header line (CoLA's), None when it has one."""

    text_columns: tuple[str, ...]
    label_column: str
    hub_fields: tuple[str, ...]
    headerless: tuple[str, ...] | None = None


@dataclass(frozen=True)
class TaskSpec:
    """One task: `version_2_with_negative` (unanswerable questions), its Hub dataset and the Hub split
    of our "train" and "validation", its adapter family, its official `metric` (a GLUE task's primary
    one), class names (index = label), the answer `language` (MLQA), a regression task's score range."""

    name: str
    aliases: tuple[str, ...]
    kind: TaskKind
    version_2_with_negative: bool
    hub_id: str
    hub_config: str | None
    hub_splits: Mapping[str, str]
    adapter: AdapterFamily
    metric: MetricName
    label_names: tuple[str, ...] | None = None
    notes: str = ""
    language: str | None = None
    text_pair_required: bool = False
    regression_range: tuple[float, float] | None = None
    table: TableLayout | None = None
    metrics: tuple[str, ...] = ()

    @property
    def is_regression(self) -> bool:
        """True for a task whose label is a real-valued score (STS-B), not a class."""
        return self.regression_range is not None

    @property
    def label_space(self) -> int | tuple[float, float]:
        """The number of classes, or a regression task's score range."""
        return self.regression_range if self.regression_range is not None else len(self.label_names or ())

    def hub_split(self, split: str) -> str:
        """The Hub split name behind our logical split ("train" or "validation")."""
        if split not in self.hub_splits:
            raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
        return self.hub_splits[split]


_STANDARD_SPLITS = MappingProxyType({"train": "train", "validation": "validation"})
# MLQA ships no training split; as in the literature, one trains on its test split and evaluates on
# its (small) validation split.
_MLQA_SPLITS = MappingProxyType({"train": "test", "validation": "validation"})
_MLQA_NOTE = ("MLQA has no train split: 'train' reads the Hub 'test' split "
              "(test-context-XX-question-XX.json), 'validation' reads the dev split.")

_DUORC_NOTE = ("Free-form answers: training uses those found in the plot; evaluation scores every question "
               "against all original answer strings (DuoRC's script; \"NA\" for no answer).")

_GLUE_NOTE = "GLUE test labels are hidden (-1); report on validation."
# CoLA's train.tsv and dev.tsv have no header line: source, label, the original annotation mark
# ("*" for unacceptable, empty for acceptable), sentence.
_COLA_COLUMNS = ("source", "label", "original_label", "sentence")
_MNLI_LABELS = ("entailment", "neutral", "contradiction")


def _glue(name: str, aliases: tuple[str, ...], metric: MetricName, labels: tuple[str, ...] | None,
          texts: tuple[str, ...], label_column: str = "label", hub_fields: tuple[str, ...] | None = None, *,
          config: str | None = None, splits: Mapping[str, str] = _STANDARD_SPLITS, headerless: tuple[str, ...]
          | None = None, notes: str = _GLUE_NOTE, regression_range: tuple[float, float] | None = None) -> TaskSpec:
    """A GLUE target: nyu-mll/glue's config `config` (default: `name`) or its release TSV, whose text
    columns are `texts` (two for a pair task) and whose Hub fields are `hub_fields` (default: the same)."""
    return TaskSpec(name, aliases, "classification", False, "nyu-mll/glue", config or name, splits, "glue", metric,
                    label_names=labels, notes=notes, text_pair_required=len(texts) == 2,
                    regression_range=regression_range,
                    table=TableLayout(texts, label_column, hub_fields or texts, headerless=headerless))


TASKS: tuple[TaskSpec, ...] = (
    TaskSpec("squad", ("squad_v1", "squad_v1.1"), "qa", False, "rajpurkar/squad", None,
             _STANDARD_SPLITS, "squad", "squad_v1"),
    TaskSpec("squad_v2", ("squad_v2.0", "squadv2"), "qa", True, "rajpurkar/squad_v2", None,
             _STANDARD_SPLITS, "squad", "squad_v2"),
    TaskSpec("duorc-p", ("duorc_p", "duorc;ParaphraseRC", "duorc-paraphraserc"), "qa", True,
             "ibm/duorc", "ParaphraseRC", _STANDARD_SPLITS, "duorc", "duorc", notes=_DUORC_NOTE),
    TaskSpec("duorc-s", ("duorc_s", "duorc;SelfRC", "duorc-selfrc"), "qa", True,
             "ibm/duorc", "SelfRC", _STANDARD_SPLITS, "duorc", "duorc", notes=_DUORC_NOTE),
    TaskSpec("drop", (), "qa", False, "ucinlp/drop", None, _STANDARD_SPLITS, "drop", "drop",
             notes="Evaluated on every question with the official DROP metric (numbers and dates "
                   "included, scored per answer type). The span objective trains on single-span "
                   "answers found in the passage; the generative objective also on numbers and dates. "
                   "The Hub version flattens the answers: use the original drop_dataset_dev.json "
                   "for official numbers."),
    TaskSpec("quoref", (), "qa", False, "allenai/quoref", None, _STANDARD_SPLITS, "quoref", "quoref",
             notes="Official Quoref metric (DROP's): a multi-span answer must be given whole; "
                   "training uses the first span."),
    TaskSpec("mlqa_en", ("mlqa", "mlqa-en", "mlqa.en.en"), "qa", False, "facebook/mlqa",
             "mlqa.en.en", _MLQA_SPLITS, "mlqa", "mlqa", notes=_MLQA_NOTE, language="en"),
    TaskSpec("mlqa_de", ("mlqa-de", "mlqa.de.de"), "qa", False, "facebook/mlqa", "mlqa.de.de",
             _MLQA_SPLITS, "mlqa", "mlqa", notes=_MLQA_NOTE, language="de"),
    TaskSpec("mlqa_es", ("mlqa-es", "mlqa.es.es"), "qa", False, "facebook/mlqa", "mlqa.es.es",
             _MLQA_SPLITS, "mlqa", "mlqa", notes=_MLQA_NOTE, language="es"),
    _glue("cola", ("glue;cola", "glue-cola"), "matthews_correlation", ("unacceptable", "acceptable"), ("sentence",),
          headerless=_COLA_COLUMNS),
    _glue("sst2", ("glue", "glue;sst2", "sst-2", "glue-sst2"), "accuracy", ("negative", "positive"), ("sentence",)),
    _glue("mrpc", ("glue;mrpc", "glue-mrpc"), "f1", ("not_equivalent", "equivalent"), ("#1 String", "#2 String"),
          "Quality", ("sentence1", "sentence2")),
    _glue("stsb", ("sts-b", "glue;stsb", "glue-stsb", "sts_b"), "pearson", None, ("sentence1", "sentence2"), "score",
          regression_range=(0.0, 5.0), notes="A regression task: the label is a similarity score in [0, 5]. GLUE "
          "test scores are hidden (-1) and a file without scores is refused; report on validation."),
    _glue("qqp", ("glue;qqp", "glue-qqp"), "f1", ("not_duplicate", "duplicate"), ("question1", "question2"),
          "is_duplicate"),
    # MNLI's train.tsv and dev_*.tsv share these columns; the label is the annotators' consensus.
    _glue("mnli", ("mnli-m", "mnli_matched", "glue;mnli", "glue-mnli", "glue;mnli_matched"), "accuracy", _MNLI_LABELS,
          ("sentence1", "sentence2"), "gold_label", ("premise", "hypothesis"),
          splits=MappingProxyType({"train": "train", "validation": "validation_matched"}),
          notes="Validation is dev_matched.tsv (Hub validation_matched: the training genres); the target "
                "script scores the same model on dev_mismatched.tsv too. " + _GLUE_NOTE),
    _glue("mnli-mm", ("mnli_mismatched", "glue;mnli_mismatched", "glue-mnli-mm", "mnli_mm"), "accuracy", _MNLI_LABELS,
          ("sentence1", "sentence2"), "gold_label", ("premise", "hypothesis"), config="mnli",
          splits=MappingProxyType({"train": "train", "validation": "validation_mismatched"}),
          notes="MNLI's training data with validation dev_mismatched.tsv (Hub validation_mismatched: genres "
                "not in training). " + _GLUE_NOTE),
    _glue("qnli", ("glue;qnli", "glue-qnli"), "accuracy", ("entailment", "not_entailment"), ("question", "sentence")),
    _glue("rte", ("glue;rte", "glue-rte"), "accuracy", ("entailment", "not_entailment"), ("sentence1", "sentence2")),
    _glue("wnli", ("glue;wnli", "glue-wnli"), "accuracy", ("not_entailment", "entailment"), ("sentence1", "sentence2"),
          notes="Its dev set is adversarial (hypotheses shared with training examples, opposite labels): "
                "majority-class accuracy is the usual baseline. " + _GLUE_NOTE),
)


# Registered tasks built from the same underlying data: a task evaluated as "held out" must not
# share data with a training task.
SHARED_DATA: tuple[tuple[frozenset[str], str], ...] = (
    (frozenset({"squad", "squad_v2"}), "SQuAD v2.0 contains every SQuAD v1.1 question (train and dev) and adds "
                                         "unanswerable ones"),
    (frozenset({"duorc-p", "duorc-s"}), "DuoRC ParaphraseRC and SelfRC ask questions about the same movies"),
    (frozenset({"mlqa_en", "mlqa_de", "mlqa_es"}), "MLQA's languages are translations of the same questions "
                                                   "and paragraphs"),
    (frozenset({"mnli", "mnli-mm"}), "MNLI matched and mismatched are one training set evaluated on two dev sets"),
)


def shared_data_warnings(training: list[TaskSpec], evaluation: list[TaskSpec]) -> list[str]:
    """One message per (evaluation task, training task) pair built from the same data."""
    return [f"evaluation task {held_out.name} shares data with training task {trained.name}: {why}; "
            "it is not a held-out task"
            for held_out in evaluation for trained in training for family, why in SHARED_DATA
            if held_out.name != trained.name and {held_out.name, trained.name} <= family]


# Every lower-cased name and alias -> its spec (a name registered twice fails test_tasks).
_INDEX = MappingProxyType({key.lower(): spec for spec in TASKS for key in (spec.name, *spec.aliases)})


def list_tasks(kind: TaskKind | None = None) -> list[str]:
    """Canonical task names, in registry order, optionally only those of one kind."""
    return [spec.name for spec in TASKS if kind is None or spec.kind == kind]


def known_names_message() -> str:
    """The accepted names, for error messages."""
    return "; ".join(spec.name + (f" (aliases: {', '.join(spec.aliases)})" if spec.aliases else "")
                     for spec in TASKS)


def is_task_file(name: str) -> bool:
    """Whether a task argument names a task file (it ends in .json) rather than a registered task."""
    return name.strip().lower().endswith(".json")


def get_task(name: str) -> TaskSpec:
    """Resolve a task name or alias (case-insensitive), or the path of a task file; an
    UnknownTaskError lists every known name."""
    if is_task_file(name):
        return task_from_file(name)
    spec = _INDEX.get(name.strip().lower())
    if spec is None:
        raise UnknownTaskError(f"unknown task {name!r}. Known tasks: {known_names_message()}")
    return spec


def parse_task_list(text: str) -> list[TaskSpec]:
    """Split the original repository's comma-separated task list (`'squad,squad_v2,duorc;SelfRC'`);
    an UnknownTaskError on an unknown name, an empty list or a repeated task."""
    names = [part.strip() for part in text.split(",") if part.strip()]
    if not names:
        raise UnknownTaskError(f"no task names in {text!r}. Known tasks: {known_names_message()}")
    specs = [get_task(name) for name in names]
    repeated = [spec.name for i, spec in enumerate(specs) if spec.name in {s.name for s in specs[:i]}]
    if repeated:
        raise UnknownTaskError(f"task {repeated[0]!r} is listed twice in {text!r}")
    return specs


# ----------------------------------------------------------------------------- task files

# utils.classification's metric functions, by name (this module stays free of numpy).
KNOWN_METRICS = ("accuracy", "f1", "matthews_correlation", "pearson", "spearmanr")
CLASS_METRICS = ("accuracy", "f1", "matthews_correlation")
SCORE_METRICS = ("pearson", "spearmanr")
FIELDS = ("name", "labels", "score_range", "text_column", "text_pair_column", "label_column", "metrics")
_NAME = re.compile(r"[a-z0-9][a-z0-9_.-]*")


def task_from_file(path_text: str) -> TaskSpec:
    """The TaskSpec a task file describes (module docstring); by default a class task's metric is
    accuracy and a score task's Pearson then Spearman. An UnknownTaskError names the file and field."""
    path = Path(path_text.strip()).expanduser()
    if not path.is_file():
        raise UnknownTaskError(f"task file {path} not found (a task argument ending in .json names a task file; "
                               "see docs/data.md, 'Your own task')")
    try:
        entry = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise UnknownTaskError(f"task file {path}: not valid JSON ({err})") from None

    def string(key: str, required: bool = True) -> Any:
        value = entry.get(key)
        if (value is not None or required) and (not isinstance(value, str) or not value.strip()):
            raise UnknownTaskError(f'task file {path}: "{key}" must be a non-empty string')
        return value

    if not isinstance(entry, dict) or set(entry) - set(FIELDS):
        raise UnknownTaskError(f"task file {path}: " + (f"unknown field(s) {sorted(set(entry) - set(FIELDS))}; the "
                               f"fields are {list(FIELDS)}" if isinstance(entry, dict) else "must hold one JSON object"))
    name, labels, score_range = string("name").strip().lower(), entry.get("labels"), entry.get("score_range")
    regression = score_range is not None
    allowed = SCORE_METRICS if regression else CLASS_METRICS
    metrics = entry.get("metrics", list(allowed[:2] if regression else ("accuracy",)))
    checks = (
        (not _NAME.fullmatch(name), f'"name" {name!r} must be lower-case letters, digits, ".", "_" or "-"'),
        (name in _INDEX, f'"name" {name!r} is a registered task; give your task a name of its own'),
        ((labels is None) != regression, 'give exactly one of "labels" (class names) and "score_range" ([low, high])'),
        (labels is not None and not (isinstance(labels, list) and len(labels) >= 2 and len(set(map(str, labels)))
                                     == len(labels) and all(isinstance(x, str) and x for x in labels)),
         '"labels" must list at least two distinct class names'),
        (regression and not (isinstance(score_range, list) and len(score_range) == 2 and all(
            isinstance(x, (int, float)) and not isinstance(x, bool) for x in score_range)
            and score_range[0] < score_range[1]), '"score_range" must be [low, high] with low < high'))
    problem = next((message for failed, message in checks if failed), None)
    if problem is None:
        text, label, pair = string("text_column"), string("label_column"), string("text_pair_column", required=False)
    if problem is None and (not isinstance(metrics, list) or not metrics or len(set(map(str, metrics))) != len(metrics)):
        problem = f'"metrics" must be a non-empty list of distinct names from {list(allowed)}'
    wrong = [metric for metric in metrics if metric not in allowed] if problem is None else []
    if wrong:
        kind = "a regression (score) task" if regression else "a class task"
        problem = f"metric {wrong[0]!r} is not one for {kind}; choose from {list(allowed)}"
    elif problem is None and "f1" in metrics and len(labels) != 2:
        problem = f'"f1" is the F1 of class 1 of a two-class task; this task has {len(labels)} classes'
    if problem is not None:
        raise UnknownTaskError(f"task file {path}: {problem}")
    texts = (text,) if pair is None else (text, pair)
    return TaskSpec(name, (), "classification", False, "", None, _STANDARD_SPLITS, "glue", metrics[0],
                    label_names=tuple(labels) if labels else None,
                    notes=f"Described by the task file {path}; its data come from local files only.",
                    text_pair_required=pair is not None,
                    regression_range=(float(score_range[0]), float(score_range[1])) if regression else None,
                    table=TableLayout(texts, label, texts), metrics=tuple(metrics))


# ----------------------------------------------------------------------------- command-line task names

def task_name(text: str) -> str:
    """argparse type: a registered task name or alias, returned in canonical form, or the path of a
    task file, checked and returned as given."""
    try:
        spec = get_task(text)
    except UnknownTaskError as err:
        raise argparse.ArgumentTypeError(str(err)) from None
    return text if is_task_file(text) else spec.name


def files_by_task(pairs: list[tuple[str, str]], known: list[TaskSpec], flag: str) -> dict[str, str]:
    """NAME=PATH pairs keyed by canonical task name (any alias, any case); a task given twice or not
    among `known` is a ToolkitError (a typo, or a file for another run: ignoring it would train on
    something else)."""
    names = [spec.name for spec in known]
    files: dict[str, str] = {}
    for name, path in pairs:
        canonical = get_task(name).name
        if canonical not in names:
            raise ToolkitError(f"{flag} {name}={path}: task {canonical} is not among this run's tasks "
                               f"({', '.join(names) or 'none'}); add it to the task list or drop the file")
        if canonical in files:
            raise ToolkitError(f"{flag} gives task {canonical} twice")
        files[canonical] = path
    return files
