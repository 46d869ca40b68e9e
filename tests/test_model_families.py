"""Every model family (utils.models.families): tiny models load into every head, checkpoint chains keep
the backbone bit-identical, pooling matches the model's own, and the Task2Vec Fisher hooks equal the
brute-force per-sequence loop, with exactly the structurally zero coordinates left out."""
from __future__ import annotations

import json
import shutil

import pytest
import torch
from transformers import (AutoModelForCausalLM, AutoModelForQuestionAnswering, MistralConfig, Qwen2Config,
                          Qwen3Config)

from task2vec.embedding.fisher import fisher_sums, sample_labels
from task2vec.embedding.layout import build_layout, flatten, layout_manifest, objective_exclusions, select_parameters
from task2vec.embedding.probe import PREDICTIONS, ProbeModel, new_head
from tests.conftest import run_module
from utils.classification.objective import pooled_logits
from utils.models.checkpoint import build_lineage, save_checkpoint
from utils.models.families import FAMILIES, backbone_key, family_of
from utils.models.loading import load_model
from utils.models.tiny import FAMILY_CHOICES, build_tiny_model, tiny_config
from utils.run.errors import CheckpointError
from utils.training.runtime import set_seed

VOCAB = 40


def tiny_lm(family: str, seed: int = 0) -> torch.nn.Module:
    """A float64 tiny LM of `family` without dropout. Three more members of the llama family: "qwen2" (q/k/v
    biases, tied embeddings), "qwen3" (RMSNorm of each head's queries and keys, over a (B, T, heads, 8)
    input), "mistral" (sliding-window attention)."""
    common = dict(vocab_size=VOCAB, hidden_size=16, intermediate_size=24, num_hidden_layers=2, num_attention_heads=2,
                  num_key_value_heads=1, max_position_embeddings=16, bos_token_id=0, eos_token_id=0, pad_token_id=0)
    if family == "qwen2":
        config = Qwen2Config(**common, tie_word_embeddings=True)
    elif family == "qwen3":
        config = Qwen3Config(**common, head_dim=8, tie_word_embeddings=False)
    elif family == "mistral":
        config = MistralConfig(**common, sliding_window=4, tie_word_embeddings=False)
    else:
        config = tiny_config(family=family, vocab_size=VOCAB, eos_token_id=0, n_layer=2, n_embd=16, n_head=2,
                             n_positions=16, dropout=0.0)
    torch.manual_seed(seed)
    return AutoModelForCausalLM.from_config(config).double().eval()


