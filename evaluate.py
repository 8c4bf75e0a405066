"""
Evaluate self-correction: greedy attempt 1, the instruction, greedy attempt 2, and the paper's
metrics (PAPER.md, Metrics), all fractions of the whole test set:

    Acc@t1, Acc@t2             accuracy of attempt 1 and attempt 2
    delta       = Acc@t2 - Acc@t1
    delta_i2c   = fraction wrong at attempt 1 and right at attempt 2
    delta_c2i   = fraction right at attempt 1 and wrong at attempt 2
    identity:   delta = delta_i2c - delta_c2i

Reads:  a checkpoint (default {out_dir}/stage2) or any model via --model; test problems
Writes: {out_dir}/eval/{name}.jsonl (per problem: id, y1, y2, correctness), {name}.metrics.json
Run:    python evaluate.py                          # MATH500 with the Stage II checkpoint
        python evaluate.py --model Qwen/Qwen2.5-1.5B-Instruct --name base   # the base model row
        python evaluate.py --preset tiny            # CPU, after stage1/stage2 --preset tiny

Where this departs from the paper:
1. The default reads the task from the checkpoint's run config; --task overrides it.
"""

import dataclasses
import json
import os
import sys
from dataclasses import dataclass

import torch

from model import (UsageError, append_jsonl, find_checkpoint, load_model, load_tokenizer, parse_config,
                   read_run_config, require_device)
from rollout import run_episodes
from tasks import get_task, load_problems


@dataclass
class Config:
    model: str = ""
    """what to evaluate: hub id, folder or .gguf; empty: the Stage II checkpoint in out_dir"""
    task: str = ""
    """arithmetic, math or code; empty: the task the checkpoint was trained on"""
    test_data: str = ""
    """a local JSONL of test problems; empty: download the task's test split (MATH500, HumanEval)"""
    limit: int = 0
    """evaluate only the first this many problems (0: all)"""
    out_dir: str = "out"
    """where the stage checkpoints are and where eval/ results go"""
    name: str = ""
    """a name for this evaluation's files (default: the model folder's name)"""
    max_new_tokens: int = 512
    """per attempt"""
    batch_size: int = 64
    """sequences per generate call"""
    device: str = "cuda"
    """cuda or cpu"""


PRESETS = {"tiny": dict(task="arithmetic", out_dir="out/tiny", limit=100, max_new_tokens=4, device="cpu")}


def self_correction_metrics(correct_t1, correct_t2):
    """The five numbers of the paper's Table 2 from per-problem correctness (lists of bools)."""
    n = len(correct_t1)
    if n == 0 or n != len(correct_t2):
        raise ValueError("need the same non-zero number of attempt-1 and attempt-2 results")
    acc_t1, acc_t2 = sum(correct_t1) / n, sum(correct_t2) / n
    return {"acc_t1": acc_t1, "acc_t2": acc_t2, "delta": acc_t2 - acc_t1,
            "delta_i2c": sum(not a and b for a, b in zip(correct_t1, correct_t2)) / n,
            "delta_c2i": sum(a and not b for a, b in zip(correct_t1, correct_t2)) / n}


def format_row(name, m):
    """One row of the paper's table, in percent."""
    return (f"| {name} | {100 * m['acc_t1']:.1f} | {100 * m['acc_t2']:.1f} | {100 * m['delta']:+.1f} | "
            f"{100 * m['delta_i2c']:.1f} | {100 * m['delta_c2i']:.1f} |")


TABLE_HEADER = "| method | Acc@t1 | Acc@t2 | delta | delta i->c | delta c->i |\n|---|---|---|---|---|---|"


def main(cfg):
    require_device(cfg.device, os.path.basename(sys.argv[0]) or "evaluate.py")
    model_path = cfg.model or find_checkpoint(os.path.join(cfg.out_dir, "stage2"),
                                              "run stage2.py first, or pass --model")
    trained_on = read_run_config(model_path) if os.path.isfile(os.path.join(model_path, "score_config.json")) else {}
    task_name = cfg.task or trained_on.get("task") or "math"
    name = cfg.name or os.path.basename(os.path.normpath(model_path)).removesuffix(".gguf")
    tokenizer = load_tokenizer(model_path)
    model = load_model(model_path, torch.device(cfg.device), torch.bfloat16 if cfg.device == "cuda" else torch.float32,
                       trainable=False)
    task = get_task(task_name)
    problems = load_problems(task_name, "test", cfg.test_data, limit=cfg.limit)

    # Greedy decoding for both attempts (PAPER.md, Hyperparameters: evaluation at temperature 0).
    episodes = run_episodes(model, tokenizer, task, problems, samples_per_problem=1, temperature=0.0,
                            max_new_tokens=cfg.max_new_tokens, batch_size=cfg.batch_size)
    correct_t1, correct_t2 = episodes.rewards[0].bool().tolist(), episodes.rewards[1].bool().tolist()
    metrics = self_correction_metrics(correct_t1, correct_t2)

    results = os.path.join(cfg.out_dir, "eval", f"{name}.jsonl")
    if os.path.exists(results):
        os.remove(results)
    for i, p in enumerate(problems):
        append_jsonl(results, {"id": p.id, "answer": p.answer, "y1": episodes.responses[0][i],
                               "y2": episodes.responses[1][i], "correct_t1": correct_t1[i],
                               "correct_t2": correct_t2[i], "truncated_t1": bool(episodes.truncated[0, i]),
                               "truncated_t2": bool(episodes.truncated[1, i])})
    with open(os.path.join(cfg.out_dir, "eval", f"{name}.metrics.json"), "w") as f:
        json.dump({"name": name, "model": model_path, "task": task_name, "n": len(problems), **metrics,
                   "config": dataclasses.asdict(cfg)}, f, indent=2)
    print(f"{task_name}, {len(problems)} problems, greedy\n{TABLE_HEADER}\n{format_row(name, metrics)}")
    print(f"per-problem results: {results}")
    return metrics


if __name__ == "__main__":
    try:
        main(parse_config(Config, PRESETS))
    except UsageError as e:
        sys.exit(f"error: {e}")
