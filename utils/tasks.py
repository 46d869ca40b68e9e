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

from utils.errors import UnknownTaskError

TaskKind = Literal["qa", "classification"]
AdapterFamily = Literal["squad", "duorc", "drop", "quoref", "mlqa", "glue"]
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
        label_names: class names, index = integer label (classification only).
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
    label_names: tuple[str, ...] | None = None
    notes: str = ""

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

_TASKS: tuple[TaskSpec, ...] = (
    TaskSpec("squad", ("squad_v1", "squad_v1.1"), "qa", False, "rajpurkar/squad", None,
             _STANDARD_SPLITS, "squad"),
    TaskSpec("squad_v2", ("squad_v2.0", "squadv2"), "qa", True, "rajpurkar/squad_v2", None,
             _STANDARD_SPLITS, "squad"),
    TaskSpec("duorc-p", ("duorc_p", "duorc;ParaphraseRC", "duorc-paraphraserc"), "qa", True,
             "ibm/duorc", "ParaphraseRC", _STANDARD_SPLITS, "duorc",
             notes="Free-form answers are located in the plot; answers not found are dropped."),
    TaskSpec("duorc-s", ("duorc_s", "duorc;SelfRC", "duorc-selfrc"), "qa", True,
             "ibm/duorc", "SelfRC", _STANDARD_SPLITS, "duorc",
             notes="Free-form answers are located in the plot; answers not found are dropped."),
    TaskSpec("drop", (), "qa", False, "ucinlp/drop", None, _STANDARD_SPLITS, "drop",
             notes="Only single-span answers found in the passage are kept (numbers, dates and "
                   "multi-span answers are counted and dropped)."),
    TaskSpec("quoref", (), "qa", False, "allenai/quoref", None, _STANDARD_SPLITS, "quoref",
             notes="Multi-span answers: training uses the first span, evaluation all spans."),
    TaskSpec("mlqa_en", ("mlqa", "mlqa-en", "mlqa.en.en"), "qa", False, "facebook/mlqa",
             "mlqa.en.en", _MLQA_SPLITS, "mlqa", notes=_MLQA_NOTE),
    TaskSpec("mlqa_de", ("mlqa-de", "mlqa.de.de"), "qa", False, "facebook/mlqa", "mlqa.de.de",
             _MLQA_SPLITS, "mlqa", notes=_MLQA_NOTE),
    TaskSpec("mlqa_es", ("mlqa-es", "mlqa.es.es"), "qa", False, "facebook/mlqa", "mlqa.es.es",
             _MLQA_SPLITS, "mlqa", notes=_MLQA_NOTE),
    TaskSpec("sst2", ("glue", "glue;sst2", "sst-2", "glue-sst2"), "classification", False,
             "nyu-mll/glue", "sst2", _STANDARD_SPLITS, "glue",
             label_names=("negative", "positive"),
             notes="GLUE test labels are hidden (-1); report on validation."),
)


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
