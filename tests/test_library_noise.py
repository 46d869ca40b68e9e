"""What the libraries print on their own during a run at a terminal, and our one-line replacements.

The libraries' chatter shows only when stderr is a terminal (without one, progress bars and their
reports are off), so the script runs here under a pseudo-terminal, as a researcher runs it.
"""
from __future__ import annotations

import json
import logging
import os
import select
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO_ROOT
from utils.data.records import write_jsonl

pty = pytest.importorskip("pty")


def run_in_terminal(args: list[str], cwd: Path, timeout: float = 300) -> tuple[int, str]:
    """Run `python ARGS` with stderr on a pseudo-terminal 160 columns wide; returns (status, stderr)."""
    import fcntl
    import struct
    import termios

    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 160, 0, 0))
    process = subprocess.Popen([sys.executable, *args], cwd=cwd, stdin=subprocess.DEVNULL,
                               stdout=subprocess.DEVNULL, stderr=slave, env={**os.environ, "OMP_NUM_THREADS": "1"})
    os.close(slave)
    chunks = []
    try:
        while True:
            ready, _, _ = select.select([master], [], [], timeout)
            if not ready:
                process.kill()
                raise TimeoutError(f"{args[0]} gave no output for {timeout} s")
            try:
                data = os.read(master, 65536)
            except OSError:  # the other end closed: the process has exited
                break
            if not data:
                break
            chunks.append(data)
    finally:
        os.close(master)
    return process.wait(timeout=timeout), b"".join(chunks).decode("utf-8", errors="replace")


def long_context_records(words: int = 1500) -> list[dict]:
    """Two QA records whose context is far longer than the tokenizer's model_max_length (1024)."""
    filler = " ".join(f"word{i % 97}" for i in range(words))
    records = []
    for index in range(2):
        context = f"The harbour opened in {1850 + index}. {filler}"
        answer = str(1850 + index)
        records.append({"id": f"long-{index}", "task": "squad", "context": context, "question": "When did it open?",
                        "answers": {"text": [answer], "answer_start": [context.index(answer)]},
                        "is_impossible": False, "gold": [[answer]]})
    return records


@pytest.mark.slow
def test_a_qa_run_at_a_terminal_shows_our_lines_not_the_libraries_reports(tiny_checkpoint, tmp_path):
    data = tmp_path / "long.jsonl"
    write_jsonl(data, long_context_records())
    status, stderr = run_in_terminal(
        [str(REPO_ROOT / "run_intermediate_source_GPT2.py"), "--dataset_name", "squad", "--model_name",
         str(tiny_checkpoint), "--train_file", str(data), "--validation_file", str(data), "--max_steps", "1",
         "--per_device_train_batch_size", "2", "--max_seq_length", "64", "--doc_stride", "16",
         "--max_question_length", "16", "--max_answer_length", "8", "--features_cache_dir", str(tmp_path / "cache"),
         "--output_dir", str(tmp_path / "run")], cwd=tmp_path)
    assert status == 0, stderr[-3000:]
    assert "training" in stderr                       # the terminal path ran: our own bar is drawn
    # (a) transformers' load report: utils.models.checkpoint says which weights are new in one line.
    assert "LOAD REPORT" not in stderr and "Some weights of" not in stderr
    assert "into a qa head (new: ['qa_outputs.bias', 'qa_outputs.weight'])" in stderr
    # (b) datasets' bars for writing the feature cache.
    assert "Saving the dataset" not in stderr
    assert any((tmp_path / "cache").iterdir())        # the cache was written all the same
    # (c) the tokenizer's alarm about contexts longer than 1024 tokens: they are windowed on purpose.
    assert "Token indices sequence length" not in stderr
    assert json.loads((tmp_path / "run" / "all_results.json").read_text())["train_steps"] == 1


def test_the_feature_cache_leaves_the_datasets_bar_switch_as_it_found_it(tmp_path):
    import datasets

    from utils.data.loading import build_features

    records = [{"id": str(i), "text": f"sentence {i}", "label": i % 2} for i in range(4)]
    def fn(batch, _):
        return {"n": [len(text) for text in batch["text"]]}

    was = datasets.are_progress_bars_disabled()
    try:
        for disabled in (False, True):
            (datasets.disable_progress_bars if disabled else datasets.enable_progress_bars)()
            for _ in range(2):  # written, then read from the cache
                built = build_features(records, fn, name=f"t{disabled}", settings={}, cache_dir=tmp_path)
                assert list(built["n"]) == [10] * 4
                assert datasets.are_progress_bars_disabled() is disabled
    finally:
        (datasets.disable_progress_bars if was else datasets.enable_progress_bars)()


