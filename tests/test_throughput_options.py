"""The loop's speed options change speed, not results: bucket padding leaves every objective's loss
alone, the attention implementations agree on right-padded batches, the three AdamW kernels give
the same 50-step curve, and a compiled run gives the eager curve with a counted, bounded number of
graphs. Every option records itself in run_args.json."""
from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pytest
import torch
from transformers import GPT2Config, GPT2ForQuestionAnswering, GPT2ForSequenceClassification, GPT2LMHeadModel

from tests.conftest import run_module
from tests.test_training_loop import context
from utils.classification.objective import ClassificationObjective, RegressionObjective
from utils.run.errors import ToolkitError
from utils.training.loop import LoopSettings
from utils.training.loop import length_grouped_batches
from utils.training.runtime import Compiler, bucket_width, pad_batch_to_width
from utils.training.loop import predict
from utils.training.loop import make_compiler
from utils.training.loop import train
from utils.qa.pipeline import CausalLMObjective, SpanObjective
from utils.training.runtime import resolve_attention
from utils.training.optim import build_optimizer, resolve_optimizer_implementation

VOCAB, PAD = 64, 0


def tiny_config(attention: str = "eager", **extra) -> GPT2Config:
    config = GPT2Config(vocab_size=VOCAB, n_positions=128, n_layer=2, n_embd=32, n_head=2, resid_pdrop=0.0,
                        embd_pdrop=0.0, attn_pdrop=0.0, bos_token_id=1, eos_token_id=1, pad_token_id=PAD, **extra)
    config._attn_implementation = attention
    return config


def span_rows(count: int, seed: int, low: int = 6, high: int = 120) -> list[dict]:
    """QA feature rows of random lengths; the context is everything after the first 3 tokens."""
    generator = np.random.default_rng(seed)
    rows = []
    for _ in range(count):
        length = int(generator.integers(low, high))
        start = int(generator.integers(3, length))
        rows.append({"input_ids": generator.integers(2, VOCAB, size=length).tolist(), "context_start": 3,
                     "context_end": length, "null_index": 0, "start_positions": start,
                     "end_positions": int(generator.integers(start, length))})
    return rows


# ----------------------------------------------------------------------------- bucket padding

def test_bucket_padding_by_hand():
    assert [bucket_width(w, 64) for w in (1, 63, 64, 65, 384)] == [64, 64, 64, 128, 384]
    batch = {"input_ids": torch.tensor([[5, 6, 7]]), "attention_mask": torch.tensor([[1, 1, 0]]),
             "labels": torch.tensor([[-100, 6, 7]]), "candidates": torch.tensor([[False, True, True]]),
             "start_positions": torch.tensor([2])}
    padded = pad_batch_to_width(batch, 5, pad_token_id=9)
    assert padded["input_ids"].tolist() == [[5, 6, 7, 9, 9]]
    assert padded["attention_mask"].tolist() == [[1, 1, 0, 0, 0]]
    assert padded["labels"].tolist() == [[-100, 6, 7, -100, -100]]
    assert padded["candidates"].tolist() == [[False, True, True, False, False]]
    assert padded["start_positions"].tolist() == [2]
    with pytest.raises(ValueError, match="more than the bucket width 2"):
        pad_batch_to_width(batch, 2, pad_token_id=9)


@pytest.mark.parametrize("kind", ["span", "lm", "classification", "regression"])
def test_bucket_padding_leaves_each_objective_loss_unchanged(kind):
    """The loss of a batch and of the same batch padded to a 64-wide bucket are equal: the added
    columns are masked from attention and excluded from every loss."""
    torch.manual_seed(0)
    rows = span_rows(5, seed=1, high=40)
    if kind == "span":
        model, objective = GPT2ForQuestionAnswering(tiny_config()), SpanObjective(PAD)
    elif kind == "lm":
        model, objective = GPT2LMHeadModel(tiny_config()), CausalLMObjective(PAD)
        rows = [{"input_ids": r["input_ids"], "labels": [-100] * 3 + r["input_ids"][3:]} for r in rows]
    else:
        regression = kind == "regression"
        model = GPT2ForSequenceClassification(tiny_config(num_labels=1 if regression else 2))
        objective = RegressionObjective(PAD) if regression else ClassificationObjective(PAD)
        rows = [{"input_ids": r["input_ids"], "labels": 0.5 * i if regression else i % 2} for i, r in enumerate(rows)]
    model.eval()
    batch = objective.collate(rows)
    assert batch["input_ids"].size(1) < 64
    with torch.no_grad():
        plain = float(objective.loss(model, batch))
        padded = float(objective.loss(model, Compiler(64).pad(batch, PAD)))
    assert padded == pytest.approx(plain, rel=1e-5, abs=1e-6)


