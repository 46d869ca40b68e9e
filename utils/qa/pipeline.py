"""The pieces of a QA run that need the model, shared by the QA scripts: model loading, the
objectives (batches and losses), features, evaluation with the official metric, prediction files."""
from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from utils.data.loading import (DEFAULT_LOCAL_HINT, SubsetInfo, TaskData, build_features, load_task_data, source_digest,
                                stratified_sample, tokenizer_digest)
from utils.data.records import has_training_span
from utils.data.registry import TaskSpec
from utils.models.loading import LoadedModel, load_model, truncation_note
from utils.qa.features import (GenerativeConfig, QAPredictions, QASettings, postprocess_span_predictions,
                               questions_cut, span_features)
from utils.qa.generative import (continuation_logprob, generative_features, greedy_decode, left_padded,
                                 postprocess_generations)
from utils.qa.metrics import official_predictions, score_qa
from utils.run.outputs import write_json
from utils.training.loop import attention_mask_for, pad_sequences, predict
from utils.training.runtime import RunContext

logger = logging.getLogger(__name__)


def cache_dir_from(value: str) -> Path | None:
    """--features_cache_dir, 'none' meaning no cache."""
    return None if value.lower() == "none" else Path(value)


def load_qa_model(name_or_path: str, objective: str, qa_head: str, attn_implementation: str | None = None
                  ) -> LoadedModel:
    """The model for an objective: a QA head for `span`, the LM head for `generative`. The parent's
    QA head is kept unless `qa_head == "reinit"`, which draws a fresh one as GPT-2 initialises linear
    layers (normal, std = initializer_range; zero bias)."""
    loaded = load_model(name_or_path, "qa" if objective == "span" else "lm", attn_implementation=attn_implementation)
    if objective == "span" and qa_head == "reinit":
        head = loaded.model.qa_outputs
        with torch.no_grad():
            head.weight.normal_(0.0, loaded.model.config.initializer_range)
            head.bias.zero_()
    return loaded


def load_qa_split(spec: TaskSpec, split: str, file: str | None, *, limit: int | None, objective: str, seed: int,
                  local_hint: str = DEFAULT_LOCAL_HINT) -> tuple[TaskData, list[dict], SubsetInfo]:
    """A QA split from `file` (or the Hub): the adapter's data, and the records a run uses (evaluation:
    every question; training: those the objective can learn from), as a document-stratified subset
    of `limit` records drawn with `seed` (all when None). span learns from a located answer or none
    (the null slot); generative also from an answer given only as one string (a DROP number, a DuoRC
    free-form answer), but never from an empty question (nothing to condition on)."""
    data = load_task_data(spec, split, file, local_hint=local_hint)
    records = data.records
    if split == "train" and objective == "span":
        records = [record for record in records if has_training_span(record)]
    elif split == "train":
        records = [record for record in records if record["question"].strip()
                   and (has_training_span(record) or (record["gold"] and len(record["gold"][0]) == 1))]
    subset, info = stratified_sample(records, limit, seed)
    return data, subset, info


@dataclass(frozen=True)
class SpanObjective:
    """Extractive QA on utils.qa.features rows: start/end cross-entropy of a QA head over the window's
    context tokens and its null slot only (the positions post-processing can choose), so that
    neither the question nor the padding competes for probability mass."""

    pad_token_id: int
    pad_to_multiple_of: int = 8
    name: str = "span"

    def collate(self, rows: list[dict]) -> dict[str, torch.Tensor]:
        ids = [row["input_ids"] for row in rows]
        input_ids = pad_sequences(ids, self.pad_token_id, self.pad_to_multiple_of)   # (B, T)
        candidates = torch.zeros_like(input_ids, dtype=torch.bool)        # (B, T)
        for i, row in enumerate(rows):
            candidates[i, row["context_start"]:row["context_end"]] = True
            candidates[i, row["null_index"]] = True
        batch = {"input_ids": input_ids, "attention_mask": attention_mask_for(ids, self.pad_to_multiple_of),
                 "candidates": candidates}
        if "start_positions" in rows[0]:
            batch["start_positions"] = torch.tensor([row["start_positions"] for row in rows])
            batch["end_positions"] = torch.tensor([row["end_positions"] for row in rows])
        return batch

    def logits(self, model: torch.nn.Module, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, T) start and end logits in fp32, -inf outside the candidate positions."""
        out = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"])
        blocked = ~batch["candidates"]
        return (out.start_logits.float().masked_fill(blocked, float("-inf")),
                out.end_logits.float().masked_fill(blocked, float("-inf")))

    def loss(self, model: torch.nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        start, end = self.logits(model, batch)
        return (F.cross_entropy(start, batch["start_positions"]) + F.cross_entropy(end, batch["end_positions"])) / 2


@dataclass(frozen=True)
class CausalLMObjective:
    """Causal LM loss on rows {input_ids, labels}: next-token cross-entropy where the label is not
    -100 (for generative QA, the answer and its closing end-of-text)."""

    pad_token_id: int
    pad_to_multiple_of: int = 8
    name: str = "lm"

    def collate(self, rows: list[dict]) -> dict[str, torch.Tensor]:
        ids = [row["input_ids"] for row in rows]
        batch = {"input_ids": pad_sequences(ids, self.pad_token_id, self.pad_to_multiple_of),
                 "attention_mask": attention_mask_for(ids, self.pad_to_multiple_of)}
        if "labels" in rows[0]:
            batch["labels"] = pad_sequences([row["labels"] for row in rows], -100, self.pad_to_multiple_of)
        return batch

    def loss(self, model: torch.nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
        # Position t predicts token t+1; the answer's closing EOS is a label even though pad == EOS,
        # because labels are built explicitly rather than from the pad id.
        shifted = logits[:, :-1].float()                                   # (B, T-1, V)
        targets = batch["labels"][:, 1:]                                   # (B, T-1)
        return F.cross_entropy(shifted.reshape(-1, shifted.size(-1)), targets.reshape(-1), ignore_index=-100)


def make_objective(settings: QASettings, tokenizer: Any) -> SpanObjective | CausalLMObjective:
    """The training objective of `settings.objective`, padding with the tokenizer's pad id."""
    return SpanObjective(tokenizer.pad_token_id) if settings.objective == "span" else CausalLMObjective(tokenizer.pad_token_id)


