#!/usr/bin/env bash
# The study on the bundled samples with a tiny GPT-2, offline, in a few minutes on a CPU.
# Each stage of the study is added here as its script lands. Outputs go to demo_output/
# (or $DEMO_OUTPUT). FAMILY=gpt_neo|gpt_neox|llama runs the same study on a tiny model of that
# family (utils.models.families) instead of GPT-2.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
OUT=${DEMO_OUTPUT:-demo_output}
FAMILY=${FAMILY:-gpt2}
TINY="tiny_$FAMILY"
export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TRANSFORMERS_OFFLINE=1  # the demo never needs a network
mkdir -p "$OUT"

echo "== 1/6 tiny $FAMILY model, built offline -> $OUT/$TINY"
"$PY" -m utils.tiny_model --family "$FAMILY" --output_dir "$OUT/$TINY" --overwrite_output_dir --no_progress

echo "== 2/6 every bundled sample through its adapter (kept / dropped by reason) -> $OUT/adapter_stats/"
# Every task of utils.data.loading.SAMPLE_FILES (the QA samples and every GLUE target), both splits:
# `python -m utils.data --task T --split S --file F --compact --stats_file ...` for each, in one process.
"$PY" -c "from utils.data.__main__ import main
from utils.data.loading import SAMPLE_FILES, sample_file
for task in SAMPLE_FILES:
    for split in ('train', 'validation'):
        main(['--task', task, '--split', split, '--file', str(sample_file(task, split)), '--compact',
              '--stats_file', '$OUT/adapter_stats/%s_%s.json' % (task, split)])"
echo "== 3/6 intermediate QA chain squad -> squad_v2 -> duorc-p (run_intermediate_source_GPT2.py)"
parent="$OUT/$TINY"
for task in squad squad_v2 duorc-p; do
    train=$("$PY" -c "from utils.data.loading import sample_file; print(sample_file('$task', 'train'))")
    dev=$("$PY" -c "from utils.data.loading import sample_file; print(sample_file('$task', 'validation'))")
    "$PY" run_intermediate_source_GPT2.py --dataset_name "$task" --model_name "$parent" \
        --output_dir "$OUT/pretrained_model_$task" --overwrite_output_dir \
        --train_file "$train" --validation_file "$dev" --max_steps 30 --learning_rate 1e-3 \
        --features_cache_dir "$OUT/features_cache" --no_progress
    parent="$OUT/pretrained_model_$task"
done
"$PY" -c "import json; l = json.load(open('$parent/lineage.json')); print('lineage:', ' -> '.join(str(c['task'] or c['script']) for c in l['chain']))"
echo "== 4/6 SST-2 target over 3 seeds, from each step of the chain and from the plain tiny model (run_target_task_GPT2_sst2_multiple.py)"
rm -f "$OUT/results_table.csv"
for source in "$parent" "$OUT/pretrained_model_squad" "$OUT/pretrained_model_squad_v2" "$OUT/$TINY"; do
    "$PY" run_target_task_GPT2_sst2_multiple.py --pretrained_model "$source" \
        --output_dir "$OUT/target_sst2_$(basename "$source")" --overwrite_output_dir \
        --train_file data/samples/sst2/train.tsv --validation_file data/samples/sst2/dev.tsv \
        --num_runs 3 --epochs 2 --batch_size 8 --learning_rate 1e-3 \
        --results_table "$OUT/results_table.csv" --features_cache_dir "$OUT/features_cache" --no_progress
done
echo "   and two other GLUE targets, 2 seeds each: RTE (a sentence pair, accuracy) and STS-B (a regression, Pearson)"
for target in rte stsb; do
    train=$("$PY" -c "from utils.data.loading import sample_file; print(sample_file('$target', 'train'))")
    dev=$("$PY" -c "from utils.data.loading import sample_file; print(sample_file('$target', 'validation'))")
    for source in "$parent" "$OUT/$TINY"; do
        "$PY" run_target_task_GPT2_sst2_multiple.py --dataset_name "$target" --pretrained_model "$source" \
            --output_dir "$OUT/target_${target}_$(basename "$source")" --overwrite_output_dir \
            --train_file "$train" --validation_file "$dev" --num_runs 2 --epochs 2 --batch_size 4 \
            --learning_rate 1e-3 --selection last --results_table "$OUT/results_table.csv" \
            --features_cache_dir "$OUT/features_cache" --no_progress
    done
