"""The embedding of one task: rows -> disjoint batches -> fitted head -> Fisher -> coordinates.

1. The task's records become probe rows; `num_batches` disjoint batches of `batch_size` rows are
   consecutive chunks of one seeded permutation, and disjointness of record ids is checked.
2. The head is fitted once, on the final hidden states of all the chosen rows.
3. Each batch's Fisher sums are computed in chunks and reduced per output unit. Reduction is
   linear, so the TASK embedding is the pooled sums over the pooled weights and each BATCH
   embedding its own sums over its own weight: one pass gives both.
4. With `noise_floor`, every batch is estimated again with new sampled labels (same data, same
   head); the distance between the two is the estimator's noise floor.

Every random choice has its own seed from (seed, task name, stream, batch) via SeedSequence, so a
task's embedding depends neither on the other tasks of the run nor on how batches are spread over
processes.
"""
from __future__ import annotations

import hashlib
import logging
import math
import time
import zlib
from collections.abc import Callable
from dataclasses import asdict, dataclass
from functools import partial

import numpy as np
import torch

from task2vec.embedding.fisher import ESTIMATORS, fisher_sums
from task2vec.embedding.io import TaskEmbedding
from task2vec.embedding.layout import (block_traces, build_layout, flatten, layout_digest, layout_manifest,
                                       objective_exclusions, select_parameters)
from task2vec.embedding.predictions import Predictions
from task2vec.embedding.probe import (PREDICTIONS, HeadSettings, ProbeModel, cache_hidden_states, collate_fn,
                                      fit_head, head_kind, head_schedule, new_head)
from task2vec.embedding.sequences import task_rows
from utils.data.registry import TaskSpec
from utils.models.loading import LoadedModel, truncation_note
from utils.run.errors import ToolkitError
from utils.run.outputs import library_versions, utc_now
from utils.run.progress import Progress, format_duration
from utils.training.optim import autocast_context
from utils.training.runtime import RunContext, broadcast_from_main, gather_to_main, non_embedding_parameters

logger = logging.getLogger(__name__)
SCHEMA_VERSION = 1
MC_STREAM, RESEEDED_STREAM, DATA_STREAM, HEAD_STREAM, HEAD_ORDER_STREAM, RECORDS_STREAM = 0, 1, 2, 3, 4, 5


@dataclass(frozen=True)
class EmbeddingSettings:
    """Everything that decides an embedding besides the probe and the data."""

    objective: str = "lm"
    estimator: str = "mc"
    num_samples: int = 4
    max_length: int = 128
    batch_size: int = 64
    num_batches: int = 8
    chunk_size: int = 16
    minibatch_size: int = 8
    include: tuple[str, ...] = ()
    head: HeadSettings = HeadSettings(steps=640, learning_rate=5e-5, weight_decay=1e-4, batch_size=8)
    noise_floor: bool = True
    seed: int = 42

    def validate(self) -> None:
        """Raises ToolkitError on settings that cannot give an embedding."""
        if self.estimator not in ESTIMATORS:
            raise ToolkitError(f"estimator must be one of {ESTIMATORS}, got {self.estimator!r}")
        if self.objective == "task" and self.head.steps < 1:
            raise ToolkitError("the task objective needs a fitted head: --head_steps must be at least 1")
        if self.estimator == "empirical" and self.num_samples != 1:
            raise ToolkitError("the empirical estimator uses the data's labels: --num_samples must be 1")


def derived_seed(seed: int, task: str, *keys: int) -> int:
    """A 63-bit seed for one stream of one task, independent of other tasks and of processes.

    The number of keys is part of the entropy: SeedSequence alone ignores trailing zeros, which
    would make (stream 0) and (stream 0, batch 0) the same stream.
    """
    if seed < 0:
        raise ToolkitError(f"--seed must be 0 or more, got {seed}")
    sequence = np.random.SeedSequence([seed, zlib.crc32(task.encode()), len(keys), *keys])
    return int(sequence.generate_state(1, dtype=np.uint64)[0] >> np.uint64(1))


