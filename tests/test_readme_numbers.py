"""Every benchmark number the documentation quotes is the one in benchmarks/results/*.json (the README
once said 3.7× for a recorded 3.14×). The numbers live in README.md and docs/*.md; each phrase below
must be found in one of them, and every place that quotes it must show the recorded value."""
from __future__ import annotations

import json
import re
from statistics import mean

import pytest

from tests.conftest import REPO_ROOT

RESULTS = {path.stem: json.loads(path.read_text()) for path in (REPO_ROOT / "benchmarks" / "results").glob("*.json")}
DOCUMENTS = [REPO_ROOT / "README.md", *sorted((REPO_ROOT / "docs").glob("*.md"))]


def shown(value: float, text: str) -> bool:
    """`text` (e.g. "3.14", "11,817") is `value` rounded to the decimals `text` shows."""
    text = text.replace(",", "")
    decimals = len(text.split(".")[1]) if "." in text else 0
    return round(value, decimals) == float(text)


def table_rows() -> list[tuple[str, bool, str]]:
    """(benchmark name, GPU row?, bold ratio) of each row of benchmarks/README.md's table."""
    rows = []
    for line in (REPO_ROOT / "benchmarks" / "README.md").read_text().splitlines():
        match = re.match(r"\| `(\w+)`( \(GPU\))? \|.*?\*\*([\d.]+)×\*\*", line)
        if match:
            rows.append((match.group(1), bool(match.group(2)), match.group(3)))
    return rows


def test_the_benchmark_table_quotes_the_recorded_ratios():
    rows = table_rows()
    assert {name for name, _, _ in rows} == set(RESULTS)  # every recorded benchmark has a row
    for name, gpu, ratio in rows:
        recorded = RESULTS[name]["extra"]["gpu"]["ratio"] if gpu else RESULTS[name]["ratio"]
        assert shown(recorded, ratio), f"{name}{' (GPU)' if gpu else ''}: table {ratio}×, recorded {recorded}"


def _inner_state_f1(variant: str, steps: int) -> float:
    curves = RESULTS["reptile_inner_state"]["extra"]["curves"][variant]
    return mean(curve[f"f1_{steps}"] for curve in curves.values())


def _inner_state_paired(key: str, low_sign: int) -> list[float]:
    """carry − reset paired by seed: mean, CI low times `low_sign` (the phrase writes the sign; a
    flipped sign then fails), CI high, seeds where carry is higher, seeds."""
    extra = RESULTS["reptile_inner_state"]["extra"]
    difference = extra["paired_difference"][key]
    return [difference["mean"], low_sign * difference["ci_low"], difference["ci_high"], extra["seeds_carry_higher"][key],
            len(extra["seeds"])]


def _meta_f1(algorithm: str, steps: int) -> float:
    curves = RESULTS["meta_baselines"]["extra"]["curves"][algorithm]
    return mean(curve[f"f1_{steps}"] for curve in curves.values())


def _noise_floor(k: int, task: str) -> float:
    return RESULTS["task2vec_noise_floor"]["extra"][f"K{k}"]["noise_floor"]["tasks"][task]["task_level"]


def _resolved_pairs(k: int) -> tuple[int, int]:
    pairs = RESULTS["task2vec_noise_floor"]["extra"][f"K{k}"]["noise_floor"]["pairs"]
    return sum(pair["resolved"] for pair in pairs), len(pairs)


def _k1_against_k8(matrix: str, key: str) -> float:
    return RESULTS["task2vec_noise_floor"]["extra"]["k1_against_k8"][matrix][key]


def _per_task_floor_ratios() -> list[float]:
    extra = RESULTS["task2vec_noise_floor"]["extra"]
    return [k1 / k8 for k1, k8 in zip(extra["K1"]["floors"], extra["K8"]["floors"])]


def _bias_formula(*keys: str) -> dict:
    """An entry of the bias-formula simulation's summary for the correction's own noise model."""
    entry = RESULTS["task2vec_bias_formula"]["extra"]["summary"]["lognormal"]
    for key in keys:
        entry = entry[key]
    return entry


