"""Checkpoint contract: heads swap without touching the backbone, lineage grows, saves are atomic."""
import json
import shutil
import textwrap

import pytest
import torch
from safetensors.torch import load_file, save_file

from tests.conftest import run_module
from utils.models.checkpoint import INCOMPLETE_MARKER, build_lineage, read_lineage, save_checkpoint, sha256_file
from utils.data.loading import sample_file
from utils.models.loading import load_model
from utils.run.errors import CheckpointError
from utils.training.runtime import set_seed

LABELS = ("negative", "positive")


def backbone(folder):
    return {k: v for k, v in load_file(str(folder / "model.safetensors")).items() if k.startswith("transformer.")}


def resave(loaded, folder, *, task, head):
    lineage = build_lineage(script="test", task=task, objective="span", head=head, seed=0,
                            parent=loaded.provenance)
    return save_checkpoint(loaded.model, loaded.tokenizer, folder, lineage)


def test_chain_lm_qa_classification_keeps_every_backbone_tensor(tiny_checkpoint, tmp_path):
    original = backbone(tiny_checkpoint)
    assert len(original) > 10
    assert len(read_lineage(tiny_checkpoint)["chain"]) == 1

    qa = load_model(tiny_checkpoint, "qa")
    qa_dir = resave(qa, tmp_path / "qa", task="squad", head="qa")
    cls = load_model(qa_dir, "classification", label_names=LABELS)
    cls_dir = resave(cls, tmp_path / "cls", task="sst2", head="classification")

    for folder in (qa_dir, cls_dir):
        saved = backbone(folder)
        assert saved.keys() == original.keys()
        for key, tensor in original.items():
            assert torch.equal(saved[key], tensor), key
    qa_keys = set(load_file(str(qa_dir / "model.safetensors")))
    cls_keys = set(load_file(str(cls_dir / "model.safetensors")))
    assert {"qa_outputs.weight", "qa_outputs.bias"} <= qa_keys
    assert "score.weight" in cls_keys and not any(k.startswith("qa_outputs") for k in cls_keys)

    chain_lengths = [len(read_lineage(f)["chain"]) for f in (tiny_checkpoint, qa_dir, cls_dir)]
    assert chain_lengths == [1, 2, 3]
    lineage = read_lineage(cls_dir)
    assert lineage["parent"] == {"path": str(qa_dir), "sha256": sha256_file(qa_dir / "model.safetensors")}
    assert lineage["sha256"] == sha256_file(cls_dir / "model.safetensors")
    assert [entry["script"] for entry in lineage["chain"]] == ["utils.tiny_model", "test", "test"]
    assert lineage["chain"][1]["sha256"] == sha256_file(qa_dir / "model.safetensors")
    for key in ("schema_version", "script", "task", "objective", "head", "seed", "parent", "chain",
                "metrics", "created_at"):
        assert key in lineage


def test_qa_head_is_kept_between_qa_tasks(tiny_checkpoint, tmp_path):
    set_seed(1)
    first = load_model(tiny_checkpoint, "qa")
    qa_dir = resave(first, tmp_path / "qa", task="squad", head="qa")
    set_seed(2)  # a new head would differ; a kept head must not
    second = load_model(qa_dir, "qa")
    assert torch.equal(second.model.qa_outputs.weight, first.model.qa_outputs.weight)


def test_new_head_depends_on_the_seed(tiny_checkpoint):
    set_seed(3)
    a = load_model(tiny_checkpoint, "classification", label_names=LABELS).model.score.weight
    set_seed(3)
    b = load_model(tiny_checkpoint, "classification", label_names=LABELS).model.score.weight
    set_seed(4)
    c = load_model(tiny_checkpoint, "classification", label_names=LABELS).model.score.weight
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_pad_token_and_label_change(tiny_checkpoint, tmp_path):
    loaded = load_model(tiny_checkpoint, "classification", label_names=LABELS)
    assert loaded.tokenizer.pad_token is not None and loaded.tokenizer.padding_side == "right"
    assert loaded.model.config.pad_token_id == loaded.tokenizer.pad_token_id
    cls_dir = resave(loaded, tmp_path / "cls2", task="sst2", head="classification")
    three = load_model(cls_dir, "classification", label_names=("a", "b", "c"))
    assert three.model.score.weight.shape[0] == 3 and three.model.config.num_labels == 3
    assert three.model.config.id2label == {0: "a", 1: "b", 2: "c"}


def tampered_copy(tiny_checkpoint, tmp_path, change):
    folder = tmp_path / "tampered"
    shutil.copytree(tiny_checkpoint, folder)
    tensors = load_file(str(folder / "model.safetensors"))
    change(tensors)
    save_file(tensors, str(folder / "model.safetensors"), metadata={"format": "pt"})
    (folder / "lineage.json").unlink()  # a foreign folder: no digest to compare with
    return folder


def test_missing_backbone_key_is_an_error_naming_it(tiny_checkpoint, tmp_path):
    folder = tampered_copy(tiny_checkpoint, tmp_path, lambda t: t.pop("transformer.ln_f.weight"))
    with pytest.raises(CheckpointError, match=r"transformer\.ln_f\.weight"):
        load_model(folder, "qa")


