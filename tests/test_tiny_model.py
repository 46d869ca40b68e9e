import json

import pytest
import torch
from safetensors.torch import load_file
from transformers import AutoTokenizer

from tests.conftest import run_module
from utils.models.checkpoint import read_lineage
from utils.models.loading import load_model
from utils.models.tiny import build_tiny_model, sample_texts, train_tokenizer
from utils.models.loading import END_OF_TEXT


def test_loads_with_every_head_and_only_the_head_is_new(tiny_checkpoint):
    saved = load_file(str(tiny_checkpoint / "model.safetensors"))
    assert not any(key.startswith(("qa_outputs", "score")) for key in saved)
    for head, new in (("lm", set()), ("qa", {"qa_outputs.weight", "qa_outputs.bias"}),
                      ("classification", {"score.weight"})):
        loaded = load_model(tiny_checkpoint, head, label_names=("negative", "positive"))
        config = loaded.model.config
        assert (config.n_layer, config.n_embd, config.n_head) == (2, 32, 2)
        assert config.pad_token_id == loaded.tokenizer.pad_token_id == loaded.tokenizer.eos_token_id
        state = loaded.model.state_dict()
        assert {k for k in state if k not in saved and k != "lm_head.weight"} == new
        for key, tensor in saved.items():
            assert torch.equal(state[key], tensor), key


def test_tokenizer_behaves_like_gpt2(tiny_checkpoint):
    tokenizer = AutoTokenizer.from_pretrained(tiny_checkpoint)
    assert tokenizer.eos_token == tokenizer.bos_token == END_OF_TEXT
    assert tokenizer.eos_token_id == len(tokenizer) - 1  # last id, as in GPT-2 (50256)
    text = "Ada Lovelace wrote the first program in 1843 — déjà vu!"
    encoded = tokenizer(text, return_offsets_mapping=True)
    assert "token_type_ids" not in encoded
    assert tokenizer.decode(encoded["input_ids"]) == text  # byte-level: nothing is unknown
    # Offsets keep the leading space of a word, as GPT-2's tokenizer.json does (trim_offsets false).
    starts = [text[s:e] for s, e in encoded["offset_mapping"]]
    assert any(piece.startswith(" ") for piece in starts)
    assert tokenizer("hello")["input_ids"] != tokenizer(" hello")["input_ids"]


def test_tokenizer_training_is_deterministic():
    texts = list(sample_texts())
    assert len(texts) > 300
    first = train_tokenizer(iter(texts), 400)
    second = train_tokenizer(iter(texts), 400)
    assert first.get_vocab() == second.get_vocab() and len(first) == 400


def test_same_seed_same_weights(tmp_path):
    a = build_tiny_model(tmp_path / "a", n_positions=64, vocab_size=300, seed=5)
    b = build_tiny_model(tmp_path / "b", n_positions=64, vocab_size=300, seed=5)
    c = build_tiny_model(tmp_path / "c", n_positions=64, vocab_size=300, seed=6)
    assert read_lineage(a)["sha256"] == read_lineage(b)["sha256"] != read_lineage(c)["sha256"]


def test_forward_and_backward_on_every_head(tiny_checkpoint):
    ids = torch.tensor([[5, 6, 7, 8], [9, 10, 11, 12]])
    targets = {"lm": {"labels": ids}, "qa": {"start_positions": torch.tensor([1, 0]), "end_positions": torch.tensor([2, 3])},
               "classification": {"labels": torch.tensor([0, 1])}}
    for head, labels in targets.items():
        model = load_model(tiny_checkpoint, head, label_names=("negative", "positive")).model
        out = model(input_ids=ids, **labels)
        out.loss.backward()
        assert torch.isfinite(out.loss), head
        assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters()), head


@pytest.mark.slow
def test_command_line_with_size_flags(tmp_path):
    out = tmp_path / "cli_tiny"
    done = run_module("utils.tiny_model", "--output_dir", str(out), "--n_layer", "1", "--n_embd", "16",
                      "--n_head", "4", "--n_positions", "64", "--vocab_size", "300")
    assert done.returncode == 0, done.stderr
    config = json.loads((out / "config.json").read_text())
    assert (config["n_layer"], config["n_embd"], config["n_head"], config["n_positions"]) == (1, 16, 4, 64)
    assert config["vocab_size"] == 300
    assert read_lineage(out)["chain"][0]["script"] == "utils.tiny_model"
    again = run_module("utils.tiny_model", "--output_dir", str(out))
    assert again.returncode == 2 and "--overwrite_output_dir" in again.stderr
    bad = run_module("utils.tiny_model", "--output_dir", str(tmp_path / "x"), "--n_embd", "30", "--n_head", "4")
    assert bad.returncode == 2 and "multiple of --n_head" in bad.stderr and "Traceback" not in bad.stderr


@pytest.mark.slow
def test_reusing_the_real_gpt2_tokenizer(shared_data, tmp_path):
    out = tmp_path / "real_vocab"
    done = run_module("utils.tiny_model", "--output_dir", str(out), "--n_layer", "1", "--n_embd", "16",
                      "--tokenizer", str(shared_data / "tiny_gpt2"))
    assert done.returncode == 0, done.stderr
    loaded = load_model(out, "classification", label_names=("negative", "positive"))
    assert loaded.model.config.vocab_size == 50257
    assert loaded.tokenizer("hello world")["input_ids"] == [31373, 995]  # GPT-2's ids (PROVENANCE.md)
    assert loaded.tokenizer.pad_token_id == 50256