def _bias_formula_residuals() -> list[float]:
    """What the full correction leaves at d = 0.2–0.35, % of d, min and max per pair of floors as the
    docs name them, then the raw bias (% of d) there, the first-order over-correction and, at small d,
    the largest part of the bias (f_a + f_b)/2 left."""
    residual = _bias_formula("large_d_residual_percent")
    values = [residual[floors][end] for floors in ("0.03/0.03", "0.03/0.11", "0.11/0.11", "0.25/0.03")
              for end in ("min", "max")]
    raw = _bias_formula("large_d_raw_bias_percent")
    left = _bias_formula("small_d_residual_share")
    return [*values, raw["min"], raw["max"], -_bias_formula("large_d_first_order_residual_percent")["min"],
            100 * max(abs(left["min"]), abs(left["max"]))]


def _throughput(variant: str) -> list[float]:
    """The variant's median, min and max ratio to `before`, for each measured (task, shape) in order."""
    values = []
    for run in RESULTS["training_throughput"]["extra"]["runs"]:
        ratio = run["variants"][variant]["ratio_to_before"]
        values += [ratio["median"], ratio["min"], ratio["max"]]
    return values


def _before_tokens_per_second() -> list[float]:
    """The `before` variant's median tokens/s for each measured (task, shape), in order."""
    return [run["variants"]["before"]["median_tokens_per_second"] for run in RESULTS["training_throughput"]["extra"]["runs"]]


