"""Fine-tune GPT-2 on one intermediate QA task, evaluate it with the official SQuAD metric, and
write a checkpoint the next task (or the target script) starts from.

    python run_intermediate_source_GPT2.py --dataset_name squad --output_dir ./pretrained_model_squad
    python run_intermediate_source_GPT2.py --dataset_name squad_v2 --model_name ./pretrained_model_squad \\
        --output_dir ./pretrained_model_squad_v2
"""
from __future__ import annotations

import argparse

from utils.run.cli import add_data_file_args, add_output_args, add_runtime_args, run_entry_point, task_name
from utils.qa.args import QA_HEAD_CHOICES, add_qa_args
from utils.training.resume import add_allow_changed_args
from utils.run.folder import hold_output_dir
from utils.data.registry import get_task
from utils.training.args import add_training_args


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dataset_name", type=task_name, default="squad",
                        help="Intermediate QA task: squad, squad_v2, duorc-p, duorc-s, drop, quoref, mlqa_en, ...")
    parser.add_argument("--model_name", type=str, default="gpt2",
                        help="Starting weights: 'gpt2' (Hugging Face Hub) or a checkpoint folder with an LM, QA or "
                             "classification head, e.g. the --output_dir of the previous task.")
    parser.add_argument("--qa_head", type=str, default="keep", choices=QA_HEAD_CHOICES,
                        help="When --model_name already has a QA head: keep it (default) or start a fresh one.")
    add_output_args(parser)
    add_data_file_args(parser)
    add_training_args(parser, learning_rate=3e-5, batch_size=12, epochs=2.0, weight_decay=0.01, warmup_ratio=0.06)
    add_qa_args(parser)
    add_allow_changed_args(parser)
    add_runtime_args(parser)
    return parser


def main(argv: list[str] | None = None) -> dict:
    parser = build_parser()
    args = parser.parse_args(argv)
    spec = get_task(args.dataset_name)
    if spec.kind != "qa":
        parser.error(f"--dataset_name {spec.name} is a {spec.kind} task; this script trains QA tasks "
                     "(use run_target_task_GPT2_sst2_multiple.py for classification)")
    with hold_output_dir(args.output_dir, overwrite=args.overwrite_output_dir,
                         resuming=bool(args.resume_from_checkpoint)) as folder:
        # torch and transformers load only now, so --help, a bad flag or a busy folder is answered at once.
        from utils.qa.source_task import train_and_evaluate

        return train_and_evaluate(args, spec, folder)


if __name__ == "__main__":
    run_entry_point(main)
