"""The pieces of an intermediate QA run, shared by run_intermediate_source_GPT2.py and maml_qa.py:
model loading for an objective, features, evaluation with the official metric, prediction files."""
from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from utils.models.loading import LoadedModel, load_model
from utils.data.loading import DEFAULT_LOCAL_HINT, TaskData, load_task_data
from utils.data.feature_cache import build_features, source_digest, tokenizer_digest
from utils.training.objectives import CausalLMObjective, SpanObjective
from utils.run.outputs import write_json
from utils.qa.features import SpanFeatureConfig, span_features
from utils.qa.features import questions_cut as span_questions_cut
from utils.qa.generative import questions_cut as generative_questions_cut
from utils.qa.generative import (GenerativeConfig, continuation_logprob, generative_features, greedy_decode,
                                 left_padded, postprocess_generations)
from utils.qa.postprocess import PostprocessConfig, postprocess_span_predictions
from utils.data.records import has_training_span
from utils.data.subsets import SubsetInfo, stratified_sample
from utils.qa.metrics import official_predictions, score_qa
from utils.data.registry import TaskSpec
from utils.models.tokenization import truncation_note
from utils.training.inference import predict
from utils.training.loop import LoopContext

logger = logging.getLogger(__name__)

def qa_settings(args, version_2_with_negative: bool) -> QASettings:
    """QASettings from the flags of add_qa_args (validated; raises ToolkitError)."""
    span = SpanFeatureConfig(args.max_seq_length, args.doc_stride, args.max_question_length)
    generative = GenerativeConfig(args.max_seq_length, args.doc_stride, args.max_question_length, args.max_answer_length)
    (span if args.objective == "span" else generative).validate()
    return QASettings(args.objective, span, generative,
                      PostprocessConfig(args.n_best_size, args.max_answer_length, args.null_score_diff_threshold,
                                        version_2_with_negative))


def cache_dir_from(value: str) -> Path | None:
    """--features_cache_dir, with 'none' meaning no cache."""
    return None if value.lower() == "none" else Path(value)


@dataclass(frozen=True)
class QASettings:
    """Everything that shapes features, decoding and post-processing."""

    objective: str
    span: SpanFeatureConfig
    generative: GenerativeConfig
    postprocess: PostprocessConfig


def load_qa_model(name_or_path: str, objective: str, qa_head: str, attn_implementation: str | None = None
                  ) -> LoadedModel:
    """The model for an objective: a QA head for `span`, the LM head for `generative`, with
    transformers' `attn_implementation` (None: its default).

    Between QA tasks the parent's QA head is kept unless `qa_head == "reinit"`, which draws a
    fresh one as GPT-2 initialises linear layers (normal, std = initializer_range; zero bias).
    """
    loaded = load_model(name_or_path, "qa" if objective == "span" else "lm", attn_implementation=attn_implementation)
    if objective == "span" and qa_head == "reinit":
        head = loaded.model.qa_outputs
        with torch.no_grad():
            head.weight.normal_(0.0, loaded.model.config.initializer_range)
            head.bias.zero_()
    return loaded


def training_records(records: list[dict], objective: str) -> list[dict]:
    """The questions an objective can learn from.

    span: a located answer, or no answer at all (the null slot). generative: also an answer given
    only as one string (a DROP number or date, a DuoRC free-form answer), which it writes out
    (`generative_features` trains on it when the whole context fits one window).
    """
    if objective == "span":
        return [record for record in records if has_training_span(record)]
    # An empty question has nothing to condition the answer on; it is evaluated, never trained on.
    return [record for record in records if record["question"].strip()
            and (has_training_span(record) or (record["gold"] and len(record["gold"][0]) == 1))]


def load_qa_split(spec: TaskSpec, split: str, file: str | None, *, limit: int | None, objective: str, seed: int,
                  local_hint: str = DEFAULT_LOCAL_HINT) -> tuple[TaskData, list[dict], SubsetInfo]:
    """A QA split from `file` (or the Hub): the adapter's data, and the records a run uses (for
    training those the objective can learn from, for evaluation every question), as a
    document-stratified random subset of `limit` records drawn with `seed` (all when None)."""
    data = load_task_data(spec, split, file, local_hint=local_hint)
    records = training_records(data.records, objective) if split == "train" else data.records
    subset, info = stratified_sample(records, limit, seed)
    return data, subset, info


def make_objective(settings: QASettings, tokenizer: Any) -> SpanObjective | CausalLMObjective:
    return SpanObjective(tokenizer.pad_token_id) if settings.objective == "span" else CausalLMObjective(tokenizer.pad_token_id)


def qa_features(records: list[dict], tokenizer: Any, settings: QASettings, *, training: bool,
                cache_dir: Path | None, name: str):
    """Training rows or evaluation features of the run's objective (cached; see utils.data.feature_cache)."""
    if settings.objective == "span":
        def fn(batch: dict, indices: list[int]) -> dict:
            out = span_features(batch, tokenizer, settings.span, with_labels=training, with_offsets=not training,
                                example_offset=indices[0])
            out["length"] = [len(ids) for ids in out["input_ids"]]
            return out
        config = settings.span
    else:
        def fn(batch: dict, indices: list[int]) -> dict:
            out = generative_features(batch, tokenizer, settings.generative, training=training,
                                      example_offset=indices[0])
            out["length"] = [len(ids) for ids in out["input_ids"]]
            return out
        config = settings.generative
    key = {"objective": settings.objective, "training": training, "config": config.__dict__,
           "tokenizer": tokenizer_digest(tokenizer), "code": source_digest(span_features, generative_features)}
    return build_features(records, fn, name=f"{name}-{settings.objective}-{'train' if training else 'eval'}",
                          settings=key, cache_dir=cache_dir)