done
"$PY" -m utils.seed_statistics "$OUT/target_sst2_$TINY/summary.json" \
    "$OUT/target_sst2_$(basename "$parent")/summary.json" --bootstrap 2000 > "$OUT/comparison.json"
"$PY" -c "import json; c = json.load(open('$OUT/comparison.json')); p = c['paired_t_p_value']; print('transfer (chain - plain): mean %+.4f, paired t p = %s, bootstrap CI [%.4f, %.4f]' % (c['mean_difference'], 'undefined (%s)' % c.get('paired_t_p_value_reason') if p is None else '%.3f' % p, c['bootstrap']['ci_low'], c['bootstrap']['ci_high']))"
echo "== 5/6 Reptile across squad, squad_v2 and duorc;SelfRC (maml_qa.py), then FOMAML and multi-task training at the"
echo "   same compute (--match_compute), each followed by the SST-2 target; the comparison table against the plain model"
META=(--tasks 'squad,squad_v2,duorc;SelfRC' --model_name "$OUT/$TINY"
      --task_file squad=data/samples/squad/train-v1.1.json --task_file squad_v2=data/samples/squad_v2/train-v2.0.json
      --task_file 'duorc;SelfRC'=data/samples/duorc/SelfRC_train.json
      --eval_tasks quoref --task_file quoref=data/samples/quoref/quoref-train.json
      --eval_file quoref=data/samples/quoref/quoref-dev.json --eval_adapt_steps 5,20
      --meta_batch_size 2 --num_inner_steps 3 --inner_lr 1e-3 --features_cache_dir "$OUT/features_cache" --no_progress)
# 12 Reptile steps of 2 tasks x 3 inner steps = 72 passes; FOMAML and multi-task train until their tokens are
# nearest Reptile's (within one batch).
"$PY" maml_qa.py "${META[@]}" --log_dir "$OUT/logs" --out demo --overwrite_output_dir --num_train_iterations 12
for algorithm in fomaml multitask; do
    "$PY" maml_qa.py "${META[@]}" --algorithm "$algorithm" --match_compute "$OUT/logs/qa_tasks_demo" \
        --log_dir "$OUT/logs" --out "demo_$algorithm" --overwrite_output_dir
done
for run in demo:reptile demo_fomaml:fomaml demo_multitask:multitask; do
    "$PY" run_target_task_GPT2_sst2_multiple.py --pretrained_model "$OUT/logs/qa_tasks_${run%%:*}/model" \
        --output_dir "$OUT/target_sst2_${run##*:}" --overwrite_output_dir \
        --train_file data/samples/sst2/train.tsv --validation_file data/samples/sst2/dev.tsv \
        --num_runs 3 --epochs 2 --batch_size 8 --learning_rate 1e-3 \
        --results_table "$OUT/results_table.csv" --features_cache_dir "$OUT/features_cache" --no_progress
done
"$PY" -m utils.compare_runs "$OUT/target_sst2_$TINY/summary.json" "$OUT/target_sst2_$(basename "$parent")/summary.json" \
    "$OUT/target_sst2_reptile/summary.json" "$OUT/target_sst2_fomaml/summary.json" \
    "$OUT/target_sst2_multitask/summary.json" --bootstrap 2000 --output "$OUT/meta_comparison.json"
echo "== 6/6 Task2Vec embeddings of the bundled tasks (python -m task2vec), then TaskDiversity.py on the results table"
"$PY" -m task2vec --tasks squad,squad_v2,duorc-p,duorc-s,drop,sst2,rte,stsb --model_name "$OUT/$TINY" --use_samples \
    --output_dir "$OUT/TaskEmb" --overwrite_output_dir --batch_size 8 --num_batches 3 --head_steps 50 --no_progress
"$PY" TaskDiversity.py --emb_dir "$OUT/TaskEmb" --source_tasks squad,squad_v2,duorc-p,duorc-s,drop --target_task sst2 \
    --subset_size 3 --results_table "$OUT/results_table.csv" --output_dir "$OUT/task_diversity" --overwrite_output_dir