# ----------------------------------------------------------------------------- attention

def test_attention_implementations_agree_on_right_padded_batches():
    """Eager and SDPA attention give each right-padded row's span logits over its real tokens, and
    both equal the row run alone without padding: the padding mask is honoured."""
    torch.manual_seed(0)
    eager = GPT2ForQuestionAnswering(tiny_config("eager")).eval()
    sdpa = GPT2ForQuestionAnswering(tiny_config("sdpa")).eval()
    sdpa.load_state_dict(eager.state_dict())
    rows = span_rows(4, seed=2, high=30)
    batch = SpanObjective(PAD).collate(rows)
    with torch.no_grad():
        outputs = {name: model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"])
                   for name, model in (("eager", eager), ("sdpa", sdpa))}
        for i, row in enumerate(rows):
            n = len(row["input_ids"])
            alone = eager(input_ids=torch.tensor([row["input_ids"]])).start_logits[0]
            for name, out in outputs.items():
                assert torch.allclose(out.start_logits[i, :n], alone, atol=1e-5), (name, i)


def test_what_auto_resolves_to():
    assert resolve_attention("auto") is None and resolve_attention("eager") == "eager"
    assert resolve_optimizer_implementation("auto", torch.device("cpu")) == "fused"
    assert resolve_optimizer_implementation("auto", torch.device("meta")) == "for-loop"
    with pytest.raises(ToolkitError, match="no fused AdamW for meta"):
        resolve_optimizer_implementation("fused", torch.device("meta"))
    kinds = {kind: build_optimizer(torch.nn.Linear(2, 2), 1e-3, device=torch.device("cpu"), implementation=kind)
             for kind in ("fused", "foreach", "for-loop")}
    assert kinds["fused"].defaults["fused"] and kinds["foreach"].defaults["foreach"]
    assert not kinds["for-loop"].defaults["foreach"] and not kinds["for-loop"].defaults["fused"]


# ----------------------------------------------------------------------------- curves

def loss_curve(folder) -> list[float]:
    return [e["loss"] for e in map(json.loads, open(folder / "log.jsonl")) if "loss" in e]


def train_tiny_span(tmp_path, name: str, rows: list[dict], **settings_fields) -> tuple[list[float], torch.nn.Module, dict]:
    torch.manual_seed(0)
    model = GPT2ForQuestionAnswering(tiny_config())
    folder = tmp_path / name
    folder.mkdir()
    settings = LoopSettings(learning_rate=1e-3, num_train_epochs=1, per_device_train_batch_size=4, logging_steps=1,
                            seed=0, **settings_fields)
    ctx = replace(context(folder), compiler=make_compiler(settings))
    metrics = train(model, rows, [len(r["input_ids"]) for r in rows], SpanObjective(PAD), settings, ctx,
                    save_model=lambda m, f: None)
    return loss_curve(folder), model, {"metrics": metrics, "ctx": ctx}


