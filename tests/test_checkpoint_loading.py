"""Checkpoints that cannot be loaded into our GPT-2 heads are refused in a few lines: a model of
another family is named as such, a config.json that disagrees with its weights names the first
disagreeing tensors and how many there are, not a key list kilobytes long."""
from __future__ import annotations

import json
import shutil

import pytest
from safetensors.torch import load_file

from tests.conftest import REPO_ROOT, run_module
from utils.models.loading import load_model
from utils.run.errors import CheckpointError
from utils.data.loading import sample_file

TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "vocab.json", "merges.txt", "special_tokens_map.json")
SHORT = 600  # characters: a message a person reads, not a key dump


@pytest.fixture()
def bert_folder(tiny_checkpoint, tmp_path):
    """A tiny BERT saved with save_pretrained (safetensors), with a tokenizer beside it."""
    from transformers import BertConfig, BertModel

    folder = tmp_path / "tiny_bert"
    config = BertConfig(vocab_size=512, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=64, max_position_embeddings=128)
    BertModel(config).save_pretrained(folder)
    for name in TOKENIZER_FILES:
        if (tiny_checkpoint / name).exists():
            shutil.copy(tiny_checkpoint / name, folder / name)
    return folder


def edited_copy(tiny_checkpoint, tmp_path, **changes):
    folder = tmp_path / "edited"
    shutil.copytree(tiny_checkpoint, folder)
    config = json.loads((folder / "config.json").read_text())
    config.update(changes)
    (folder / "config.json").write_text(json.dumps(config))
    (folder / "lineage.json").unlink()   # a folder edited by hand; its weights are unchanged anyway
    return folder


@pytest.mark.parametrize("head", ["lm", "qa", "classification"])
def test_a_bert_folder_is_refused_as_another_model_family(bert_folder, head):
    with pytest.raises(CheckpointError) as err:
        load_model(bert_folder, head, label_names=("negative", "positive"))
    message = str(err.value)
    assert message.startswith(f"{bert_folder} holds a bert model") and "gpt2 (gpt2), gpt_neo (gpt_neo), gpt_neox (gpt_neox), llama (llama/qwen2/qwen3/mistral)" in message
    assert len(message) < SHORT and "embeddings.word_embeddings" not in message


@pytest.mark.slow
def test_a_bert_folder_given_to_a_script_is_one_short_line(bert_folder, tmp_path):
    done = run_module(str(REPO_ROOT / "maml_qa.py"), "--model_name", str(bert_folder), "--tasks", "squad",
                      "--task_file", f"squad={sample_file('squad', 'train')}", "--output_dir", str(tmp_path / "run"))
    assert done.returncode == 2 and "Traceback" not in done.stderr
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith(f"error: {bert_folder} holds a bert model") and len(last) < SHORT


def test_an_edited_hidden_size_names_the_first_tensors_and_their_count(tiny_checkpoint, tmp_path):
    folder = edited_copy(tiny_checkpoint, tmp_path, n_embd=64)
    backbone = {key: tensor for key, tensor in load_file(str(folder / "model.safetensors")).items()
                if key.startswith("transformer.")}
    first = "transformer.h.0.attn.c_attn.bias"   # every backbone tensor has a hidden-size axis
    with pytest.raises(CheckpointError) as err:
        load_model(folder, "qa")
    message = str(err.value)
    assert len(message) < SHORT and "config.json" in message
    assert f"{first}, " in message and f"({len(backbone)} tensors)" in message
    saved = tuple(backbone[first].shape)
    assert f"{first}: {saved} in the weights, {(saved[0] * 2,)} by config.json" in message
    assert "transformer.h.1.mlp.c_proj.weight" not in message   # the rest is counted, not listed


@pytest.mark.parametrize("n_layer, what", [(3, "describes tensors the weights lack"),
                                           (1, "hold tensors config.json does not describe")])
def test_an_edited_layer_count_names_the_first_tensors_and_their_count(tiny_checkpoint, tmp_path, n_layer, what):
    folder = edited_copy(tiny_checkpoint, tmp_path, n_layer=n_layer)
    per_layer = [key for key in load_file(str(folder / "model.safetensors")) if key.startswith("transformer.h.0.")]
    layer = "h.2" if n_layer == 3 else "h.1"
    with pytest.raises(CheckpointError) as err:
        load_model(folder, "lm")
    message = str(err.value)
    assert len(message) < SHORT and what in message and f"transformer.{layer}.attn.c_" in message
    # transformers itself leaves `*attn.bias` keys out of its unexpected list (its pattern for the
    # old causal-mask buffer also matches c_attn.bias), so a dropped layer may count one less.
    expected = {len(per_layer)} if n_layer == 3 else {len(per_layer), len(per_layer) - 1}
    assert any(f"({count} tensors)" in message for count in expected), message
