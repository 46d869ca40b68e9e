"""The task registry: every task the study knows, its kind, its Hub source and its adapter.

One frozen `TaskSpec` per task. Names are matched case-insensitively and the original
repository's spellings (`duorc;SelfRC`, `glue;sst2`, ...) are accepted as aliases, so that
`--tasks 'squad,squad_v2,duorc;SelfRC'` works as it did there.

The classification targets are the GLUE tasks. Each knows whether it reads one text or a pair
(`text_pair_required`), its label space (class names in the Hub's order, or for STS-B a score
range), its primary metric (the first of `utils.classification.metrics.GLUE_METRICS`), and where
its original release TSV and its Hub rows keep the texts and the label (`TableLayout`).
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
# A GLUE task's metric is its PRIMARY one in utils.classification.metrics.GLUE_METRICS (CoLA
# Matthews correlation, MRPC and QQP F1, STS-B Pearson, the others accuracy).
MetricName = Literal["squad_v1", "squad_v2", "duorc", "drop", "quoref", "mlqa", "accuracy",
                     "matthews_correlation", "f1", "pearson"]
SPLITS = ("train", "validation")


@dataclass(frozen=True)
class TableLayout:
    """Where a classification task's original release TSV and its Hub rows keep each field.

    Attributes:
        text_columns: the TSV column of the text, or of the two texts of a pair task, in order.
        label_column: the TSV column of the label (a class name or id, or a score).
        hub_fields: the Hub rows' field of the text, or of the two texts (the label is `label`).
        headerless: the column names of a release file that has no header line (CoLA's train
            and dev files), in order; None when the file starts with a header.
    """

    text_columns: tuple[str, ...]
    label_column: str
    hub_fields: tuple[str, ...]
    headerless: tuple[str, ...] | None = None


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
        metric: the dataset's official evaluation, for a GLUE task its primary metric (see
            MetricName).
        label_names: class names, index = integer label (classification only; None for a
            regression task).
        language: the answer language, where the metric depends on it (MLQA).
        notes: caveats a user should know (shown by `python -m utils.data --list_tasks`).
        text_pair_required: a sentence-pair task: every record has a non-empty `text_pair`.
        regression_range: a regression task's score range [low, high] (labels are floats in it).
        table: where the original TSV and the Hub rows keep the texts and the label.
        metrics: the task's metrics, primary first, when they are not GLUE's (a task file's,
            utils.data.task_files); empty for a registered task.
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
        """The number of classes, or a regression task's score range (what record validation takes)."""
        if self.regression_range is not None:
            return self.regression_range
        return len(self.label_names or ())

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