def test_the_three_adamw_kernels_give_the_same_50_step_curve(tmp_path):
    rows = span_rows(200, seed=3)
    runs = {kind: train_tiny_span(tmp_path, kind, rows, optimizer_implementation=kind)
            for kind in ("for-loop", "foreach", "fused")}
    reference_curve, reference_model, _ = runs["for-loop"]
    assert len(reference_curve) == 50
    for kind in ("foreach", "fused"):
        curve, model, _ = runs[kind]
        assert np.allclose(curve, reference_curve, rtol=1e-5, atol=1e-6), kind
        for (name, a), b in zip(reference_model.named_parameters(), model.parameters()):
            if name.endswith(("qa_outputs.bias", "ln_f.bias")):
                continue   # no gradient: the span softmax ignores a shift shared by all positions
            if name.endswith("attn.c_attn.bias"):
                a, b = torch.cat([a[:32], a[64:]]), torch.cat([b[:32], b[64:]])   # key biases: shift-invariant too
            # Adam divides by sqrt(v): a zero gradient's rounding noise moves those by up to lr per step.
            assert torch.allclose(a, b, rtol=1e-4, atol=1e-6), (kind, name)


@pytest.mark.slow
def test_a_compiled_run_gives_the_eager_curve_with_one_graph_per_shape(tmp_path):
    """50 steps of the tiny GPT-2: the compiled curve equals the eager one within float rounding;
    the graphs compiled are exactly the distinct (batch, bucket width) shapes of the batches, counted
    from the batches themselves; evaluation adds one graph per evaluation shape, and a second run
    of the same shapes compiles nothing."""
    rows = span_rows(200, seed=4)
    lengths = [len(r["input_ids"]) for r in rows]
    eager_curve, _, _ = train_tiny_span(tmp_path, "eager", rows)
    compiled_curve, model, run = train_tiny_span(tmp_path, "compiled", rows, torch_compile=True,
                                                 compile_width_multiple=64)
    assert len(compiled_curve) == 50
    assert np.allclose(compiled_curve, eager_curve, rtol=1e-4, atol=1e-5)
    batches = length_grouped_batches(lengths, 4, seed=0, epoch=0)
    shapes = {(len(b), bucket_width(max(lengths[i] for i in b), 64)) for b in batches}
    assert run["metrics"]["train_compiled_graphs"] == len(shapes) == 2
    assert sorted(tuple(s) for s in run["ctx"].compiler.report()["compiled_shapes"]) == sorted(shapes)
    events = [e for e in map(json.loads, open(tmp_path / "compiled" / "log.jsonl")) if e.get("event") == "compilation"]
    assert events and events[-1]["compiled_graphs"] == 2
    # Inference: eval batches of 32 sorted by length, 200 rows -> 6 of 32 and one of 8.
    objective = SpanObjective(PAD)
    ctx = run["ctx"]
    eval_shapes = {(len(b), bucket_width(max(lengths[i] for i in b), 64))
                   for b in [sorted(range(200), key=lambda i: -lengths[i])[k:k + 32] for k in range(0, 200, 32)]}
    outputs = predict(model, rows, lengths, lambda m, b: list(objective.logits(m, b)[0].detach()), objective.collate,
                      32, ctx, compilable=True, pad_token_id=PAD)
    assert ctx.compiler.counter.graphs == 2 + len(eval_shapes)
    with torch.no_grad():
        model.eval()
        alone = objective.logits(model, objective.collate([rows[0]]))[0][0]
    n = lengths[0]
    assert torch.allclose(outputs[0][:n], alone[:n], atol=1e-5)
    # The same shapes again (another model of the same architecture): no new graph.
    before = ctx.compiler.counter.graphs
    train(GPT2ForQuestionAnswering(tiny_config()), rows, lengths, SpanObjective(PAD),
          LoopSettings(learning_rate=1e-3, num_train_epochs=1, per_device_train_batch_size=4, seed=0,
                       torch_compile=True), ctx, save_model=lambda m, f: None)
    assert ctx.compiler.counter.graphs == before


@pytest.mark.slow
def test_more_graphs_than_the_limit_is_an_error_not_a_silent_fall_back():
    compiler = Compiler(8, max_graphs_per_function=1)
    double = compiler.function(lambda model, batch: model(batch["input_ids"].float()) * 2)
    model = torch.nn.Identity()
    double(model, {"input_ids": torch.ones(2, 8)})
    with pytest.raises(ToolkitError, match="more than 1 graphs .* --compile_width_multiple"):
        double(model, {"input_ids": torch.ones(2, 16)})


