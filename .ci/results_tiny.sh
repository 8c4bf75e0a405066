#!/usr/bin/env bash
# Every tiny-preset result in the README, from scratch (about 3.5 minutes on a 2-core CPU).
set -e
cd "$(dirname "$0")/.."
rm -rf out/tiny out/tiny_*
python stage1.py --preset tiny
python stage2.py --preset tiny
python evaluate.py --preset tiny --model out/tiny/base --name base
python evaluate.py --preset tiny --model out/tiny/stage1 --name stage1
python evaluate.py --preset tiny --name score
for m in star pair_sft; do
  python baselines.py --preset tiny --method $m
  python evaluate.py --preset tiny --model out/tiny/baselines/$m --name $m
done
for ablation in "no_stage1 --init base" "no_shaping --alpha 0" "single_turn --single_turn true"; do
  set -- $ablation; name=$1; shift
  mkdir -p out/tiny_$name && cp -r out/tiny/base out/tiny/stage1 out/tiny_$name/
  python stage2.py --preset tiny --out_dir out/tiny_$name "$@"
  python evaluate.py --preset tiny --out_dir out/tiny_$name --name $name
done
python evaluate.py --preset tiny --turns 4 --name score_4turns
python evaluate.py --preset tiny --model out/tiny/base --turns 4 --name base_4turns
python evaluate.py --preset tiny --budgets 2,4,8,16,32 --name score
python evaluate.py --preset tiny --model out/tiny/base --budgets 2,4,8,16,32 --name base
python evaluate.py --preset tiny --table "out/tiny/eval/base.metrics.json,out/tiny/eval/stage1.metrics.json,out/tiny/eval/score.metrics.json,out/tiny*/eval/no_*.metrics.json,out/tiny_single_turn/eval/single_turn.metrics.json,out/tiny/eval/star.metrics.json,out/tiny/eval/pair_sft.metrics.json"