def padded_batch(lengths: list[int], width: int, seed: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    ids = torch.randint(1, VOCAB, (len(lengths), width), generator=generator)
    mask = torch.zeros(len(lengths), width, dtype=torch.long)
    for row, length in enumerate(lengths):
        mask[row, :length] = 1
        ids[row, length:] = 0
    return ids, mask


def probe_batches(lm: torch.nn.Module) -> dict[str, tuple[ProbeModel, dict]]:
    """(probe, batch) for the LM head, a class head and a span head on the same body."""
    prefix = lm.base_model_prefix
    ids, mask = padded_batch([7, 5, 3, 8], 8)
    batches = {"lm": {"input_ids": ids, "attention_mask": mask},
               "classification": {"input_ids": ids, "attention_mask": mask, "labels": torch.tensor([0, 1, 1, 0])},
               "span": {"input_ids": ids, "attention_mask": mask, "candidates": mask.bool() & (torch.arange(8) >= 1),
                        "start_positions": torch.tensor([2, 1, 2, 3]), "end_positions": torch.tensor([4, 3, 2, 6])}}
    generator = torch.Generator().manual_seed(3)
    return {kind: (ProbeModel(getattr(lm, prefix), new_head(lm, kind, 2, generator).double(), prefix, kind).eval(),
                   batch) for kind, batch in batches.items()}


FISHER_FAMILIES = [*FAMILY_CHOICES, "qwen2", "qwen3", "mistral"]
LLAMA_LIKE = ("llama", "qwen2", "qwen3", "mistral")


@pytest.mark.parametrize("family", FISHER_FAMILIES)
def test_fisher_hooks_equal_the_per_sequence_loop_for_every_head(family):
    lm = tiny_lm(family)
    for kind, (probe, batch) in probe_batches(lm).items():
        # with the task objective's exclusion: the final norm's bias is pure rounding under a span head
        exclude = objective_exclusions(probe, probe.body_prefix, "lm" if kind == "lm" else "task", ("bias",))
        covered = select_parameters(probe, probe.body_prefix, ("bias",), exclude)
        kinds = {p.kind for p in covered}
        assert ("rmsnorm" in kinds) == (family in LLAMA_LIKE), kinds
        assert ("conv1d" in kinds) == (family == "gpt2"), kinds
        for estimator in ("empirical", "mc"):
            labels = None
            if estimator == "mc":
                labels = sample_labels(PREDICTIONS[kind](probe, batch), 2, torch.Generator().manual_seed(9))
            kwargs = dict(estimator=estimator, num_samples=2 if labels is not None else 1, labels=labels)
            fast = fisher_sums(probe, batch, PREDICTIONS[kind], covered, **kwargs).diagonal()
            slow = fisher_sums(probe, batch, PREDICTIONS[kind], covered, method="loop", **kwargs).diagonal()
            assert fast.keys() == slow.keys()
            for name in fast:
                torch.testing.assert_close(fast[name], slow[name], rtol=1e-8,
                                           atol=1e-15 * float(slow[name].abs().max()), msg=f"{family} {kind} {name}")


def key_bias_zero_coordinates(lm: torch.nn.Module, family: str) -> dict[str, torch.Tensor]:
    """By autograd on an arbitrary loss: each attention bias's coordinates with exactly zero gradient."""
    ids, mask = padded_batch([7, 5, 3], 8)
    weights = torch.randn(3, 8, VOCAB, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    loss = (lm(input_ids=ids, attention_mask=mask).logits.sin() * weights).sum()
    biases = {name: p for name, p in lm.named_parameters()
              if name.endswith("bias") and any(k in name for k in ("attn", "attention", "k_proj", "q_proj"))}
    if not biases:   # Llama has no attention biases
        return {}
    grads = torch.autograd.grad(loss, list(biases.values()), allow_unused=True)
    scale = max(float(g.abs().max()) for g in grads if g is not None)
    return {name: (g.abs() <= 1e-13 * scale).nonzero().flatten() for name, g in zip(biases, grads) if g is not None}


@pytest.mark.parametrize("family", FISHER_FAMILIES)
def test_the_layout_leaves_out_exactly_the_structurally_zero_coordinates(family):
    """Autograd finds the bias coordinates no loss depends on; the family's adapter names the same ones
    (GPT-2: the key third of c_attn; GPT-NeoX: the unrotated key dimensions of each head; Qwen2's rotated
    key bias counts). The Fisher vector then has no zero coordinate for any head."""
    lm = tiny_lm(family)
    zeros = key_bias_zero_coordinates(lm, family)
    prefix = lm.base_model_prefix
    named = {p.name: p for p in select_parameters(lm, prefix, ("bias",))}
    for name, coordinates in zeros.items():
        excluded = named[name].excluded if name in named else ()
        expected = torch.cat([torch.arange(s, e) for s, e in excluded]) if excluded else torch.zeros(0, dtype=torch.long)
        assert torch.equal(coordinates, expected), (family, name, coordinates.tolist(), excluded)
    counted = {"gpt2": 2, "gpt_neox": 2}.get(family, 0)
    assert sum(bool(p.excluded) for p in named.values()) == counted
    if family == "gpt_neox":   # head_size 8, a quarter rotated: 6 unrotated key dimensions per head
        assert named["gpt_neox.layers.0.attention.query_key_value.bias"].excluded == ((10, 16), (34, 40))
    if family == "qwen3":      # the per-head norms are covered like the others
        assert "model.layers.0.self_attn.k_norm.weight" in named

    for kind, (probe, batch) in probe_batches(lm).items():
        objective = "lm" if kind == "lm" else "task"
        covered = select_parameters(probe, prefix, ("bias",), objective_exclusions(probe, prefix, objective, ("bias",)))
        sums = fisher_sums(probe, batch, PREDICTIONS[kind], covered, estimator="mc", num_samples=4,
                           generator=torch.Generator().manual_seed(1))
        vector = flatten(covered, sums.diagonal())
        assert vector.numel() == build_layout(covered)[-1].end
        # Structural zeros are rounding, about 1e-20 of the largest coordinate or less. Qwen2's key bias in
        # the slowest rotary pair turns by under 0.01 rad over 8 positions: small (~1e-13) but real.
        assert vector.min() > 1e-16 * vector.max(), (family, kind, float(vector.min() / vector.max()))


def test_rmsnorm_and_linear_blocks_are_named_and_reduced_over_inputs():
    lm = tiny_lm("llama")
    manifest = {b["name"]: b for b in layout_manifest(build_layout(select_parameters(lm, "model")))}
    norm = manifest["model.layers.0.input_layernorm.weight"]
    assert (norm["kind"], norm["reduction"], norm["end"] - norm["start"]) == ("rmsnorm", "none", 16)
    gate = manifest["model.layers.1.mlp.gate_proj.weight"]
    assert (gate["kind"], gate["reduction"], gate["end"] - gate["start"]) == ("linear", "mean over axis 1 (inputs)",
                                                                              lm.config.intermediate_size)
    key = manifest["model.layers.0.self_attn.k_proj.weight"]
    assert key["end"] - key["start"] == 8   # one key/value head of 8 (grouped-query attention)
    assert list(manifest)[-1] == "model.norm.weight"
    assert not any("embed_tokens" in name or "lm_head" in name for name in manifest)


@pytest.fixture(scope="module")
def tiny_folders(tmp_path_factory):
    root = tmp_path_factory.mktemp("families")
    return {family: build_tiny_model(root / family, family=family, n_positions=64, vocab_size=300)
            for family in FAMILY_CHOICES}


def backbone_tensors(model: torch.nn.Module, family: str) -> dict[str, torch.Tensor]:
    return {key: value.clone() for name, value in model.state_dict().items()
            if (key := backbone_key(FAMILIES[family], name)) is not None}


@pytest.mark.parametrize("family", FAMILY_CHOICES)
def test_a_chain_through_every_head_keeps_every_backbone_tensor_bit_identical(family, tiny_folders, tmp_path):
    set_seed(0)
    lm = load_model(tiny_folders[family], "lm")
    assert lm.family.name == family and lm.tokenizer.pad_token_id == lm.tokenizer.eos_token_id
    reference = backbone_tensors(lm.model, family)
    parent, previous = tiny_folders[family], lm
    for step, head in enumerate(("qa", "qa", "classification", "lm")):
        loaded = load_model(parent, head, label_names=("negative", "positive") if head == "classification" else None,
                            allow_new_lm_head=True)
        tensors = backbone_tensors(loaded.model, family)
        assert tensors.keys() == reference.keys()
        assert all(torch.equal(tensors[k], reference[k]) for k in reference), (family, head)
        parent = save_checkpoint(loaded.model, loaded.tokenizer, tmp_path / f"step{step}",
                                 build_lineage(script="test", task=None, objective=None, head=head, seed=0,
                                               parent=loaded.provenance))
        previous = loaded
    assert previous.head == "lm"
    assert len(json.loads((parent / "lineage.json").read_text())["chain"]) == 5


@pytest.mark.parametrize("family", ["gpt_neox", "llama"])
def test_a_saved_qa_checkpoint_loads_with_plain_transformers(family, tiny_folders, tmp_path):
    """Saved with the names the head model uses: transformers alone loads the backbone (a Llama QA head calls
    it `transformer`; saving in transformers' "original format" would write `model.*` and leave it random)."""
    qa = load_model(tiny_folders[family], "qa")
    folder = save_checkpoint(qa.model, qa.tokenizer, tmp_path / "qa",
                             build_lineage(script="test", task=None, objective=None, head="qa", seed=0,
                                           parent=qa.provenance))
    plain, info = AutoModelForQuestionAnswering.from_pretrained(folder, output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"]
    reference = qa.model.state_dict()
    assert all(torch.equal(value, reference[name]) for name, value in plain.state_dict().items())


def test_a_config_without_model_type_loads_as_gpt2(tiny_folders, tmp_path):
    folder = tmp_path / "old_gpt2"
    shutil.copytree(tiny_folders["gpt2"], folder)
    config = json.loads((folder / "config.json").read_text())
    del config["model_type"]
    (folder / "config.json").write_text(json.dumps(config))
    assert load_model(folder, "lm").family.name == "gpt2"


@pytest.mark.parametrize("family", ["gpt_neox", "llama"])
def test_an_untied_lm_head_lost_in_a_chain_is_refused(family, tiny_folders, tmp_path):
    qa = load_model(tiny_folders[family], "qa")
    folder = save_checkpoint(qa.model, qa.tokenizer, tmp_path / "qa",
                             build_lineage(script="test", task=None, objective=None, head="qa", seed=0,
                                           parent=qa.provenance))
    with pytest.raises(CheckpointError, match="no LM head weights"):
        load_model(folder, "lm")
    assert load_model(folder, "lm", allow_new_lm_head=True).head == "lm"


@pytest.mark.parametrize("family", FAMILY_CHOICES)
def test_last_token_pooling_equals_the_models_own_classifier(family, tiny_folders):
    set_seed(0)
    loaded = load_model(tiny_folders[family], "classification", label_names=("a", "b", "c"))
    model = loaded.model.eval()
    ids, mask = padded_batch([6, 3, 5], 6)
    ids = ids % 200 + 1   # no pad (= eos) inside a sentence, so the model's own pooling finds the same token
    ids[mask == 0] = loaded.tokenizer.pad_token_id
    with torch.no_grad():
        own = model(input_ids=ids, attention_mask=mask).logits
        ours = pooled_logits(model, ids, mask)
    torch.testing.assert_close(ours, own, rtol=1e-5, atol=1e-6)


def test_an_unknown_family_is_refused_with_the_known_ones():
    with pytest.raises(CheckpointError, match="bert model.*gpt2.*gpt_neo.*gpt_neox.*llama"):
        family_of({"model_type": "bert"}, "some/folder")
    assert family_of({"model_type": "qwen2"}, "x").name == "llama"
    assert family_of({}, "x").name == "gpt2"


# Seconds a command (the interpreter and torch): with the slow tests (tiny_folders builds every family
# in-process in the fast tier anyway).
@pytest.mark.slow
@pytest.mark.parametrize("family", FAMILY_CHOICES)
def test_the_tiny_model_command_builds_each_family(family, tmp_path):
    result = run_module("utils.tiny_model", "--family", family, "--output_dir", str(tmp_path / family),
                        "--n_layer", "1", "--no_progress")
    assert result.returncode == 0, result.stderr
    config = json.loads((tmp_path / family / "config.json").read_text())
    assert family_of(config, family).name == family
    assert json.loads((tmp_path / family / "lineage.json").read_text())["family"] == family