def plan_batches(num_rows: int, batch_size: int, num_batches: int, seed: int) -> list[list[int]]:
    """min(num_batches, num_rows // batch_size) disjoint batches of row indices, consecutive chunks
    of one seeded permutation; fewer than `batch_size` rows give one batch of all of them."""
    order = np.random.default_rng(seed).permutation(num_rows).tolist()
    full = min(num_batches, num_rows // batch_size)
    if full == 0:
        return [order]
    return [order[i * batch_size:(i + 1) * batch_size] for i in range(full)]


def batch_digests(batches: list[list[int]], record_ids: list[str]) -> list[str]:
    """A hash of each batch's record ids; raises if two batches share a record."""
    seen: dict[str, int] = {}
    digests = []
    for number, batch in enumerate(batches):
        ids = sorted(str(record_ids[i]) for i in batch)
        for record_id in ids:
            if seen.setdefault(record_id, number) != number:
                raise RuntimeError(f"batches {seen[record_id]} and {number} share record {record_id!r}")
        digests.append(hashlib.sha256("\n".join(ids).encode()).hexdigest()[:16])
    return digests


def _batch_sums(probe: ProbeModel, rows: list[dict], indices: list[int], settings: EmbeddingSettings,
                covered: list, collate: Callable, seed: int, ctx: RunContext) -> tuple[np.ndarray, float]:
    """(D,) reduced Fisher sums of one batch and their weight, computed chunk by chunk.

    Per-sequence estimators see the rows shortest first (less padding; their sums do not depend
    on the grouping); `minibatch_sq` keeps the order, its minibatches being part of the estimator.
    """
    device = ctx.device

    def forward(model: torch.nn.Module, batch: dict[str, torch.Tensor]) -> Predictions:
        with autocast_context(ctx.precision, device):   # mixed precision for the forward pass only
            return PREDICTIONS[probe.kind](model, batch)

    generator = torch.Generator(device=device).manual_seed(seed)
    if settings.estimator == "minibatch_sq":
        ordered = list(indices)
        chunk = settings.minibatch_size * max(1, settings.chunk_size // settings.minibatch_size)
    else:
        ordered = sorted(indices, key=lambda i: len(rows[i]["input_ids"]))
        chunk = settings.chunk_size
    total, weight = None, 0.0
    for start in range(0, len(ordered), chunk):
        batch = {key: value.to(device) for key, value in collate([rows[i] for i in ordered[start:start + chunk]]).items()}
        sums = fisher_sums(probe, batch, forward, covered,
                           estimator=settings.estimator, num_samples=settings.num_samples, generator=generator,
                           minibatch_size=settings.minibatch_size)
        reduced = flatten(covered, sums.squares).double().cpu().numpy()          # (D,)
        total = reduced if total is None else total + reduced
        weight += sums.weight
    return total, weight


def build_probe(loaded: LoadedModel, spec: TaskSpec, settings: EmbeddingSettings) -> ProbeModel:
    """The loaded model's body with a new untied head for the objective (not yet fitted)."""
    model = loaded.model
    kind = head_kind(settings.objective, spec.kind)
    generator = torch.Generator().manual_seed(derived_seed(settings.seed, spec.name, HEAD_STREAM))
    head = new_head(model, kind, len(spec.label_names or ()), generator)
    prefix = model.base_model_prefix
    return ProbeModel(getattr(model, prefix), head, prefix, kind).eval()


def _compute_batches(probe: ProbeModel, rows: list[dict], batches: list[list[int]], settings: EmbeddingSettings,
                     covered: list, collate: Callable, task: str, ctx: RunContext) -> list[dict]:
    """This process's share of the batches: reduced sums and weights (and their reseeded twins)."""
    mine = list(range(ctx.rank, len(batches), ctx.world_size))
    reseed = settings.noise_floor and settings.estimator != "empirical"
    results = []
    # Each batch is a Fisher pass over B sequences (two with the noise floor): on GPT-2 a task's
    # batches run long, so say where the loop is.
    progress = Progress(len(mine), f"Fisher {task}", bar=ctx.progress and ctx.is_main, unit="batch",
                        interval_s=ctx.progress_interval_s if ctx.is_main else None)
    streams = [("", MC_STREAM)] + ([("reseeded_", RESEEDED_STREAM)] if reseed else [])
    for number in mine:
        entry = {"batch": number}
        for prefix, stream in streams:
            entry[prefix + "sums"], entry[prefix + "weight"] = _batch_sums(
                probe, rows, batches[number], settings, covered, collate,
                derived_seed(settings.seed, task, stream, number), ctx)
        results.append(entry)
        progress.update()
    progress.close()
    return results


def _pool(entries: list[dict], sums_key: str, weight_key: str) -> tuple[np.ndarray, np.ndarray]:
    """(D,) task vector = pooled sums / pooled weight, and (n, D) batch vectors = own sums / own weight."""
    sums = np.stack([e[sums_key] for e in entries])                     # (n, D)
    weights = np.array([e[weight_key] for e in entries])                # (n,)
    if np.any(weights <= 0):
        raise ToolkitError("a batch has no prediction to count (every sequence shorter than 2 tokens?)")
    return sums.sum(axis=0) / weights.sum(), sums / weights[:, None]


def embed_task(loaded: LoadedModel, spec: TaskSpec, records: list[dict], settings: EmbeddingSettings,
               ctx: RunContext, *, source: str) -> TaskEmbedding | None:
    """The Task2Vec embedding of one task (None on processes other than the main one)."""
    settings.validate()
    began = time.perf_counter()
    built = task_rows(spec, records, loaded.tokenizer, settings.objective, settings.max_length)
    if not built.rows:
        raise ToolkitError(f"{spec.name}: none of the {len(records)} records gives a probe input "
                           f"(objective {settings.objective}, --max_length {settings.max_length})")
    if built.truncated and ctx.is_main:  # the probe does not see whole sentences: say so once per task
        logger.info(truncation_note(spec.name, built.truncated, len(records), built.cut_to))
    batches = plan_batches(len(built.rows), settings.batch_size, settings.num_batches,
                           derived_seed(settings.seed, spec.name, DATA_STREAM))
    digests = batch_digests(batches, built.record_ids)
    chosen = sorted(i for batch in batches for i in batch)
    probe = build_probe(loaded, spec, settings)
    collate = collate_fn(probe.kind, loaded.tokenizer.pad_token_id)
    head_report = _fit_head_on_main(probe, [built.rows[i] for i in chosen], collate, settings, spec.name, ctx)
    covered = select_parameters(probe, probe.body_prefix, settings.include,
                                objective_exclusions(probe, probe.body_prefix, settings.objective, settings.include))
    entries = gather_to_main(ctx, _compute_batches(probe, built.rows, batches, settings, covered, collate,
                                                        spec.name, ctx))
    if not ctx.is_main:
        return None
    entries = sorted((e for part in entries for e in part), key=lambda e: e["batch"])
    vector, batch_vectors = _pool(entries, "sums", "weight")
    reseeded = batch_reseeded = None
    if "reseeded_sums" in entries[0]:
        reseeded, batch_reseeded = _pool(entries, "reseeded_sums", "reseeded_weight")
    blocks = build_layout(covered)
    metadata = {
        "schema_version": SCHEMA_VERSION, "task": spec.name, "source": source,
        "probe": {"model": loaded.provenance.path, "sha256": loaded.provenance.sha256, "head": probe.kind,
                  "lineage": [step.get("task") or step.get("script")
                              for step in (loaded.provenance.lineage or {}).get("chain", [])],
                  "family": loaded.family.name,
                  "config": {k: getattr(loaded.model.config, k, None)
                             for k in ("model_type", "num_hidden_layers", "hidden_size", "vocab_size")}},
        "objective": settings.objective, "estimator": settings.estimator, "num_samples": settings.num_samples,
        "settings": {**{k: v for k, v in asdict(settings).items() if k != "head"}, "include": list(settings.include)},
        "head": {**asdict(settings.head), **head_report},
        "examples": {"records": len(records), "rows": len(built.rows), "records_without_row": built.unused,
                     "records_truncated": built.truncated,
                     "examples_used": len(chosen), "batches": len(batches),
                     "batch_sizes": [len(b) for b in batches], "batch_digests": digests,
                     "predictions_counted": float(sum(e["weight"] for e in entries))},
        "seeds": {"seed": settings.seed, "derivation": "SeedSequence([seed, crc32(task), stream, batch])"},
        "dimension": int(vector.shape[0]), "layout_digest": layout_digest(blocks), "layout": layout_manifest(blocks),
        "block_traces": block_traces(blocks, torch.from_numpy(vector)),
        "compute": embedding_compute(probe, built.rows, batches, head_report, settings),
        "versions": library_versions(), "created_at": utc_now(),
        "runtime_seconds": round(time.perf_counter() - began, 3),
    }
    return TaskEmbedding(spec.name, vector, metadata, batch_vectors, reseeded, batch_reseeded)


def embedding_compute(probe: ProbeModel, rows: list[dict], batches: list[list[int]], head_report: dict,
                      settings: EmbeddingSettings) -> dict:
    """What one embedding cost: the Fisher passes (twice with the noise floor) over `fisher_tokens`
    and the forward pass caching the head's hidden states. FLOPs ≈ (2 + 4K)·N·fisher_tokens +
    2·N·head_cache_tokens, one backward per label sample, N the probe's non-embedding parameters;
    the head's own steps on cached states are left out."""
    passes = 2 if settings.noise_floor and settings.estimator != "empirical" else 1
    chunk = settings.minibatch_size * max(1, settings.chunk_size // settings.minibatch_size) \
        if settings.estimator == "minibatch_sq" else settings.chunk_size
    fisher_tokens = passes * sum(len(rows[i]["input_ids"]) for batch in batches for i in batch)
    head_tokens = head_report.get("cached_tokens", 0)
    parameters = non_embedding_parameters(probe)
    samples = settings.num_samples if settings.estimator != "empirical" else 1
    return {"fisher_passes": passes * sum(math.ceil(len(batch) / chunk) for batch in batches),
            "fisher_tokens": int(fisher_tokens), "head_cache_tokens": int(head_tokens),
            "non_embedding_parameters": parameters,
            "flops": float((2 + 4 * samples) * parameters * fisher_tokens + 2 * parameters * head_tokens),
            "flops_formula": "(2 + 4K)·N·fisher_tokens + 2·N·head_cache_tokens"}


def _fit_head_on_main(probe: ProbeModel, rows: list[dict], collate: Callable, settings: EmbeddingSettings,
                      task: str, ctx: RunContext) -> dict:
    """Fit the probe's head on the main process (caching only the rows its schedule uses) and give
    every process the same weights."""
    report: dict = {"steps": 0}
    if settings.head.steps and ctx.is_main:
        generator = torch.Generator().manual_seed(derived_seed(settings.seed, task, HEAD_ORDER_STREAM))
        schedule = head_schedule(len(rows), settings.head, generator)
        used = sorted({i for step in schedule for i in step})
        cached = cache_hidden_states(probe, [rows[i] for i in used], collate, settings.chunk_size, ctx.device,
                                     partial(autocast_context, ctx.precision, ctx.device))
        tokens = int(sum(len(rows[i]["input_ids"]) for i in used))
        # The head's steps are the longest part of a small probe's embedding (a softmax over the
        # vocabulary per token per step): say what runs before it runs, and what it gave.
        logger.info("%s: fitting the %s head, %d AdamW steps of %d sequences (learning rate %g, weight decay %g) "
                    "on %d cached sequences, %d tokens", task, probe.kind, settings.head.steps,
                    settings.head.batch_size, settings.head.learning_rate, settings.head.weight_decay, len(used),
                    tokens)
        report = fit_head(probe.head, probe.kind, dict(zip(used, cached)), rows, schedule, settings.head, ctx.device,
                          progress=ctx.progress and ctx.is_main, interval_s=ctx.progress_interval_s, description=f"head {task}")
        report["cached_tokens"] = tokens
        logger.info("%s: head fitted in %s; loss over all %d predictions %.4f (minibatch losses %.4f over the "
                    "first steps, %.4f over the last)", task, format_duration(report["seconds"]),
                    report["predictions"], report["full_data_loss"], report["first_loss"], report["last_loss"])
    if settings.head.steps and ctx.enabled:
        state = broadcast_from_main(ctx, {k: v.cpu() for k, v in probe.head.state_dict().items()})
        probe.head.load_state_dict(state)
        report = broadcast_from_main(ctx, report)
    return report