# (phrase with one "{}" per number, the recorded numbers in order). Numbers are matched as written,
# so "178k" is compared with the recorded tokens/s divided by 1000.
PHRASES = [
    ("the same steps give the same head, {}× faster on real SQuAD questions",
     lambda: [RESULTS["task2vec_head_fit"]["ratio"]]),
    ("fitting the LM head from the chunked softmax against full logits: the same head, {}× faster",
     lambda: [RESULTS["task2vec_head_fit"]["ratio"]]),
    ("equal a brute-force per-sequence loop (tested, every model family) and are {}× faster than it",
     lambda: [RESULTS["fisher_per_sequence"]["ratio"]]),
    ("the same Fisher (max relative difference {}e-7), {}× faster",
     lambda: [RESULTS["fisher_per_sequence"]["extra"]["max_relative_difference"] * 1e7,
              RESULTS["fisher_per_sequence"]["ratio"]]),
    ("{}× faster than a deepcopy per task on GPT-2-small-shaped parameters on a CPU",
     lambda: [RESULTS["reptile_bookkeeping"]["ratio"]]),
    ("{}× on an H200 (`benchmarks/reptile_bookkeeping.py`",
     lambda: [RESULTS["reptile_bookkeeping"]["extra"]["gpu"]["ratio"]]),
    ("GPT-2-small-shaped parameters: {}× on a CPU (peak extra memory {}× the parameters against {}×), {}× on an H200",
     lambda: [RESULTS["reptile_bookkeeping"]["ratio"],
              RESULTS["reptile_bookkeeping"]["extra"]["peak_extra_over_parameter_bytes_ours"],
              RESULTS["reptile_bookkeeping"]["extra"]["peak_extra_over_parameter_bytes_deepcopy"],
              RESULTS["reptile_bookkeeping"]["extra"]["gpu"]["ratio"]]),
    ("{}× the real tokens/s on a CPU (tiny GPT-2), and {}× on an NVIDIA H200",
     lambda: [RESULTS["qa_batching"]["ratio"], RESULTS["qa_batching"]["extra"]["gpu"]["ratio"]]),
    ("runs at about {}k real tokens/s in bf16 with batch 32",
     lambda: [RESULTS["qa_batching"]["extra"]["gpu"]["ours_tokens_per_second"] / 1000]),
    ("F1 on the held-out fifth after 30 adaptation steps is {} with `carry` against {} with `reset`",
     lambda: [RESULTS["reptile_inner_state"]["ours"]["value"], RESULTS["reptile_inner_state"]["baseline"]["value"]]),
    ("carry − reset after 30 steps is +{} points (95% t-interval −{} to +{}; higher for {} of {} seeds)",
     lambda: _inner_state_paired("f1_30", low_sign=-1)),
    ("after 5 steps +{} (+{} to +{}; {} of {})", lambda: _inner_state_paired("f1_5", low_sign=1)),
    ("and after 5 steps {} against {}",
     lambda: [_inner_state_f1("carry", 5), _inner_state_f1("reset", 5)]),
    ("after 30 adaptation steps is {} for multi-task, {} for Reptile, {} for FOMAML and {} for the initial model",
     lambda: [_meta_f1(name, 30) for name in ("multitask", "reptile", "fomaml", "initial")]),
    ("before any adaptation step, {} for Reptile and {} for multi-task",
     lambda: [_meta_f1("reptile", 0), _meta_f1("multitask", 0)]),
    ("Mean noise floor {} at K = 1 and {} at K = 8 ({} times lower; per task {}–{})",
     lambda: [RESULTS["task2vec_noise_floor"]["baseline"]["value"], RESULTS["task2vec_noise_floor"]["ours"]["value"],
              RESULTS["task2vec_noise_floor"]["ratio"], min(_per_task_floor_ratios()), max(_per_task_floor_ratios())]),
    ("the measured {}× lies within the per-task spread", lambda: [RESULTS["task2vec_noise_floor"]["ratio"]]),
    ("raw K = 1 distances lie on average {} above the K = 8 ones (+{}%)",
     lambda: [_k1_against_k8("distance_matrix", "mean_k1_minus_k8"),
              100 * _k1_against_k8("distance_matrix", "mean_relative_k1_minus_k8")]),
    ("the corrected ones lie on average {} from them",
     lambda: [_k1_against_k8("corrected_distance_matrix", "mean_abs_k1_minus_k8")]),
    ("At K = 1 only the {} pairs with SST-2 are resolved; at K = 8, {} of the {}",
     lambda: [_resolved_pairs(1)[0], *_resolved_pairs(8)]),
    ("has a floor ({}) close to its raw distances", lambda: [_noise_floor(8, "drop")]),
    ("the raw bias is {}–{} times (f_a + f_b)/2 at true distances d ≤ 0.02, but only {}–{}% of it at d = 0.2–0.35",
     lambda: [_bias_formula("small_d_raw_bias_share", "min"), _bias_formula("small_d_raw_bias_share", "max"),
              100 * _bias_formula("large_d_raw_bias_share", "min"), 100 * _bias_formula("large_d_raw_bias_share", "max")]),
    ("leaves +{} to +{}% of d at floors of 0.03, +{} to +{}% at floors of 0.03 and 0.11, +{} to +{}% at floors of "
     "0.11, and +{} to +{}% with one floor at 0.25 (against a raw bias of {}% to {}% of d there, and a first-order "
     "subtraction that over-corrects by up to {}% of d); at d ≤ 0.02 it leaves at most {}% of the bias",
     _bias_formula_residuals),
    ("At K = 1 its floor is {}, past where", lambda: [_noise_floor(1, "drop")]),
    ("| before | {} tokens/s | {} tokens/s | {} tokens/s |",
     lambda: [round(value) for value in _before_tokens_per_second()]),
    ("| **default now** (fused AdamW, SDPA) | **{}×** [{}–{}] | **{}×** [{}–{}] | **{}×** [{}–{}] |",
     lambda: _throughput("default")),
    ("| fused AdamW | {}× [{}–{}] | {}× [{}–{}] | {}× [{}–{}] |", lambda: _throughput("fused_adamw")),
    ("| eager attention | {}× [{}–{}] | {}× [{}–{}] | {}× [{}–{}] |", lambda: _throughput("eager_attention")),
    ("| token budget (batch × max length) | {}× [{}–{}] | {}× [{}–{}] | {}× [{}–{}] |",
     lambda: _throughput("token_budget")),
]


def _documents_text() -> dict[str, str]:
    return {path.relative_to(REPO_ROOT).as_posix(): " ".join(path.read_text().split()) for path in DOCUMENTS}


@pytest.mark.parametrize("phrase, recorded", PHRASES, ids=[phrase for phrase, _ in PHRASES])
def test_the_documentation_quotes_the_recorded_numbers(phrase, recorded):
    pattern = re.escape(phrase).replace(re.escape("{}"), r"(\d{1,3}(?:,\d{3})+|\d+(?:\.\d+)?)")
    quotes = [(name, match) for name, text in _documents_text().items() for match in re.finditer(pattern, text)]
    assert quotes, f"neither README.md nor docs/*.md says {phrase!r} any more"
    values = recorded()
    for name, match in quotes:
        for shown_text, value in zip(match.groups(), values, strict=True):
            assert shown(value, shown_text), f"{name} says {shown_text} where the recorded value is {value}: {phrase!r}"


def test_a_misquoted_number_is_caught():
    """The check itself: the README's old 3.7× for a recorded 3.14× does not pass."""
    assert shown(3.1391614598661426, "3.1") and shown(3.1391614598661426, "3.14")
    assert not shown(3.1391614598661426, "3.7")
