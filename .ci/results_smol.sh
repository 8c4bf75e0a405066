#!/usr/bin/env bash
# The --preset smol table (README, "A real model"), on one CUDA GPU: the base model, then for seeds
# 0, 1, 2 Stage I alone, SCoRe (Stage I + II) and SCoRe without reward shaping (alpha = 0), each
# evaluated greedily on the same 500 test problems; one row per method with the mean [min, max] over
# the seeds, and the training curves. Usage: bash .ci/results_smol.sh [MODEL]  (hub id, folder or .gguf)
set -euo pipefail
cd "$(dirname "$0")/.."
model=${1:-HuggingFaceTB/SmolLM2-135M-Instruct}
rm -rf out/smol
for seed in 0 1 2; do
  out=out/smol/seed$seed
  /usr/bin/time -f "stage1 seed $seed: %e s" python stage1.py --preset smol --model "$model" --seed $seed --out_dir $out
  mkdir -p $out/alpha0/logs && cp -r $out/stage1 $out/alpha0/   # the ablation starts from the same Stage I
  cp $out/logs/stage1.jsonl $out/alpha0/logs/   # and its curves start where that Stage I ended
  /usr/bin/time -f "stage2 seed $seed: %e s" python stage2.py --preset smol --seed $((seed + 100)) --out_dir $out
  /usr/bin/time -f "stage2 alpha 0 seed $seed: %e s" python stage2.py --preset smol --seed $((seed + 100)) --out_dir $out/alpha0 --alpha 0
  python evaluate.py --preset smol --out_dir $out --model $out/stage1 --name stage1_seed$seed
  python evaluate.py --preset smol --out_dir $out --name score_seed$seed
  python evaluate.py --preset smol --out_dir $out/alpha0 --name no_shaping_seed$seed
done
python evaluate.py --preset smol --model "$model" --name base
python evaluate.py --preset smol --table "out/smol/eval/base.metrics.json,out/smol/seed*/eval/stage1_*.metrics.json,out/smol/seed*/eval/score_*.metrics.json,out/smol/seed*/alpha0/eval/*.metrics.json"
python evaluate.py --preset smol --curves "out/smol/seed*,out/smol/seed*/alpha0"
