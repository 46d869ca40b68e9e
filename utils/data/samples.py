"""The small hand-written samples bundled in `data/samples/`, one pair of files per task.

They are written in each dataset's ORIGINAL file format, so the demo and the tests go through the
same adapters as the real data.
"""
from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from types import MappingProxyType

from utils.data.registry import get_task

SAMPLES_DIR = Path(__file__).resolve().parents[2] / "data" / "samples"

# task -> {logical split: file under data/samples}
SAMPLE_FILES: Mapping[str, Mapping[str, str]] = MappingProxyType({
    "squad": {"train": "squad/train-v1.1.json", "validation": "squad/dev-v1.1.json"},
    "squad_v2": {"train": "squad_v2/train-v2.0.json", "validation": "squad_v2/dev-v2.0.json"},
    "duorc-p": {"train": "duorc/ParaphraseRC_train.json", "validation": "duorc/ParaphraseRC_dev.json"},
    "duorc-s": {"train": "duorc/SelfRC_train.json", "validation": "duorc/SelfRC_dev.json"},
    "drop": {"train": "drop/drop_dataset_train.json", "validation": "drop/drop_dataset_dev.json"},
    "quoref": {"train": "quoref/quoref-train.json", "validation": "quoref/quoref-dev.json"},
    # MLQA has no training split; its test file plays that part (see utils.data.registry).
    "mlqa_en": {"train": "mlqa/test-context-en-question-en.json",
                "validation": "mlqa/dev-context-en-question-en.json"},
    "sst2": {"train": "sst2/train.tsv", "validation": "sst2/dev.tsv"},
    # The other GLUE targets, each in its original TSV layout (data/samples/README.md).
    "cola": {"train": "glue/cola/train.tsv", "validation": "glue/cola/dev.tsv"},
    "mrpc": {"train": "glue/mrpc/train.tsv", "validation": "glue/mrpc/dev.tsv"},
    "stsb": {"train": "glue/stsb/train.tsv", "validation": "glue/stsb/dev.tsv"},
    "qqp": {"train": "glue/qqp/train.tsv", "validation": "glue/qqp/dev.tsv"},
    # MNLI's two tasks share its training file and differ in the dev file.
    "mnli": {"train": "glue/mnli/train.tsv", "validation": "glue/mnli/dev_matched.tsv"},
    "mnli-mm": {"train": "glue/mnli/train.tsv", "validation": "glue/mnli/dev_mismatched.tsv"},
    "qnli": {"train": "glue/qnli/train.tsv", "validation": "glue/qnli/dev.tsv"},
    "rte": {"train": "glue/rte/train.tsv", "validation": "glue/rte/dev.tsv"},
    "wnli": {"train": "glue/wnli/train.tsv", "validation": "glue/wnli/dev.tsv"},
})
SST2_UNLABELLED_TEST = "sst2/test.tsv"


def sample_file(task: str, split: str, samples_dir: Path = SAMPLES_DIR) -> Path:
    """Path of the bundled sample for a task (name or alias) and split ("train"/"validation").

    Raises:
        KeyError: no sample is bundled for that task.
    """
    name = get_task(task).name
    if name not in SAMPLE_FILES:
        raise KeyError(f"no bundled sample for task {name!r}; samples exist for {sorted(SAMPLE_FILES)}")
    return samples_dir / SAMPLE_FILES[name][split]
