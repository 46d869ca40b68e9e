"""The task registry: every task the study knows, its kind, its Hub source and its adapter.

One frozen `TaskSpec` per task. Names are matched case-insensitively and the original
repository's spellings (`duorc;SelfRC`, `glue;sst2`, ...) are accepted as aliases, so that
`--tasks 'squad,squad_v2,duorc;SelfRC'` works as it did there.
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Literal

from utils.run.errors import UnknownTaskError

TaskKind = Literal["qa", "classification"]
AdapterFamily = Literal["squad", "duorc", "drop", "quoref", "mlqa", "glue"]
# The official evaluation of each dataset (utils.qa.metrics): SQuAD v1.1 / v2.0, DuoRC's own
# script (SQuAD v1.1 rules over all answer strings, "NA" for no answer), DROP's, and Quoref's
# (DROP's metric with all answers of a question as one conjunctive answer), MLQA's (SQuAD v1.1
# with Unicode punctuation and the answer language's articles removed).
MetricName = Literal["squad_v1", "squad_v2", "duorc", "drop", "quoref", "mlqa", "accuracy"]
SPLITS = ("train", "validation")


@dataclass(frozen=True)
class TaskSpec:
    """What the toolkit knows about one task.

    Attributes:
        name: canonical name, used in file names, lineage and result tables.
        aliases: other accepted spellings (the original repository's among them).
        kind: "qa" (extractive question answering) or "classification".
        version_2_with_negative: True when the task has unanswerable questions, so training
            labels them at the null slot and evaluation uses the SQuAD v2.0 metric.
        hub_id / hub_config: the Hugging Face Hub dataset used when no local file is given.
        hub_splits: the Hub split used for our logical "train" and "validation" splits.
        adapter: which adapter family turns the dataset's files into canonical records.
        metric: the dataset's official evaluation (see MetricName).
        label_names: class names, index = integer label (classification only).
        language: the answer language, where the metric depends on it (MLQA).
        notes: caveats a user should know (shown by `python -m utils.data --list_tasks`).
    """

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

    def hub_split(self, split: str) -> str:
        """The Hub split name behind our logical split ("train" or "validation")."""
        if split not in self.hub_splits:
            raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
        return self.hub_splits[split]


_STANDARD_SPLITS = MappingProxyType({"train": "train", "validation": "validation"})
# MLQA ships no training split; as in the literature, its test split is what one trains on and
# the (small) validation split is what one evaluates on. Users who need a clean test set must
# bring their own.
_MLQA_SPLITS = MappingProxyType({"train": "test", "validation": "validation"})
_MLQA_NOTE = ("MLQA has no train split: 'train' reads the Hub 'test' split "
              "(test-context-XX-question-XX.json), 'validation' reads the dev split.")

_DUORC_NOTE = ("Free-form answers: training uses those found in the plot; evaluation scores every question "
               "against all original answer strings (DuoRC's script; \"NA\" for no answer).")

_TASKS: tuple[TaskSpec, ...] = (
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
    TaskSpec("sst2", ("glue", "glue;sst2", "sst-2", "glue-sst2"), "classification", False,
             "nyu-mll/glue", "sst2", _STANDARD_SPLITS, "glue", "accuracy",
             label_names=("negative", "positive"),
             notes="GLUE test labels are hidden (-1); report on validation."),
)


# Registered tasks built from the same underlying data: a task evaluated as "held out" must not
# share data with a training task.
SHARED_DATA: tuple[tuple[frozenset[str], str], ...] = (
    (frozenset({"squad", "squad_v2"}), "SQuAD v2.0 contains every SQuAD v1.1 question (train and dev) and adds "
                                         "unanswerable ones"),
    (frozenset({"duorc-p", "duorc-s"}), "DuoRC ParaphraseRC and SelfRC ask questions about the same movies"),
    (frozenset({"mlqa_en", "mlqa_de", "mlqa_es"}), "MLQA's languages are translations of the same questions "
                                                   "and paragraphs"),
)


def shared_data_warnings(training: list[TaskSpec], evaluation: list[TaskSpec]) -> list[str]:
    """One message per (evaluation task, training task) pair built from the same data."""
    messages = []
    for held_out in evaluation:
        for trained in training:
            for family, why in SHARED_DATA:
                if held_out.name != trained.name and {held_out.name, trained.name} <= family:
                    messages.append(f"evaluation task {held_out.name} shares data with training task {trained.name}: "
                                    f"{why}; it is not a held-out task")
    return messages


def _build_index(tasks: tuple[TaskSpec, ...]) -> dict[str, TaskSpec]:
    index: dict[str, TaskSpec] = {}
    for spec in tasks:
        for key in (spec.name, *spec.aliases):
            folded = key.lower()
            if folded in index:
                raise RuntimeError(f"task name {key!r} is registered twice")
            index[folded] = spec
    return index


_INDEX = _build_index(_TASKS)


def list_tasks(kind: TaskKind | None = None) -> list[str]:
    """Canonical task names, in registry order, optionally only those of one kind."""
    return [spec.name for spec in _TASKS if kind is None or spec.kind == kind]


def all_task_specs() -> tuple[TaskSpec, ...]:
    """Every registered task spec, in registry order."""
    return _TASKS


def known_names_message() -> str:
    """The list of accepted names, for error messages."""
    parts = []
    for spec in _TASKS:
        aliases = f" (aliases: {', '.join(spec.aliases)})" if spec.aliases else ""
        parts.append(spec.name + aliases)
    return "; ".join(parts)


def get_task(name: str) -> TaskSpec:
    """Resolve a task name or alias (case-insensitive).

    Raises:
        UnknownTaskError: the name is not registered; the message lists every known name.
    """
    spec = _INDEX.get(name.strip().lower())
    if spec is None:
        raise UnknownTaskError(f"unknown task {name!r}. Known tasks: {known_names_message()}")
    return spec


def parse_task_list(text: str) -> list[TaskSpec]:
    """Split the original repository's comma-separated task list (`'squad,squad_v2,duorc;SelfRC'`).

    Raises:
        UnknownTaskError: on any unknown name; on an empty list or a repeated task.
    """
    names = [part.strip() for part in text.split(",") if part.strip()]
    if not names:
        raise UnknownTaskError(f"no task names in {text!r}. Known tasks: {known_names_message()}")
    specs = [get_task(name) for name in names]
    seen: set[str] = set()
    for spec in specs:
        if spec.name in seen:
            raise UnknownTaskError(f"task {spec.name!r} is listed twice in {text!r}")
        seen.add(spec.name)
    return specs
