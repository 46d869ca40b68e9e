"""The flags the QA scripts share (objective, windows, answers, post-processing, feature cache).

Standard library only: the scripts build their parsers, check the flags and hold the output
folder before torch and transformers load.
"""
from __future__ import annotations

from utils.run.cli import add_features_cache_arg, finite_float, positive_int

OBJECTIVES = ("span", "generative")
QA_HEAD_CHOICES = ("keep", "reinit")


def add_qa_args(parser) -> None:
    """Objective, window, answer and post-processing flags shared by the QA scripts."""
    parser.add_argument("--objective", type=str, default="span", choices=OBJECTIVES,
                        help="span: a QA head picks start/end tokens; generative: the LM writes the answer.")
    group = parser.add_argument_group("QA features and answers")
    group.add_argument("--max_seq_length", type=positive_int, default=384, help="Tokens per window (question included).")
    group.add_argument("--doc_stride", type=positive_int, default=128, help="Overlap in tokens between windows of a long context.")
    group.add_argument("--max_question_length", type=positive_int, default=64, help="Questions are cut to this many tokens.")
    group.add_argument("--max_answer_length", type=positive_int, default=30,
                       help="Longest answer in tokens: span length cap (span) or tokens generated (generative).")
    group.add_argument("--n_best_size", type=positive_int, default=20, help="Candidate answers kept per question.")
    group.add_argument("--null_score_diff_threshold", type=finite_float, default=0.0,
                       help="Tasks with unanswerable questions: answer \"\" when null score - best answer score exceeds this.")
    add_features_cache_arg(group)
