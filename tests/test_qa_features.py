"""Span features, post-processing and generative features, checked by hand and on real data."""
import numpy as np
import pytest
import torch

from utils.data.loading import load_task_data
from utils.qa.features import (GenerativeConfig, PostprocessConfig, SpanFeatureConfig, postprocess_span_predictions,
                               span_features, token_span, window_starts)
from utils.qa.generative import (continuation_logprob, generative_features, greedy_decode, is_unanswerable, left_padded,
                                 postprocess_generations)
from utils.data.loading import sample_file
from utils.qa.metrics import normalize_answer, squad_v1_scores, squad_v2_scores
from utils.models.loading import load_tokenizer


def columns(records):
    return {key: [r[key] for r in records] for key in ("id", "context", "question", "answers")}


@pytest.fixture(scope="module")
def tokenizer(tiny_checkpoint):
    return load_tokenizer(tiny_checkpoint)


def test_window_starts_cover_everything_with_the_stride_as_overlap():
    for n, room, stride in [(0, 10, 3), (10, 10, 3), (11, 10, 3), (100, 10, 3), (57, 20, 5)]:
        starts = window_starts(n, room, stride)
        covered = set()
        for s in starts:
            covered.update(range(s, min(s + room, n)))
        assert covered == set(range(n))
        assert all(b - a == room - stride for a, b in zip(starts, starts[1:]))
        assert starts[-1] + room >= n


def test_token_span_walk_by_hand():
    # "Ada met Bob" with offsets that keep the leading space, as GPT-2's tokenizer gives them.
    offsets = [(0, 3), (3, 7), (7, 11)]
    assert token_span(offsets, 0, 3, 8, 11) == (2, 2)      # "Bob" is in " Bob"
    assert token_span(offsets, 0, 3, 0, 7) == (0, 1)       # "Ada met"
    assert token_span(offsets, 1, 3, 0, 3) is None          # "Ada" is outside the window
    assert token_span(offsets, 0, 2, 8, 11) is None


@pytest.mark.parametrize("task", ["squad", "squad_v2", "duorc-p", "quoref"])
def test_span_feature_properties_on_samples(task, tokenizer):
    records = load_task_data(task, "train", sample_file(task, "train")).span_records()
    config = SpanFeatureConfig(max_seq_length=48, doc_stride=8, max_question_tokens=16)
    features = span_features(columns(records), tokenizer, config, with_labels=True, with_offsets=True)
    assert "token_type_ids" not in features
    found = set()
    for f, ids in enumerate(features["input_ids"]):
        record = records[features["example_index"][f]]
        null, start, end = features["null_index"][f], features["start_positions"][f], features["end_positions"][f]
        assert len(ids) <= 48 and null == len(ids) - 1 and ids[null] == tokenizer.eos_token_id
        question = tokenizer.decode(ids[:features["context_start"][f]])
        assert question.strip() == tokenizer.decode(tokenizer(record["question"].strip())["input_ids"][:15]).strip()
        if record["is_impossible"]:
            assert start == end == null
        elif start != null:
            assert features["context_start"][f] <= start <= end < null
            # The labelled tokens are exactly those holding the answer's first and last character.
            begin = record["answers"]["answer_start"][0]
            finish = begin + len(record["answers"]["text"][0])
            token_start, token_end = features["token_start"][f], features["token_end"][f]
            assert token_start[start] <= begin < token_end[start]
            assert token_start[end] < finish <= token_end[end]
            found.add(record["id"])
    # Windows overlap by doc_stride tokens, so an answer of at most that many tokens lies whole in
    # some window (the answer alone may tokenize one token shorter than in context: margin 2).
    answerable = {r["id"] for r in records if not r["is_impossible"]
                  and len(tokenizer(r["answers"]["text"][0])["input_ids"]) <= config.doc_stride - 2}
    assert answerable and answerable <= found


def test_question_comes_first_even_if_the_tokenizer_pads_left(tokenizer):
    tokenizer.padding_side = "left"
    try:
        record = {"id": ["x"], "context": ["Paris is in France."], "question": ["Where is Paris?"],
                  "answers": [{"text": ["France"], "answer_start": [12]}]}
        features = span_features(record, tokenizer, SpanFeatureConfig(), with_labels=True, with_offsets=True)
    finally:
        tokenizer.padding_side = "right"
    ids = features["input_ids"][0]
    assert tokenizer.decode(ids).startswith("Where is Paris?\nParis is in France.")


