"""The original commands on a tiny model of each family other than GPT-2 (the demo test runs them on
GPT-2 as a user does, from the shell): the chain squad -> squad_v2 -> duorc-p -> SST-2, maml_qa.py,
python -m task2vec and TaskDiversity.py, on the bundled samples. Each command's `main(argv)` is called
with the argument list a user would type, in this process (an interpreter start and the torch import
cost more than a tiny model's run); tests/test_model_families.py runs the tiny-model command itself."""
from __future__ import annotations

import json

import pytest
from safetensors.torch import load_file

import maml_qa
import run_intermediate_source_GPT2 as intermediate
import run_target_task_GPT2_sst2_multiple as target
import TaskDiversity
from task2vec import __main__ as task2vec_cli
from utils.data.loading import sample_file
from utils.models.families import FAMILIES, backbone_key
from utils.models.tiny import build_tiny_model

SST2 = ["--train_file", "data/samples/sst2/train.tsv", "--validation_file", "data/samples/sst2/dev.tsv"]


def backbone_weights(folder, family: str) -> dict:
    return {key: value for name, value in load_file(folder / "model.safetensors").items()
            if (key := backbone_key(FAMILIES[family], name)) is not None}


@pytest.mark.slow
@pytest.mark.parametrize("family", ["gpt_neo", "gpt_neox", "llama"])
def test_the_study_runs_on_a_tiny_model_of_each_family(family, tmp_path):
    tiny = build_tiny_model(tmp_path / f"tiny_{family}", family=family, n_positions=256, vocab_size=512, dropout=0.0)
    cache = ["--features_cache_dir", str(tmp_path / "cache"), "--no_progress"]
    parent = tiny
    for task in ("squad", "squad_v2", "duorc-p"):
        out = tmp_path / f"pretrained_model_{task}"
        intermediate.main(["--dataset_name", task, "--model_name", str(parent), "--output_dir", str(out),
                           "--train_file", str(sample_file(task, "train")),
                           "--validation_file", str(sample_file(task, "validation")), "--max_steps", "2",
                           "--max_seq_length", "192", "--doc_stride", "64", *cache])
        assert "eval_f1" in json.loads((out / "all_results.json").read_text())
        parent = out
    chain = json.loads((parent / "lineage.json").read_text())["chain"]
    assert [step["task"] or step["script"] for step in chain] == ["utils.tiny_model", "squad", "squad_v2", "duorc-p"]

    table = tmp_path / "results_table.csv"
    target_dir = tmp_path / "target"
    target.main(["--pretrained_model", str(parent), "--output_dir", str(target_dir), *SST2, "--num_runs", "2",
                 "--epochs", "1", "--batch_size", "8", "--save_model", "best", "--results_table", str(table), *cache])
    summary = json.loads((target_dir / "summary.json").read_text())
    assert summary["eval_accuracy"]["n"] == 2
    # The target fine-tunes its own copy: the chain's checkpoint is left as it was, and the saved model of
    # the first seed has the chain's vocabulary and width.
    saved = sorted(target_dir.glob("**/model.safetensors"))
    assert saved and backbone_weights(saved[0].parent, family).keys() == backbone_weights(parent, family).keys()

    maml_qa.main(["--tasks", "squad,squad_v2", "--model_name", str(tiny), "--log_dir", str(tmp_path / "logs"),
                  "--out", "fam", "--task_file", f"squad={sample_file('squad', 'train')}",
                  "--task_file", f"squad_v2={sample_file('squad_v2', 'train')}", "--eval_tasks", "quoref",
                  "--task_file", f"quoref={sample_file('quoref', 'train')}",
                  "--eval_file", f"quoref={sample_file('quoref', 'validation')}", "--eval_adapt_steps", "1",
                  "--num_train_iterations", "2", "--meta_batch_size", "2", "--num_inner_steps", "1",
                  "--max_seq_length", "192", "--doc_stride", "64", *cache])
    final = json.loads((tmp_path / "logs" / "qa_tasks_fam" / "meta_final.json").read_text())
    assert set(final["eval"]["quoref"]) == {"f1_0", "f1_1"}

    emb = tmp_path / "TaskEmb"
    task2vec_cli.main(["--tasks", "squad,squad_v2,duorc-p,sst2", "--model_name", str(tiny), "--use_samples",
                       "--output_dir", str(emb), "--batch_size", "4", "--num_batches", "2", "--head_steps", "5",
                       "--max_length", "192", "--no_progress"])
    metadata = json.loads((emb / "sst2" / "embedding.json").read_text())
    assert metadata["probe"]["family"] == family
    kinds = {block["kind"] for block in metadata["layout"]}
    assert kinds == ({"linear", "rmsnorm"} if family == "llama" else {"linear", "layernorm"})
    TaskDiversity.main(["--emb_dir", str(emb), "--source_tasks", "squad,squad_v2,duorc-p", "--target_task", "sst2",
                        "--subset_size", "2", "--results_table", str(table), "--output_dir", str(tmp_path / "diversity")])
    report = json.loads((tmp_path / "diversity" / "diversity.json").read_text())
    assert len(report["subsets"]) == 3 and all(0 < s["diversity"] <= 1 for s in report["subsets"])

