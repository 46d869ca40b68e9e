"""utils.data.loading.same_file_warning: training on the evaluation file is said out loud."""
from __future__ import annotations

import os
import shutil

from utils.data.loading import same_file_warning
from utils.data.loading import sample_file

TRAIN, DEV = sample_file("sst2", "train"), sample_file("sst2", "validation")


def test_the_same_file_by_path_link_or_content_is_named(tmp_path, monkeypatch):
    message = same_file_warning(str(TRAIN), str(TRAIN))
    assert message is not None and str(TRAIN) in message and "not held out" in message
    os.symlink(TRAIN, tmp_path / "link.tsv")
    assert same_file_warning(str(TRAIN), str(tmp_path / "link.tsv")) is not None
    monkeypatch.chdir(tmp_path)
    assert same_file_warning(os.path.relpath(TRAIN, tmp_path), str(TRAIN)) is not None
    shutil.copy(TRAIN, tmp_path / "copy.tsv")
    copied = same_file_warning(str(TRAIN), str(tmp_path / "copy.tsv"))
    assert copied is not None and "same content" in copied


def test_different_files_or_the_hub_give_no_warning(tmp_path):
    assert same_file_warning(str(TRAIN), str(DEV)) is None
    assert same_file_warning(None, str(DEV)) is None and same_file_warning(str(TRAIN), None) is None
    assert same_file_warning(None, None) is None                 # both from the Hub: its own splits
    (tmp_path / "a.tsv").write_text("sentence\tlabel\nx \t1\n")
    (tmp_path / "b.tsv").write_text("sentence\tlabel\ny \t1\n")  # same size, other content
    assert same_file_warning(str(tmp_path / "a.tsv"), str(tmp_path / "b.tsv")) is None
    assert same_file_warning(str(tmp_path / "a.tsv"), str(tmp_path / "missing.tsv")) is None  # the loader says


def test_a_saved_dataset_folder_and_its_copy(tmp_path):
    import datasets

    datasets.Dataset.from_dict({"sentence": ["a", "b"], "label": [0, 1]}).save_to_disk(str(tmp_path / "saved"))
    assert same_file_warning(str(tmp_path / "saved"), str(tmp_path / "saved" / ".")) is not None
    shutil.copytree(tmp_path / "saved", tmp_path / "copy")
    assert same_file_warning(str(tmp_path / "saved"), str(tmp_path / "copy")) is not None
    datasets.Dataset.from_dict({"sentence": ["a", "c"], "label": [0, 1]}).save_to_disk(str(tmp_path / "other"))
    assert same_file_warning(str(tmp_path / "saved"), str(tmp_path / "other")) is None


def test_the_target_script_warns_when_it_trains_on_its_validation_file(tiny_checkpoint, tmp_path, caplog):
    import logging

    import run_target_task_GPT2_sst2_multiple as target

    dev = str(sample_file("sst2", "validation"))
    with caplog.at_level(logging.WARNING):
        target.main(["--pretrained_model", str(tiny_checkpoint), "--train_file", dev, "--validation_file", dev,
                     "--max_train_samples", "30", "--num_runs", "1", "--epochs", "1", "--selection", "last",
                     "--features_cache_dir", "none", "--output_dir", str(tmp_path / "t")])
    assert any("same" in record.getMessage() and record.levelno == logging.WARNING for record in caplog.records)