def test_unexpected_backbone_key_is_an_error_naming_it(tiny_checkpoint, tmp_path):
    folder = tampered_copy(tiny_checkpoint, tmp_path,
                           lambda t: t.__setitem__("transformer.h.7.mlp.c_fc.bias", torch.zeros(4)))
    with pytest.raises(CheckpointError, match=r"transformer\.h\.7\.mlp\.c_fc\.bias"):
        load_model(folder, "lm")


def test_weights_changed_after_saving_are_detected(tiny_checkpoint, tmp_path):
    folder = tmp_path / "changed"
    shutil.copytree(tiny_checkpoint, folder)
    with open(folder / "model.safetensors", "r+b") as handle:
        handle.seek(-8, 2)
        handle.write(b"\x00" * 8)
    with pytest.raises(CheckpointError, match="sha256"):
        load_model(folder, "lm")


@pytest.mark.slow
@pytest.mark.parametrize("lineage", [True, False])
def test_cut_weights_are_one_line_with_or_without_a_lineage(tiny_checkpoint, tmp_path, lineage):
    """Any save_pretrained folder (no lineage.json, so no recorded sha256) whose model.safetensors
    was cut short: a one-line error naming the file, exit status 2 from the script."""
    folder = tmp_path / "cut"
    shutil.copytree(tiny_checkpoint, folder)
    if not lineage:
        (folder / "lineage.json").unlink()
    weights = folder / "model.safetensors"
    with open(weights, "r+b") as handle:
        handle.truncate(weights.stat().st_size // 2)
    with pytest.raises(CheckpointError, match=r"model\.safetensors: not a complete safetensors file"):
        load_model(folder, "lm")
    done = run_module("run_target_task_GPT2_sst2_multiple.py", "--pretrained_model", str(folder), "--train_file",
                      str(sample_file("sst2", "train")), "--validation_file", str(sample_file("sst2", "validation")),
                      "--num_runs", "1", "--output_dir", str(tmp_path / "out"))
    assert done.returncode == 2 and done.stderr.strip().count("\n") == 0, done.stderr[-2000:]
    assert done.stderr.startswith("error: ") and "not a complete safetensors file" in done.stderr


def test_the_space_a_save_needs_counts_the_tokenizer_and_stays_a_lower_bound(tiny_checkpoint, tmp_path):
    """The full-disk check once counted the weights only, refused nothing, and the save then failed
    on the tokenizer: it counts tokenizer.json as written, and never more than the folder takes."""
    from utils.models.checkpoint import checkpoint_bytes

    loaded = load_model(tiny_checkpoint, "lm")
    saved = save_checkpoint(loaded.model, loaded.tokenizer, tmp_path / "saved", read_lineage(tiny_checkpoint))
    sizes = {p.name: p.stat().st_size for p in saved.iterdir()}
    assert checkpoint_bytes(loaded.model, loaded.tokenizer) - checkpoint_bytes(loaded.model) == sizes["tokenizer.json"]
    assert sizes["tokenizer.json"] + sizes["config.json"] < checkpoint_bytes(loaded.model, loaded.tokenizer) \
        <= sum(sizes.values())


def test_folders_that_are_not_checkpoints(tiny_checkpoint, tmp_path):
    with pytest.raises(CheckpointError, match="not a folder"):
        load_model(tmp_path / "nowhere", "lm")
    no_weights = tmp_path / "no_weights"
    shutil.copytree(tiny_checkpoint, no_weights)
    (no_weights / "model.safetensors").unlink()
    (no_weights / "pytorch_model.bin").write_bytes(b"pickle")
    with pytest.raises(CheckpointError, match="safetensors"):
        load_model(no_weights, "lm")


class FailingTokenizer:
    """Stands in for a tokenizer whose save dies after the model files were written."""

    def __init__(self, tokenizer):
        self.pad_token = tokenizer.pad_token
        self.pad_token_id = tokenizer.pad_token_id

    def save_pretrained(self, folder):
        raise KeyboardInterrupt("interrupted during save")


def test_interrupted_save_keeps_the_previous_checkpoint(tiny_checkpoint, tmp_path):
    loaded = load_model(tiny_checkpoint, "qa")
    destination = resave(loaded, tmp_path / "run", task="squad", head="qa")
    (destination / "log.jsonl").write_text('{"step": 1}\n')
    before = sha256_file(destination / "model.safetensors")
    with torch.no_grad():
        loaded.model.qa_outputs.weight.add_(1.0)
    lineage = build_lineage(script="test", task="squad", objective="span", head="qa", seed=0,
                            parent=loaded.provenance)
    with pytest.raises(KeyboardInterrupt):
        save_checkpoint(loaded.model, FailingTokenizer(loaded.tokenizer), destination, lineage)
    assert sha256_file(destination / "model.safetensors") == before
    assert load_model(destination, "qa").provenance.sha256 == before
    assert [p.name for p in tmp_path.iterdir()] == ["run"]  # nothing half-written left beside it
    # A completed save replaces the weights and keeps the run's other files.
    save_checkpoint(loaded.model, loaded.tokenizer, destination, lineage)
    assert sha256_file(destination / "model.safetensors") != before
    assert (destination / "log.jsonl").read_text() == '{"step": 1}\n'


@pytest.mark.slow
def test_killed_save_leaves_nothing_the_loader_accepts(tiny_checkpoint, tmp_path):
    """A process killed in the middle of a save (no clean-up runs at all)."""
    destination = tmp_path / "run"
    shutil.copytree(tiny_checkpoint, destination)
    before = sha256_file(destination / "model.safetensors")
    script = tmp_path / "killed_save.py"
    script.write_text(textwrap.dedent(f"""
        import os, sys
        from utils.models.checkpoint import build_lineage, save_checkpoint
        from utils.models.loading import load_model

        class DiesMidSave:
            def __init__(self, tokenizer):
                self.pad_token, self.pad_token_id = tokenizer.pad_token, tokenizer.pad_token_id
            def save_pretrained(self, folder):
                os._exit(9)  # like SIGKILL: no exception handlers, no clean-up

        loaded = load_model({str(destination)!r}, "lm")
        lineage = build_lineage(script="t", task=None, objective=None, head="lm", seed=0,
                                parent=loaded.provenance)
        save_checkpoint(loaded.model, DiesMidSave(loaded.tokenizer), {str(destination)!r}, lineage)
    """))
    done = run_module(str(script))
    assert done.returncode == 9, done.stderr
    leftovers = [p for p in tmp_path.iterdir() if p.name.startswith(".run.partial-")]
    assert len(leftovers) == 1 and (leftovers[0] / "model.safetensors").exists()
    assert (leftovers[0] / INCOMPLETE_MARKER).exists()
    with pytest.raises(CheckpointError, match="incomplete"):
        load_model(leftovers[0], "lm")
    assert load_model(destination, "lm").provenance.sha256 == before
    assert json.loads((destination / "lineage.json").read_text())["sha256"] == before


def test_folder_without_tokenizer_is_refused(tiny_checkpoint, tmp_path):
    folder = tmp_path / "model_only"
    shutil.copytree(tiny_checkpoint, folder)
    for name in ("tokenizer.json", "tokenizer_config.json"):
        (folder / name).unlink()
    with pytest.raises(CheckpointError, match="no tokenizer files"):
        load_model(folder, "qa")


def test_backbone_shape_mismatch_names_the_keys(tiny_checkpoint, tmp_path):
    folder = tmp_path / "wider_config"
    shutil.copytree(tiny_checkpoint, folder)
    config = json.loads((folder / "config.json").read_text())
    config["n_positions"] = 64  # the saved position table has 128 rows
    (folder / "config.json").write_text(json.dumps(config))
    for head in ("lm", "qa", "classification"):
        with pytest.raises(CheckpointError, match=r"transformer\.wpe\.weight"):
            load_model(folder, head, label_names=LABELS)


def test_failed_swap_puts_the_old_checkpoint_back(tiny_checkpoint, tmp_path, monkeypatch):
    """A failure between the two renames (old folder aside, new one into place) is undone."""
    import os

    import utils.run.outputs as fs

    loaded = load_model(tiny_checkpoint, "lm")
    destination = resave(loaded, tmp_path / "run", task=None, head="lm")
    before = sha256_file(destination / "model.safetensors")
    real_replace = os.replace
    calls = []

    def flaky_replace(src, dst):
        calls.append((src, dst))
        if len(calls) == 2:  # the new folder moving into place
            raise OSError("disk went away")
        return real_replace(src, dst)

    monkeypatch.setattr(fs.os, "replace", flaky_replace)
    lineage = build_lineage(script="t", task=None, objective=None, head="lm", seed=0, parent=loaded.provenance)
    with pytest.raises(OSError, match="disk went away"):
        save_checkpoint(loaded.model, loaded.tokenizer, destination, lineage)
    monkeypatch.undo()
    assert load_model(destination, "lm").provenance.sha256 == before


def test_saved_files_follow_the_umask_and_lineage_paths_are_absolute(tiny_checkpoint, tmp_path, monkeypatch):
    import os
    import stat

    monkeypatch.chdir(tmp_path)
    old_umask = os.umask(0o022)
    try:
        loaded = load_model(os.path.relpath(tiny_checkpoint, tmp_path), "qa")
        destination = resave(loaded, tmp_path / "shared_run", task="squad", head="qa")
    finally:
        os.umask(old_umask)
    assert stat.S_IMODE(destination.stat().st_mode) == 0o755
    for name in ("lineage.json", "model.safetensors", "config.json"):
        assert stat.S_IMODE((destination / name).stat().st_mode) == 0o644, name
    parent_path = read_lineage(destination)["parent"]["path"]
    assert os.path.isabs(parent_path) and parent_path == str(tiny_checkpoint.resolve())
