"""utils.run.progress, and the long loops that report through it (training, Reptile, Task2Vec batches)."""
from __future__ import annotations

import io
import json
import logging
from pathlib import Path

import datasets
import pytest
import torch

from utils.training.runtime import RunContext
from utils.meta.training import MetaSettings, TaskStream, meta_train
from utils.training.checkpoints import TrainState
from utils.run.outputs import JsonlLog
from utils.run.progress import Progress, format_duration
from utils.training.runtime import resolve_precision
from utils.training.loop import LoopSettings
from utils.training.loop import predict
from utils.training.loop import train


class FakeClock:
    """A clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def progress_lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "utils.run.progress"]


def test_without_a_bar_a_line_every_interval_with_step_total_and_eta(caplog):
    caplog.set_level(logging.INFO, logger="utils.run.progress")
    clock, records = FakeClock(), []
    with Progress(10, "training", bar=False, log=records.append, interval_s=60, clock=clock) as progress:
        clock.now += 20
        progress.update()            # 20 s: too early
        clock.now += 20
        progress.update()            # 40 s: too early
        assert records == [] and progress_lines(caplog) == []
        clock.now += 20
        progress.update()            # 60 s, 3 of 10 done: 20 s a step, 7 left -> 140 s
        assert len(records) == 1
        assert records[0] == {"event": "progress", "description": "training", "step": 3, "total": 10,
                              "elapsed_s": 60.0, "eta_s": 140.0}
        assert progress_lines(caplog) == ["training: 3 of 10 (30%), 1m00s elapsed, ETA 2m20s"]
        clock.now += 50
        progress.set_postfix(loss="2.3100")
        progress.update()            # 50 s after the last line: none
        clock.now += 10
        progress.update()            # 60 s after the last line: 5 of 10 in 120 s -> 120 s left
        assert [r["step"] for r in records] == [3, 5] and records[1]["eta_s"] == 120.0
        assert progress_lines(caplog)[-1] == "training: 5 of 10 (50%), 2m00s elapsed, ETA 2m00s, loss 2.3100"
    assert progress.bar is None


def test_a_resumed_loop_measures_its_rate_on_the_steps_done_here(caplog):
    caplog.set_level(logging.INFO, logger="utils.run.progress")
    clock, records = FakeClock(), []
    progress = Progress(100, "Reptile", bar=False, log=records.append, interval_s=30, clock=clock, initial=40)
    assert progress.record()["eta_s"] is None      # no step yet: no rate
    clock.now += 30
    progress.update(3)                             # 10 s a step, 57 left
    assert records[-1]["step"] == 43 and records[-1]["eta_s"] == 570.0
    assert progress_lines(caplog) == ["Reptile: 43 of 100 (43%), 30s elapsed, ETA 9m30s"]


def test_interval_none_reports_nothing_and_zero_reports_every_step(caplog):
    caplog.set_level(logging.INFO, logger="utils.run.progress")
    clock, quiet, every = FakeClock(), [], []
    silent = Progress(3, "x", bar=False, log=quiet.append, interval_s=None, clock=clock)
    chatty = Progress(3, "y", bar=False, log=every.append, interval_s=0, clock=clock)
    for _ in range(3):
        clock.now += 1
        silent.update()
        chatty.update()
    assert quiet == [] and [r["step"] for r in every] == [1, 2, 3]
    assert all(line.startswith("y: ") for line in progress_lines(caplog))


def test_the_bar_shows_k_of_n_and_replaces_the_line(caplog):
    caplog.set_level(logging.INFO, logger="utils.run.progress")
    clock, records, stream = FakeClock(), [], io.StringIO()
    with Progress(5, "seeds", bar=True, log=records.append, interval_s=60, clock=clock, unit="seed",
                  file=stream) as progress:
        progress.update()
        clock.now += 61
        progress.update()
        assert (progress.bar.n, progress.bar.total) == (2, 5)
    assert "2/5" in stream.getvalue() and "seeds" in stream.getvalue()
    assert progress_lines(caplog) == []              # the bar says it already
    assert [r["step"] for r in records] == [2]       # the run's log gets the record either way


def test_format_duration():
    assert [format_duration(s) for s in (0, 45.4, 725, 3 * 3600 + 7 * 60 + 59)] == ["0s", "45s", "12m05s", "3h07m"]


# ----------------------------------------------------------------------------- the loops that use it

class _Square:
    """A toy objective: fit y = 2x with one weight."""

    name = "toy"

    def collate(self, rows: list[dict]) -> dict[str, torch.Tensor]:
        x = torch.tensor([[row["x"]] for row in rows])
        return {"input_ids": torch.zeros(len(rows), 1, dtype=torch.long), "attention_mask": torch.ones(len(rows), 1),
                "x": x, "y": 2 * x}

    def loss(self, model: torch.nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        return torch.nn.functional.mse_loss(model(batch["x"]), batch["y"])


def _context(tmp_path: Path, interval: float) -> RunContext:
    device = torch.device("cpu")
    return RunContext(device, resolve_precision("fp32", device), output_dir=tmp_path, log=JsonlLog(tmp_path / "log.jsonl"),
                      progress_interval_s=interval)


def _events(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_training_without_a_bar_reports_its_steps(tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="utils.run.progress")
    rows = [{"x": float(i)} for i in range(8)]
    train(torch.nn.Linear(1, 1), rows, [1] * 8, _Square(), LoopSettings(max_steps=4, per_device_train_batch_size=2,
                                                                          logging_steps=100),
          _context(tmp_path, 0.0), save_model=lambda model, folder: None)
    progress = [e for e in _events(tmp_path / "log.jsonl") if e.get("event") == "progress"]
    assert [(e["step"], e["total"]) for e in progress] == [(1, 4), (2, 4), (3, 4), (4, 4)]
    assert progress[-1]["eta_s"] == 0.0 and progress[0]["description"] == "training"
    assert progress_lines(caplog)[1].startswith("training: 2 of 4 (50%)")


def test_evaluation_without_a_bar_reports_its_batches(tmp_path, caplog):
    """Evaluation of a whole validation set on a CPU is a long loop too; before, it had a bar only."""
    caplog.set_level(logging.INFO, logger="utils.run.progress")
    rows = [{"x": float(i)} for i in range(7)]
    outputs = predict(torch.nn.Linear(1, 1), rows, [1] * 7, lambda model, batch: batch["x"][:, 0].tolist(),
                      _Square().collate, 3, _context(tmp_path, 0.0), desc="evaluating")
    assert outputs == [float(i) for i in range(7)]  # every row once, in order
    progress = [e for e in _events(tmp_path / "log.jsonl") if e.get("event") == "progress"]
    assert [(e["step"], e["total"], e["description"]) for e in progress] == [(1, 3, "evaluating"), (2, 3, "evaluating"),
                                                                              (3, 3, "evaluating")]
    assert progress_lines(caplog)[0].startswith("evaluating: 1 of 3 (33%)")


def test_reptile_outer_loop_reports_its_steps(tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="utils.run.progress")
    rows = datasets.Dataset.from_dict({"x": [float(i) for i in range(8)], "length": [1] * 8})
    streams = {name: TaskStream(rows, 2, seed=index) for index, name in enumerate(("a", "b"))}
    settings = MetaSettings(num_train_iterations=3, meta_batch_size=2, num_inner_steps=1, inner_batch_size=2,
                            inner_lr=0.01, outer_lr=1.0, outer_lr_final=0.0, inner_optimizer="sgd",
                            inner_opt_state="reset", task_sampling="uniform", max_grad_norm=0.0, seed=0,
                            eval_every=None, save_every=None)
    device = torch.device("cpu")
    log = JsonlLog(tmp_path / "meta_log.jsonl")
    meta_train(torch.nn.Linear(1, 1), _Square(), streams, settings,
               RunContext(device, output_dir=tmp_path, log=log, progress_interval_s=0.0), state=TrainState(global_step=1))
    events = _events(tmp_path / "meta_log.jsonl")
    progress = [e for e in events if e.get("event") == "progress"]
    assert [(e["step"], e["total"]) for e in progress] == [(2, 3), (3, 3)]     # resumed at step 1
    assert [e["step"] for e in events if "tasks" in e] == [2, 3]              # the step records are unchanged
    assert progress_lines(caplog)[0].startswith("Reptile: 2 of 3 (67%)")


def test_task2vec_fisher_batches_report_where_they_are(tiny_checkpoint, caplog):

    from task2vec.embedding.embed import EmbeddingSettings, embed_task
    from task2vec.embedding.probe import HeadSettings
    from utils.models.loading import load_model
    from utils.data.loading import load_task_data
    from utils.data.loading import sample_file
    from utils.data.registry import get_task

    caplog.set_level(logging.INFO, logger="utils.run.progress")
    device = torch.device("cpu")
    settings = EmbeddingSettings(batch_size=8, num_batches=3, num_samples=1, noise_floor=False,
                                 head=HeadSettings(0, 5e-5, 1e-4, 8))
    context = RunContext(device, progress_interval_s=0.0)
    records = load_task_data("sst2", "train", sample_file("sst2", "train")).records
    embed_task(load_model(tiny_checkpoint, "lm"), get_task("sst2"), records, settings, context, source="samples")
    assert [line.split(" (")[0] for line in progress_lines(caplog)] == [
        "Fisher sst2: 1 of 3", "Fisher sst2: 2 of 3", "Fisher sst2: 3 of 3"]