echo "   and with STS-B as the target (its rows in the results table are scored by Pearson)"
"$PY" TaskDiversity.py --emb_dir "$OUT/TaskEmb" --source_tasks squad,squad_v2,duorc-p,duorc-s,drop --target_task stsb \
    --subset_size 3 --results_table "$OUT/results_table.csv" --output_dir "$OUT/task_diversity_stsb" \
    --overwrite_output_dir > "$OUT/task_diversity_stsb.txt"
grep -m1 "^Condition" "$OUT/task_diversity_stsb.txt" || true
echo "   and which source each selector predicts will help SST-2 most, scored against the measured transfer"
"$PY" -m task2vec.selection --results_table "$OUT/results_table.csv" --target_tasks sst2 --emb_dir "$OUT/TaskEmb" \
    --use_samples --model_name "$OUT/$TINY" --bootstrap 500 --output_dir "$OUT/selection" --overwrite_output_dir
cat <<SUMMARY
== what the demo showed, and where
1 a tiny $FAMILY model built offline (2 layers, 32 wide, random weights) -> $OUT/$TINY
2 every bundled sample read by its adapter, kept / dropped by reason       -> $OUT/adapter_stats/
3 the intermediate chain squad -> squad_v2 -> duorc-p, lineage recorded   -> $OUT/pretrained_model_squad/,
                                                                             $OUT/pretrained_model_squad_v2/,
                                                                             $OUT/pretrained_model_duorc-p/
4 SST-2 over 3 seeds from the chain's end and from the plain tiny model   -> $OUT/target_sst2_*/summary.json;
  one row per source in $OUT/results_table.csv, their paired comparison in $OUT/comparison.json;
  RTE (pair, accuracy) and STS-B (regression, Pearson), 2 seeds each      -> $OUT/target_rte_*/, $OUT/target_stsb_*/
5 Reptile across squad, squad_v2, duorc-s, evaluated on held-out quoref   -> $OUT/logs/qa_tasks_demo/,
  FOMAML and multi-task at the same training tokens                      -> $OUT/logs/qa_tasks_demo_fomaml/, .._multitask/
  then SST-2 from each, compared with the plain model                     -> $OUT/target_sst2_reptile/ (and _fomaml,
                                                                             _multitask), $OUT/meta_comparison.json
6 Task2Vec embeddings with their noise floors                             -> $OUT/TaskEmb/,
  TaskDiversity on the results table, target SST-2 and target STS-B      -> $OUT/task_diversity/,
                                                                             $OUT/task_diversity_stsb/
  the selectors' rankings of the SST-2 sources, scored                    -> $OUT/selection/
SUMMARY
"$PY" -c "
import json
names = ('$TINY', '$(basename "$parent")', 'reptile', 'fomaml', 'multitask')
means = {n: json.load(open('$OUT/target_sst2_%s/summary.json' % n))['eval_accuracy']['mean'] for n in names}
print('SST-2 accuracy on the 44 dev sentences, mean of 3 seeds (chance is 0.5):',
      ', '.join('%s %.3f' % (name, mean) for name, mean in means.items()))
for target in ('rte', 'stsb'):
    shown = []
    for name in names[:2]:
        summary = json.load(open('$OUT/target_%s_%s/summary.json' % (target, name)))
        score = summary['eval_' + summary['primary_metric']]
        shown.append('%s %s' % (name, 'undefined (%s)' % score['reason'] if score['mean'] is None else '%.3f' % score['mean']))
    print('%s %s on the 8 dev examples, mean of 2 seeds:' % (target.upper(), summary['primary_metric']), ', '.join(shown))"
cat <<SUMMARY
Why these numbers are at chance: the model is a random 2-layer $FAMILY model trained for seconds on a few
dozen examples per task, so SST-2 accuracy near 0.5, QA F1 near 0, an STS-B Pearson anywhere in
[-1, 1] on 8 pairs, a transfer difference within the noise, and selectors scored against noise
are what it should give. The numbers prove the plumbing, not the method: every stage ran, wrote
its files and read the previous stage's. For real numbers, run the same commands with gpt2 on the
full datasets (README).
SUMMARY
