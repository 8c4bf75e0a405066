#!/usr/bin/env bash
# The --preset smol_cpu results (README, "A real model on a CPU"): SmolLM2-135M-Instruct on 2 CPU
# cores. The base model, then for each seed Stage I alone, SCoRe (Stage I then Stage II) and SCoRe
# without reward shaping (alpha = 0, from the same Stage I), each evaluated greedily on the same 500
# test problems. What it keeps, in results/smol_cpu/ (committed):
#   {base,stage1_seedN,score_seedN,alpha0_seedN}.jsonl   per problem: id, correct_t1, correct_t2, y1, y2, ...
#   seedN/logs/stage{1,2}.jsonl, seedN/alpha0/logs/stage{1,2}.jsonl   the training logs (one line a step; alpha0/stage1 is the shared Stage I's)
#   wall_times.tsv   seconds per command;  eval/results.md, eval/curves.md and eval/curves.png   the table and the curves
# Hours of CPU, so it is resumable: run it again after a stop and it goes on where it was (each stage
# with --resume true; an evaluation whose records are in results/smol_cpu is not redone).
# Usage: bash .ci/results_smol_cpu.sh [MODEL] [SEEDS]
#        bash .ci/results_smol_cpu.sh path/to/SmolLM2-135M-Instruct.Q4_1.gguf "0 1 2"
#        SCORE_BF16=false bash .ci/results_smol_cpu.sh ...   # the stages' --bf16 (unset: auto)
#        SCORE_BF16=false SCORE_ARGS="--micro_batch 32" bash .ci/results_smol_cpu.sh ...   # as the committed seeds
#                                                           # 0-2 ran: fp32, one micro-batch of 32 (now 8)
#        SCORE_RESULTS=results/smol_cpu_bf16 bash .ci/results_smol_cpu.sh ...   # records and logs kept there instead
# The table alone, from the committed records: python evaluate.py --table "results/smol_cpu/*.jsonl" --out_dir results/smol_cpu
set -euo pipefail
cd "$(dirname "$0")/.."
model=${1:-HuggingFaceTB/SmolLM2-135M-Instruct}
seeds=${2:-0 1 2}
out=${SCORE_OUT:-out/smol_cpu}   # checkpoints (not committed)
# the stages' numerics (evaluation always decodes in fp32), and any further stage flags from SCORE_ARGS
read -r -a bf16 <<< "--bf16 ${SCORE_BF16:-auto} ${SCORE_ARGS:-}"
res=${SCORE_RESULTS:-results/smol_cpu}   # what is kept (committed); another folder keeps a run apart from the table
mkdir -p "$res"

timed() {  # NAME COMMAND...: run it and add its wall time to wall_times.tsv
  local name=$1 start=$SECONDS
  shift
  "$@"
  printf '%s\t%s\n' "$name" $((SECONDS - start)) >> "$res/wall_times.tsv"
}

train() {  # CHECKPOINT COMMAND...: a stage, resumed from CHECKPOINT if a stopped run left one, skipped once done
  local checkpoint=$1 resume=false
  shift
  [ -f "$checkpoint.done" ] && return
  [ -d "$checkpoint" ] && resume=true
  timed "${checkpoint#"$out"/}" "$@" --resume $resume
  touch "$checkpoint.done"
}

evaluate() {  # NAME OUT_DIR [ARGS...]: greedy evaluation, its records copied into results/
  local name=$1 dir=$2
  shift 2
  [ -f "$res/$name.jsonl" ] && return
  timed "eval_$name" python evaluate.py --preset smol_cpu --out_dir "$dir" --name "$name" "$@"
  cp "$dir/eval/$name.jsonl" "$res/$name.jsonl"
}

evaluate base "$out" --model "$model"
for seed in $seeds; do
  run=$out/seed$seed
  mkdir -p "$res/seed$seed/logs" "$res/seed$seed/alpha0/logs"
  # Each result is evaluated and its log copied as soon as it exists, so a stopped run has committed what it has.
  train "$run/stage1" python stage1.py --preset smol_cpu --model "$model" --seed "$seed" --out_dir "$run" "${bf16[@]}"
  cp "$run"/logs/stage1.jsonl "$res/seed$seed/logs/"
  evaluate "stage1_seed$seed" "$run" --model "$run/stage1"
  train "$run/stage2_last" python stage2.py --preset smol_cpu --seed $((seed + 100)) --out_dir "$run" "${bf16[@]}"
  cp "$run"/logs/stage2.jsonl "$res/seed$seed/logs/"
  evaluate "score_seed$seed" "$run"
  mkdir -p "$run/alpha0" && ln -sfn "$(realpath "$run/stage1")" "$run/alpha0/stage1"  # the same Stage I
  train "$run/alpha0/stage2_last" python stage2.py --preset smol_cpu --seed $((seed + 100)) --out_dir "$run/alpha0" \
    --alpha 0 "${bf16[@]}"
  cp "$run"/alpha0/logs/stage2.jsonl "$run"/logs/stage1.jsonl "$res/seed$seed/alpha0/logs/"  # its own Stage II after the shared Stage I
  evaluate "alpha0_seed$seed" "$run/alpha0"
done
python evaluate.py --table "$res/*.jsonl" --out_dir "$res"
python evaluate.py --curves "$res/seed*,$res/seed*/alpha0" --out_dir "$res"
cat "$res/wall_times.tsv"
