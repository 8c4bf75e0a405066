"""The SFT baselines: the pure data builders on hand-made inputs, then the script end to end on the
tiny preset (Stage I for one step, each baseline, and an evaluation of its checkpoint)."""

import json
import os
import subprocess
import sys
from types import SimpleNamespace

import torch

from baselines import pair_sft_examples, sft_batch, star_examples

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_star_keeps_only_wrong_to_right():
    # episodes:        0: w->w  1: w->r  2: r->w  3: r->r  4: w->r
    rewards = torch.tensor([[0., 0., 1., 1., 0.], [0., 1., 0., 1., 1.]])
    assert star_examples(SimpleNamespace(rewards=rewards)) == [1, 4]
    assert star_examples(SimpleNamespace(rewards=torch.ones(2, 3))) == []


def test_pair_sft_pairs_wrong_with_right_of_the_same_problem():
    texts = [["1", "2", "3", "2"],   # problem 0: right "2"; wrong "1", "3" (the repeated "2" counts once)
             ["5", "6"],             # problem 1: only wrong attempts
             ["7", "7"],             # problem 2: only right attempts
             ["8", "9"]]             # problem 3: wrong "8", right "9"
    correct = [[False, True, False, True], [False, False], [True, True], [False, True]]
    pairs = pair_sft_examples(texts, correct)
    assert pairs == [("1", "2", 0), ("3", "2", 0), ("8", "9", 3)]
    for wrong, right, i in pairs:  # never reversed, never across problems
        assert not correct[i][texts[i].index(wrong)] and correct[i][texts[i].index(right)]
    assert pair_sft_examples([["a", "b"]], [[True, True]]) == []


def test_sft_batch_shifts_the_loss_mask():
    ids, attn, mask = sft_batch([([5, 6, 7], [(1, 3)]), ([5, 6], [(1, 2)])], pad_id=0)
    assert ids.tolist() == [[5, 6, 7], [5, 6, 0]] and attn.tolist() == [[1, 1, 1], [1, 1, 0]]
    assert mask.tolist() == [[1, 1], [1, 0]]  # position j predicts token j+1; padding never counts


def run(script, *args):
    return subprocess.run([sys.executable, os.path.join(ROOT, script), *args], capture_output=True, text=True,
                          timeout=600, env={**os.environ, "TQDM_DISABLE": "1", "OMP_NUM_THREADS": "1"})


def test_baselines_then_evaluate(tmp_path):
    out = str(tmp_path)
    stage1 = run("stage1.py", "--preset", "tiny", "--steps", "1", "--out_dir", out)
    assert stage1.returncode == 0, stage1.stderr[-3000:]
    for method in ("star", "pair_sft"):
        result = run("baselines.py", "--preset", "tiny", "--out_dir", out, "--method", method, "--epochs", "1")
        assert result.returncode == 0, result.stderr[-3000:]
        assert f"{method}: " in result.stdout and "SFT examples" in result.stdout
        config = json.load(open(os.path.join(out, "baselines", method, "score_config.json")))
        assert config["stage"] == "sft" and config["method"] == method and config["task"] == "arithmetic"
        assert config["base_model"] == os.path.join(out, "base") and config["max_operand"] == 4
    evaluate = run("evaluate.py", "--preset", "tiny", "--out_dir", out, "--model", os.path.join(out, "baselines", "star"),
                   "--limit", "8")
    assert evaluate.returncode == 0, evaluate.stderr[-3000:]
    assert os.path.isfile(os.path.join(out, "eval", "star.metrics.json"))
    bad = run("baselines.py", "--preset", "tiny", "--out_dir", out, "--method", "dpo")
    assert bad.returncode != 0 and bad.stderr.strip() == "error: --method must be star or pair_sft, not 'dpo'"