def planted(features, index, start, end, null_bonus=0.0):
    """Logits of zeros with +10 at (start, end) of feature `index` and `null_bonus` at its null slot."""
    starts, ends = [], []
    for f, ids in enumerate(features["input_ids"]):
        s, e = np.zeros(len(ids)), np.zeros(len(ids))
        s[features["null_index"][f]] = e[features["null_index"][f]] = null_bonus / 2
        if f == index:
            s[start], e[end] = 10.0, 10.0
        starts.append(s)
        ends.append(e)
    return starts, ends


def test_postprocessing_with_planted_logits(tokenizer):
    context = "The Eiffel Tower stands in Paris, the capital of France."
    record = {"id": "q", "context": context, "question": "Where?", "answers": {"text": [], "answer_start": []},
              "is_impossible": True}
    features = span_features(columns([record]), tokenizer, SpanFeatureConfig(), with_labels=False, with_offsets=True)
    cs = features["context_start"][0]
    offsets = list(zip(features["token_start"][0], features["token_end"][0]))
    begin = context.index("Paris")
    first, last = token_span(offsets, cs, features["context_end"][0], begin, begin + len("Paris"))
    starts, ends = planted(features, 0, first, last)
    v1 = postprocess_span_predictions([record], features, starts, ends, PostprocessConfig())
    assert v1.predictions["q"] == "Paris"
    # end before start is never chosen: the best valid pair must be something else.
    starts, ends = planted(features, 0, last + 1, last)
    assert postprocess_span_predictions([record], features, starts, ends, PostprocessConfig()).predictions["q"] != "Paris"
    # v2: the null slot wins when null − best > threshold.
    v2 = PostprocessConfig(version_2_with_negative=True, null_score_diff_threshold=0.0)
    starts, ends = planted(features, 0, first, last, null_bonus=25.0)
    out = postprocess_span_predictions([record], features, starts, ends, v2)
    assert out.predictions["q"] == "" and out.best_non_null["q"] == "Paris"
    assert out.null_odds["q"] == pytest.approx(25.0 - 20.0)
    starts, ends = planted(features, 0, first, last, null_bonus=15.0)
    assert postprocess_span_predictions([record], features, starts, ends, v2).predictions["q"] == "Paris"
    # The answer length cap: a span of 3 tokens is refused with max_answer_length 2.
    starts, ends = planted(features, 0, last - 2, last)
    three = context[offsets[last - 2][0]:offsets[last][1]].strip()
    assert postprocess_span_predictions([record], features, starts, ends, PostprocessConfig()).predictions["q"] == three
    capped = postprocess_span_predictions([record], features, starts, ends, PostprocessConfig(max_answer_length=2))
    assert capped.predictions["q"] != three


def test_null_score_is_the_minimum_over_windows(tokenizer):
    context = " ".join(f"word{i}" for i in range(60)) + " The answer is Paris."
    record = {"id": "q", "context": context, "question": "Q?", "answers": {"text": [], "answer_start": []},
              "is_impossible": True}
    features = span_features(columns([record]), tokenizer, SpanFeatureConfig(max_seq_length=40, doc_stride=10,
                                                                             max_question_tokens=8),
                             with_labels=False, with_offsets=True)
    assert len(features["input_ids"]) >= 3
    starts = [np.zeros(len(ids)) for ids in features["input_ids"]]
    ends = [np.zeros(len(ids)) for ids in features["input_ids"]]
    for f, null in enumerate(features["null_index"]):
        starts[f][null] = ends[f][null] = 3.0 + f  # null scores 6, 8, 10, ...
    out = postprocess_span_predictions([record], features, starts, ends,
                                       PostprocessConfig(version_2_with_negative=True))
    assert out.null_odds["q"] == pytest.approx(6.0 - 0.0)