def question_truncation_note(records: list[dict], tokenizer: Any, settings: QASettings, name: str) -> str | None:
    """One line saying how many questions --max_question_length cuts, or None when it cuts none
    (the tokenizer's own "sequence length is longer" warning is silenced: it fires on every long
    context, which the windows handle)."""
    questions = [record["question"] for record in records]
    if settings.objective == "span":
        limit = settings.span.max_question_tokens
        cut = span_questions_cut(tokenizer, questions, limit)
    else:
        limit = settings.generative.max_question_tokens
        cut = generative_questions_cut(tokenizer, questions, limit)
    return truncation_note(name, cut, len(records), limit, unit="questions")


def _span_forward(objective: SpanObjective):
    def forward(model: torch.nn.Module, batch: dict[str, torch.Tensor]) -> list[tuple[np.ndarray, np.ndarray]]:
        start, end = objective.logits(model, batch)
        return _per_row_logits(start, end, batch["attention_mask"])
    return forward


# Left out of compiled graphs (--torch_compile): a Python loop over rows whose lengths would be traced as constants.
@torch.compiler.disable
def _per_row_logits(start: torch.Tensor, end: torch.Tensor, attention_mask: torch.Tensor
                    ) -> list[tuple[np.ndarray, np.ndarray]]:
    """Each row's (start, end) logits over its real tokens, as NumPy arrays."""
    lengths = attention_mask.sum(-1).tolist()
    return [(start[i, :n].cpu().numpy(), end[i, :n].cpu().numpy()) for i, n in enumerate(lengths)]


def _generation_collate(pad_id: int):
    def collate(rows: list[dict]) -> dict[str, torch.Tensor]:
        return left_padded([row["input_ids"] for row in rows], pad_id)
    return collate


def _generate_forward(tokenizer: Any, config: GenerativeConfig, score_null: bool):
    """Per window: (greedy answer, its mean log-probability, the mean log-probability of the
    "unanswerable" answer when `score_null`, else None)."""
    stop_ids = sorted({tokenizer.eos_token_id, *tokenizer("\n", add_special_tokens=False)["input_ids"]})
    null_ids = tokenizer(" " + config.unanswerable_text, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]

    def forward(model: torch.nn.Module, batch: dict[str, torch.Tensor]) -> list[tuple[str, float, float | None]]:
        decoded = greedy_decode(model, batch["input_ids"], batch["attention_mask"], config.max_answer_tokens, stop_ids)
        nulls = continuation_logprob(model, batch["input_ids"], batch["attention_mask"], null_ids) if score_null \
            else [None] * len(decoded)
        return [(tokenizer.decode(ids), score, null) for (ids, score), null in zip(decoded, nulls)]
    return forward


def evaluate_qa(model: torch.nn.Module, tokenizer: Any, spec: TaskSpec, examples: list[dict], features,
                settings: QASettings, batch_size: int, ctx: LoopContext) -> tuple[dict[str, float], Any] | None:
    """Predict every evaluation example and score it with the task's official metric.

    Returns (metrics prefixed `eval_`, predictions) on rank 0, None on the other ranks (see
    utils.qa.metrics for the keys of each metric).
    """
    lengths = list(features["length"])
    if settings.objective == "span":
        objective = SpanObjective(tokenizer.pad_token_id)
        outputs = predict(model, features, lengths, _span_forward(objective), objective.collate, batch_size, ctx,
                          compilable=True, pad_token_id=objective.pad_token_id)
        if outputs is None:
            return None
        columns = {name: list(features[name]) for name in ("example_index", "context_start", "context_end",
                                                     "null_index", "token_start", "token_end")}
        predictions = postprocess_span_predictions(examples, columns, [o[0] for o in outputs],
                                                   [o[1] for o in outputs], settings.postprocess)
    else:
        outputs = predict(model, features, lengths,
                          _generate_forward(tokenizer, settings.generative, spec.version_2_with_negative),
                          _generation_collate(tokenizer.pad_token_id), batch_size, ctx, desc="generating")
        if outputs is None:
            return None
        predictions = postprocess_generations(examples, {"example_index": list(features["example_index"])}, outputs,
                                              version_2_with_negative=spec.version_2_with_negative,
                                              unanswerable_text=settings.generative.unanswerable_text,
                                              null_score_diff_threshold=settings.postprocess.null_score_diff_threshold)
    return score_predictions(spec, examples, predictions), predictions


def score_predictions(spec: TaskSpec, examples: list[dict], predictions: Any) -> dict[str, Any]:
    """eval_-prefixed official metrics of the task over every example (utils.qa.metrics.score_qa)."""
    metrics = score_qa(spec, examples, predictions.predictions,
                       null_odds=predictions.null_odds if spec.version_2_with_negative else None,
                       best_non_null=predictions.best_non_null)
    return {f"eval_{key}": value for key, value in metrics.items()}


def write_predictions(output_dir: Path, predictions: Any, spec: TaskSpec) -> None:
    """eval_predictions.json (as the dataset's official script reads it), eval_nbest_predictions.json
    and, for tasks with unanswerable questions, eval_null_odds.json."""
    write_json(output_dir / "eval_predictions.json", official_predictions(spec.metric, predictions.predictions))
    write_json(output_dir / "eval_nbest_predictions.json", predictions.nbest)
    if spec.version_2_with_negative:
        write_json(output_dir / "eval_null_odds.json", predictions.null_odds)