def qa_features(records: list[dict], tokenizer: Any, settings: QASettings, *, training: bool,
                cache_dir: Path | None, name: str):
    """Training rows or evaluation features of the run's objective, each with its `length` (cached;
    see utils.data.loading.build_features)."""
    span = settings.objective == "span"
    config = settings.span if span else settings.generative

    def fn(batch: dict, indices: list[int]) -> dict:
        out = span_features(batch, tokenizer, config, with_labels=training, with_offsets=not training,
                            example_offset=indices[0]) if span else \
            generative_features(batch, tokenizer, config, training=training, example_offset=indices[0])
        out["length"] = [len(ids) for ids in out["input_ids"]]
        return out

    key = {"objective": settings.objective, "training": training, "config": config.__dict__,
           "tokenizer": tokenizer_digest(tokenizer), "code": source_digest(span_features, generative_features)}
    return build_features(records, fn, name=f"{name}-{settings.objective}-{'train' if training else 'eval'}",
                          settings=key, cache_dir=cache_dir)


def question_truncation_note(records: list[dict], tokenizer: Any, settings: QASettings, name: str) -> str | None:
    """One line saying how many questions --max_question_length cuts, or None when it cuts none (the
    tokenizer's own warning is silenced: it fires on every long context, which the windows handle)."""
    span = settings.objective == "span"
    limit = (settings.span if span else settings.generative).max_question_tokens
    cut = questions_cut(tokenizer, [r["question"] for r in records], limit, generative=not span)
    return truncation_note(name, cut, len(records), limit, unit="questions")


# Left out of compiled graphs (--torch_compile): a Python loop over rows whose lengths would be traced as constants.
@torch.compiler.disable
def _per_row_logits(start: torch.Tensor, end: torch.Tensor, attention_mask: torch.Tensor
                    ) -> list[tuple[np.ndarray, np.ndarray]]:
    """Each row's (start, end) logits over its real tokens, as NumPy arrays."""
    lengths = attention_mask.sum(-1).tolist()
    return [(start[i, :n].cpu().numpy(), end[i, :n].cpu().numpy()) for i, n in enumerate(lengths)]


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
                settings: QASettings, batch_size: int, ctx: RunContext) -> tuple[dict[str, float], Any] | None:
    """Predict every evaluation example and score it with the task's official metric: (metrics
    prefixed `eval_`, predictions) on rank 0, None on the other ranks."""
    lengths = list(features["length"])
    if settings.objective == "span":
        objective = SpanObjective(tokenizer.pad_token_id)

        def forward(model: torch.nn.Module, batch: dict[str, torch.Tensor]) -> list[tuple[np.ndarray, np.ndarray]]:
            return _per_row_logits(*objective.logits(model, batch), batch["attention_mask"])
        outputs = predict(model, features, lengths, forward, objective.collate, batch_size, ctx,
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
                          lambda rows: left_padded([row["input_ids"] for row in rows], tokenizer.pad_token_id),
                          batch_size, ctx, desc="generating")
        if outputs is None:
            return None
        predictions = postprocess_generations(examples, {"example_index": list(features["example_index"])}, outputs,
                                              settings.postprocess, settings.generative.unanswerable_text)
    metrics = score_qa(spec, examples, predictions.predictions,
                       null_odds=predictions.null_odds if spec.version_2_with_negative else None,
                       best_non_null=predictions.best_non_null)
    return {f"eval_{key}": value for key, value in metrics.items()}, predictions


def write_predictions(output_dir: Path, predictions: QAPredictions, spec: TaskSpec) -> None:
    """eval_predictions.json (as the dataset's official script reads it), eval_nbest_predictions.json
    and, for tasks with unanswerable questions, eval_null_odds.json."""
    write_json(output_dir / "eval_predictions.json", official_predictions(spec.metric, predictions.predictions))
    write_json(output_dir / "eval_nbest_predictions.json", predictions.nbest)
    if spec.version_2_with_negative:
        write_json(output_dir / "eval_null_odds.json", predictions.null_odds)