@pytest.mark.slow
def test_oracle_on_squad_dev_and_feature_coverage(shared_data):
    tokenizer = load_tokenizer(shared_data / "gpt2_tokenizer")
    records = load_task_data("squad", "validation", shared_data / "squad_v1.1" / "dev-v1.1.json").records
    features = span_features(columns(records), tokenizer, SpanFeatureConfig(384, 128, 64), with_labels=True,
                             with_offsets=True)
    hit = set()
    for f, start in enumerate(features["start_positions"]):
        if start == features["null_index"][f]:
            continue
        record = records[features["example_index"][f]]
        text = record["context"][features["token_start"][f][start]:features["token_end"][f][features["end_positions"][f]]]
        if normalize_answer(text) in {normalize_answer(g) for g in record["answers"]["text"]}:
            hit.add(features["example_index"][f])
    share = len(hit) / len(records)
    print(f"SQuAD v1.1 dev: {share:.4%} of questions have a window whose label decodes to a gold answer; "
          f"{len(features['input_ids']) / len(records):.3f} windows per question")
    assert share >= 0.995
    starts, ends = [], []
    for f, ids in enumerate(features["input_ids"]):
        s, e = np.zeros(len(ids)), np.zeros(len(ids))
        s[features["start_positions"][f]] = e[features["end_positions"][f]] = 20.0
        starts.append(s)
        ends.append(e)
    predictions = postprocess_span_predictions(records, features, starts, ends, PostprocessConfig())
    scores = squad_v1_scores({r["id"]: r["answers"]["text"] for r in records}, predictions.predictions)
    print(f"oracle on SQuAD v1.1 dev: {scores}")
    assert scores["exact_match"] >= 99.5


@pytest.mark.parametrize("task,name", [("squad_v2", "squad_v2.0/dev-v2.0.first2articles.json"),
                                       ("duorc-p", "duorc/ParaphraseRC_dev.sample.json"),
                                       ("duorc-s", "duorc/SelfRC_dev.sample.json")])
def test_oracle_on_v2_data(shared_data, task, name):
    tokenizer = load_tokenizer(shared_data / "gpt2_tokenizer")
    records = load_task_data(task, "validation", shared_data / name).span_records()
    features = span_features(columns(records), tokenizer, SpanFeatureConfig(), with_labels=True, with_offsets=True)
    starts, ends = [], []
    for f, ids in enumerate(features["input_ids"]):
        s, e = np.zeros(len(ids)), np.zeros(len(ids))
        s[features["start_positions"][f]] += 20.0
        e[features["end_positions"][f]] += 20.0
        starts.append(s)
        ends.append(e)
    predictions = postprocess_span_predictions(records, features, starts, ends,
                                               PostprocessConfig(version_2_with_negative=True))
    scores = squad_v2_scores({r["id"]: r["answers"]["text"] for r in records}, predictions.predictions, None, None)
    print(f"oracle on {name}: exact {scores['exact']:.2f}, {len(features['input_ids']) / len(records):.2f} windows per question")
    assert scores["NoAns_exact"] == 100.0
    assert scores["exact"] >= (99.5 if task == "squad_v2" else 95.0)


# ----------------------------------------------------------------------------- generative

def test_generative_training_rows(tokenizer):
    records = [{"id": "a", "context": "Paris is in France.", "question": "Where is Paris?",
                "answers": {"text": ["France"], "answer_start": [12]}},
               {"id": "b", "context": "Paris is in France.", "question": "Who is king?",
                "answers": {"text": [], "answer_start": []}}]
    rows = generative_features(columns([{**r, "is_impossible": not r["answers"]["text"]} for r in records]),
                               tokenizer, GenerativeConfig(), training=True)
    eos = tokenizer.eos_token_id
    for ids, labels, answer in zip(rows["input_ids"], rows["labels"], [" France", " unanswerable"]):
        supervised = [t for t, l in zip(ids, labels) if l != -100]
        assert supervised == tokenizer(answer)["input_ids"] + [eos]   # the closing EOS is learned, pad == EOS
        assert labels[-1] == eos and ids[-1] == eos
        prompt = tokenizer.decode([t for t, l in zip(ids, labels) if l == -100])
        assert prompt.startswith("Paris is in France.\nQuestion: ") and prompt.endswith("\nAnswer:")


def test_generative_training_on_answers_that_are_not_spans(tokenizer):
    """A DROP number or date is trained on in its text form when the whole passage fits in one
    window; with a passage longer than a window (the evidence may lie elsewhere) it is not."""
    short = "The Bears scored 24 points on 7 May 1923."
    records = [{"id": "n", "context": short, "question": "How many?", "answers": {"text": [], "answer_start": []},
                "gold": [["24"], ["24.0"]]},
               {"id": "d", "context": short, "question": "When?", "answers": {"text": [], "answer_start": []},
                "gold": [["7 May  1923"]]},
               {"id": "m", "context": short, "question": "Who?", "answers": {"text": [], "answer_start": []},
                "gold": [["Bears", "Lions"]]},
               {"id": "long", "context": " ".join(["word"] * 400), "question": "How many?",
                "answers": {"text": [], "answer_start": []}, "gold": [["3"]]}]
    batch = {key: [r[key] for r in records] for key in ("id", "context", "question", "answers", "gold")}
    config = GenerativeConfig(max_seq_length=128, doc_stride=32, max_question_tokens=16, max_answer_tokens=8)
    rows = generative_features(batch, tokenizer, config, training=True)
    assert rows["example_id"] == ["n", "d"]
    eos = tokenizer.eos_token_id
    for ids, labels, target in zip(rows["input_ids"], rows["labels"], [" 24", " 7 May 1923"]):
        assert [t for t, l in zip(ids, labels) if l != -100] == tokenizer(target)["input_ids"] + [eos]