# ----------------------------------------------------------------------------- the scripts

@pytest.mark.slow
def test_the_qa_script_compiled_matches_eager_and_records_its_options(tmp_path):
    from tests.test_qa_script import SHORT
    from utils.models.tiny import write_learnable_task

    folder = tmp_path / "data"
    folder.mkdir()
    model = write_learnable_task(folder, train_examples=400, dev_examples=40)
    common = ["run_intermediate_source_GPT2.py", "--dataset_name", "squad", "--model_name", str(model),
              "--train_file", str(folder / "train.jsonl"), "--validation_file", str(folder / "dev.jsonl"),
              "--max_steps", "12", "--per_device_train_batch_size", "8", "--max_eval_samples", "40", "--no_progress",
              *SHORT]
    results = {}
    for name, extra in (("eager", []), ("compiled", ["--torch_compile"])):
        done = run_module(*common, "--output_dir", str(tmp_path / name), *extra, timeout=600)
        assert done.returncode == 0, done.stderr[-2000:]
        results[name] = json.loads((tmp_path / name / "all_results.json").read_text())
    assert results["compiled"]["eval_f1"] == pytest.approx(results["eager"]["eval_f1"], abs=1e-6)
    assert results["compiled"]["train_loss"] == pytest.approx(results["eager"]["train_loss"], rel=1e-4)
    assert results["compiled"]["compiled_graphs"] >= 2 and "compiled_graphs" not in results["eager"]
    derived = json.loads((tmp_path / "compiled" / "run_args.json").read_text())["derived"]
    assert derived["optimizer_implementation"] == "fused" and derived["attn_implementation"] == "sdpa"
    assert derived["torch_compile"] is True and derived["padded_width_multiple"] == 64
    args = json.loads((tmp_path / "eager" / "run_args.json").read_text())["args"]
    assert args["optimizer_implementation"] == "auto" and args["attn_implementation"] == "auto"
    assert args["torch_compile"] is False and args["max_tokens_per_batch"] is None


@pytest.mark.slow
def test_the_target_script_compiled_matches_eager_and_its_seeds_share_the_graphs(tiny_checkpoint, tmp_path):
    from tests.test_target_script import FAST

    runs = {}
    for name, extra in (("eager", []), ("compiled", ["--torch_compile"])):
        done = run_module("run_target_task_GPT2_sst2_multiple.py", "--pretrained_model", str(tiny_checkpoint),
                          "--seeds", "1", "2", "--output_dir", str(tmp_path / name), "--no_progress", *FAST, *extra,
                          # Full batches only (64 = 8 × 8, 32 = one evaluation batch).
                          "--selection", "last", "--max_train_samples", "64", "--max_eval_samples", "32",
                          timeout=600)
        assert done.returncode == 0, done.stderr[-2000:]
        runs[name] = [json.loads((tmp_path / name / "runs" / f"seed_{s}" / "all_results.json").read_text()) for s in (1, 2)]
    for eager, compiled in zip(runs["eager"], runs["compiled"]):
        assert compiled["eval_accuracy"] == eager["eval_accuracy"]
        assert compiled["train_loss"] == pytest.approx(eager["train_loss"], rel=1e-4)
    ends = [[e for e in map(json.loads, open(tmp_path / "compiled" / "runs" / f"seed_{s}" / "log.jsonl"))
             if e.get("event") == "train_end"][0] for s in (1, 2)]
    # Seed 2 trains on the same shapes as seed 1 with a model of the same architecture: nothing new to compile.
    compilation = [e for e in map(json.loads, open(tmp_path / "compiled" / "runs" / "seed_1" / "log.jsonl"))
                   if e.get("event") == "compilation"][0]
    # Full batches of 8 only, one graph per 64-wide bucket the sentences fall in.
    assert {batch for batch, _ in compilation["compiled_shapes"]} == {8}
    assert all(width % 64 == 0 for _, width in compilation["compiled_shapes"])
    assert ends[0]["train_compiled_graphs"] == len(compilation["compiled_shapes"]) >= 1
    assert ends[1]["train_compiled_graphs"] == 0