_GLUE_NOTE = "GLUE test labels are hidden (-1); report on validation."
# CoLA's train.tsv and dev.tsv have no header line: source, label, the original annotation mark
# ("*" for unacceptable, empty for acceptable), sentence.
_COLA_COLUMNS = ("source", "label", "original_label", "sentence")
_MNLI_LABELS = ("entailment", "neutral", "contradiction")
# MNLI's train.tsv and dev_*.tsv share these columns (the dev files add label2..label5); the label is
# the annotators' consensus, gold_label.
_MNLI_TABLE = TableLayout(("sentence1", "sentence2"), "gold_label", ("premise", "hypothesis"))
_MNLI_MATCHED_SPLITS = MappingProxyType({"train": "train", "validation": "validation_matched"})
_MNLI_MISMATCHED_SPLITS = MappingProxyType({"train": "train", "validation": "validation_mismatched"})

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
    TaskSpec("cola", ("glue;cola", "glue-cola"), "classification", False,
             "nyu-mll/glue", "cola", _STANDARD_SPLITS, "glue", "matthews_correlation",
             label_names=("unacceptable", "acceptable"), notes=_GLUE_NOTE,
             table=TableLayout(("sentence",), "label", ("sentence",), headerless=_COLA_COLUMNS)),
    TaskSpec("sst2", ("glue", "glue;sst2", "sst-2", "glue-sst2"), "classification", False,
             "nyu-mll/glue", "sst2", _STANDARD_SPLITS, "glue", "accuracy",
             label_names=("negative", "positive"),
             notes="GLUE test labels are hidden (-1); report on validation.",
             table=TableLayout(("sentence",), "label", ("sentence",))),
    TaskSpec("mrpc", ("glue;mrpc", "glue-mrpc"), "classification", False,
             "nyu-mll/glue", "mrpc", _STANDARD_SPLITS, "glue", "f1",
             label_names=("not_equivalent", "equivalent"), notes=_GLUE_NOTE, text_pair_required=True,
             table=TableLayout(("#1 String", "#2 String"), "Quality", ("sentence1", "sentence2"))),
    TaskSpec("stsb", ("sts-b", "glue;stsb", "glue-stsb", "sts_b"), "classification", False,
             "nyu-mll/glue", "stsb", _STANDARD_SPLITS, "glue", "pearson",
             notes="A regression task: the label is a similarity score in [0, 5]. GLUE test scores are "
                   "hidden (-1) and a file without scores is refused; report on validation.",
             text_pair_required=True, regression_range=(0.0, 5.0),
             table=TableLayout(("sentence1", "sentence2"), "score", ("sentence1", "sentence2"))),
    TaskSpec("qqp", ("glue;qqp", "glue-qqp"), "classification", False,
             "nyu-mll/glue", "qqp", _STANDARD_SPLITS, "glue", "f1",
             label_names=("not_duplicate", "duplicate"), notes=_GLUE_NOTE, text_pair_required=True,
             table=TableLayout(("question1", "question2"), "is_duplicate", ("question1", "question2"))),
    TaskSpec("mnli", ("mnli-m", "mnli_matched", "glue;mnli", "glue-mnli", "glue;mnli_matched"),
             "classification", False, "nyu-mll/glue", "mnli", _MNLI_MATCHED_SPLITS, "glue", "accuracy",
             label_names=_MNLI_LABELS, text_pair_required=True, table=_MNLI_TABLE,
             notes="Validation is dev_matched.tsv (Hub validation_matched: the training genres); the target "
                   "script scores the same model on dev_mismatched.tsv too. " + _GLUE_NOTE),
    TaskSpec("mnli-mm", ("mnli_mismatched", "glue;mnli_mismatched", "glue-mnli-mm", "mnli_mm"),
             "classification", False, "nyu-mll/glue", "mnli", _MNLI_MISMATCHED_SPLITS, "glue", "accuracy",
             label_names=_MNLI_LABELS, text_pair_required=True, table=_MNLI_TABLE,
             notes="MNLI's training data with validation dev_mismatched.tsv (Hub validation_mismatched: "
                   "genres not in training). " + _GLUE_NOTE),
    TaskSpec("qnli", ("glue;qnli", "glue-qnli"), "classification", False,
             "nyu-mll/glue", "qnli", _STANDARD_SPLITS, "glue", "accuracy",
             label_names=("entailment", "not_entailment"), notes=_GLUE_NOTE, text_pair_required=True,
             table=TableLayout(("question", "sentence"), "label", ("question", "sentence"))),
    TaskSpec("rte", ("glue;rte", "glue-rte"), "classification", False,
             "nyu-mll/glue", "rte", _STANDARD_SPLITS, "glue", "accuracy",
             label_names=("entailment", "not_entailment"), notes=_GLUE_NOTE, text_pair_required=True,
             table=TableLayout(("sentence1", "sentence2"), "label", ("sentence1", "sentence2"))),
    TaskSpec("wnli", ("glue;wnli", "glue-wnli"), "classification", False,
             "nyu-mll/glue", "wnli", _STANDARD_SPLITS, "glue", "accuracy",
             label_names=("not_entailment", "entailment"), text_pair_required=True,
             notes="Its dev set is adversarial (hypotheses shared with training examples, opposite "
                   "labels): majority-class accuracy is the usual baseline. " + _GLUE_NOTE,
             table=TableLayout(("sentence1", "sentence2"), "label", ("sentence1", "sentence2"))),
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


def registered_spec(name: str) -> TaskSpec | None:
    """The registered task of a name or alias (case-insensitive), or None."""
    return _INDEX.get(name.strip().lower())


def get_task(name: str) -> TaskSpec:
    """Resolve a task name or alias (case-insensitive), or the path of a task file (ending in .json,
    utils.data.task_files: a task of the user's own).

    Raises:
        UnknownTaskError: the name is not registered (the message lists every known name), or the
            task file is missing or malformed.
    """
    from utils.data.task_files import is_task_file, task_from_file   # it builds a TaskSpec of this module

    if is_task_file(name):
        return task_from_file(name)
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