def test_continuation_score_equals_one_token_at_a_time(tiny_checkpoint):
    from utils.models.loading import load_model

    model = load_model(tiny_checkpoint, "lm").model.eval()
    prompts = [[5, 9, 13, 200, 7], [8, 3], [100, 101, 102, 103, 104, 105]]
    continuation = [42, 17, model.config.eos_token_id]
    batch = left_padded(prompts, model.config.pad_token_id)
    scores = continuation_logprob(model, batch["input_ids"], batch["attention_mask"], continuation)
    for prompt, score in zip(prompts, scores):
        total = 0.0
        for j, token in enumerate(continuation):
            with torch.no_grad():
                logits = model(input_ids=torch.tensor([prompt + continuation[:j]])).logits[0, -1].double()
            total += float(torch.log_softmax(logits, -1)[token])
        assert score == pytest.approx(total / len(continuation), abs=1e-4)


def test_greedy_decoding_batched_equals_one_by_one(tiny_checkpoint):
    from utils.models.loading import load_model

    model = load_model(tiny_checkpoint, "lm").model.eval()
    prompts = [[5, 9, 13, 200, 7], [8, 3], [100, 101, 102, 103, 104, 105, 106, 107]]
    stop = [model.config.eos_token_id]

    def one_by_one(prompt, steps=6):
        ids, out, logprobs = list(prompt), [], []
        for step in range(steps + 1):
            with torch.no_grad():
                logits = model(input_ids=torch.tensor([ids])).logits[0, -1].double()
            lp = torch.log_softmax(logits, -1)
            token = int(lp.argmax())
            if token in stop:
                logprobs.append(float(lp[token]))
                break
            if step == steps:  # the answer is cut here; its score covers the tokens it has
                break
            logprobs.append(float(lp[token]))
            out.append(token)
            ids.append(token)
        return out, sum(logprobs) / len(logprobs)

    batch = left_padded(prompts, model.config.pad_token_id)
    for prompt, (tokens, score) in zip(prompts, greedy_decode(model, batch["input_ids"], batch["attention_mask"], 6, stop)):
        expected_tokens, expected_score = one_by_one(prompt)
        assert tokens == expected_tokens
        assert score == pytest.approx(expected_score, abs=1e-4)


def test_generations_to_predictions():
    examples = [{"id": "a"}, {"id": "b"}, {"id": "c"}]
    features = {"example_index": [0, 0, 1, 2]}
    # (greedy answer, its mean log-probability, teacher-forced "unanswerable" score) per window.
    decoded = [("Paris", -0.5, -1.0), ("Unanswerable.", -0.1, -0.1), ("Rome", -0.2, -3.0),
               ("unanswerable", -0.05, -0.05)]
    v2 = postprocess_generations(examples, features, decoded, PostprocessConfig(version_2_with_negative=True),
                                 "unanswerable")
    # a: the window without the answer is sure there is none (-0.1), the window with it is not
    # (-1.0); as for spans, the least confident null counts: odds -1.0 - (-0.5) < 0, so "Paris".
    assert v2.predictions == {"a": "Paris", "b": "Rome", "c": ""} and v2.best_non_null["a"] == "Paris"
    assert v2.null_odds["a"] == pytest.approx(-0.5) and v2.null_odds["b"] == pytest.approx(-2.8)
    assert v2.null_odds["c"] == pytest.approx(1e9, rel=1e-6)  # no non-null answer in any window
    strict = postprocess_generations(examples, features, decoded,
                                     PostprocessConfig(null_score_diff_threshold=-1.0, version_2_with_negative=True),
                                     "unanswerable")
    assert strict.predictions == {"a": "", "b": "Rome", "c": ""}
    v1 = postprocess_generations(examples, features, [(t, s, None) for t, s, _ in decoded], PostprocessConfig(),
                                 "unanswerable")
    assert v1.predictions == {"a": "Paris", "b": "Rome", "c": ""}
    assert is_unanswerable(" unanswerable ", "unanswerable") and not is_unanswerable("Paris", "unanswerable")