# ----------------------------------------------------------------------------- our own line for real cuts

def test_classification_features_mark_the_sentences_they_cut(tiny_checkpoint):
    from utils.models.loading import load_model
    from utils.classification.objective import classification_features
    from utils.models.loading import truncation_note

    tokenizer = load_model(tiny_checkpoint, "lm").tokenizer
    texts = ["short", "a much longer sentence that goes on and on", "", "exactly"]
    lengths = [len(tokenizer(t, add_special_tokens=False)["input_ids"]) for t in texts]
    limit = lengths[3]                       # "exactly" fits to the token: not cut
    features = classification_features({"text": texts, "label": [0, 1, 0, 1]}, tokenizer, limit)
    assert features["truncated"] == [n > limit for n in lengths] == [False, True, False, False]
    reference = tokenizer(texts, add_special_tokens=False, truncation=True, max_length=limit)["input_ids"]
    assert features["input_ids"] == [ids or [tokenizer.eos_token_id] for ids in reference]
    assert truncation_note("sst2-train", sum(features["truncated"]), len(texts), limit) == \
        f"sst2-train: 1 of 4 sentences were cut to {limit} tokens"
    assert truncation_note("sst2-eval", 0, 4, limit) is None


def test_task2vec_says_once_how_many_probe_sentences_were_cut(tiny_checkpoint, caplog):
    import logging

    import torch

    from task2vec.embedding.embed import EmbeddingSettings, embed_task
    from task2vec.embedding.probe import HeadSettings
    from task2vec.embedding.sequences import task_rows
    from utils.models.loading import load_model
    from utils.data.loading import load_task_data
    from utils.training.runtime import RunContext
    from utils.data.loading import sample_file
    from utils.data.registry import get_task

    loaded, spec = load_model(tiny_checkpoint, "lm"), get_task("sst2")
    records = load_task_data(spec, "train", sample_file("sst2", "train")).records
    full = [len(loaded.tokenizer(r["text"], add_special_tokens=False)["input_ids"]) for r in records]
    task = task_rows(spec, records, loaded.tokenizer, "task", 12)
    assert (task.truncated, task.cut_to) == (sum(n > 12 for n in full), 12) and task.truncated > 0
    lm = task_rows(spec, records, loaded.tokenizer, "lm", 24)
    assert lm.truncated == sum(n > lm.cut_to for n in full) > 0 and lm.cut_to < 24
    assert max(len(row["input_ids"]) for row in lm.rows) <= 24

    caplog.set_level(logging.INFO, logger="task2vec.embedding.embed")
    device = torch.device("cpu")
    settings = EmbeddingSettings(max_length=24, batch_size=8, num_batches=2, num_samples=1, noise_floor=False,
                                 head=HeadSettings(0, 5e-5, 1e-4, 8))
    embedding = embed_task(loaded, spec, records, settings,
                           RunContext(device), source="samples")
    lines = [r.getMessage() for r in caplog.records if "were cut" in r.getMessage()]
    assert lines == [f"sst2: {lm.truncated} of {len(records)} sentences were cut to {lm.cut_to} tokens"]
    assert embedding.metadata["examples"]["records_truncated"] == lm.truncated


def test_questions_cut_by_max_question_length_get_one_line(tiny_checkpoint, tmp_path, caplog):
    """The QA counterpart of the sentence line: how many questions --max_question_length cuts."""
    import run_intermediate_source_GPT2 as intermediate
    from utils.data.loading import sample_file

    with caplog.at_level(logging.INFO, logger="run_intermediate_source_GPT2"):
        intermediate.main(["--dataset_name", "squad", "--model_name", str(tiny_checkpoint), "--train_file",
                           str(sample_file("squad", "train")), "--validation_file", str(sample_file("squad", "validation")),
                           "--max_seq_length", "96", "--doc_stride", "32", "--max_question_length", "4",
                           "--features_cache_dir", "none", "--max_steps", "1", "--output_dir", str(tmp_path / "run")])
    lines = [r.getMessage() for r in caplog.records if "questions were cut to 4 tokens" in r.getMessage()]
    assert [line.split(":")[0] for line in lines] == ["squad-train", "squad-validation"]
    total = int(lines[0].split(" of ")[1].split()[0])
    assert 0 < int(lines[0].split(": ")[1].split()[0]) <= total
