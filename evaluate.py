"""
Evaluate self-correction: greedy attempt 1, the instruction, greedy attempt 2, and the paper's
metrics (Table 2), all fractions of the whole test set:

    Acc@t1, Acc@t2             accuracy of attempt 1 and attempt 2
    delta       = Acc@t2 - Acc@t1
    delta_i2c   = fraction wrong at attempt 1 and right at attempt 2
    delta_c2i   = fraction right at attempt 1 and wrong at attempt 2
    identity:   delta = delta_i2c - delta_c2i

and the paper's analyses beyond its Table 2, one switch each:

    --turns N        N attempts, the same instruction before each; accuracy per attempt and the
                     i->c / c->i flows between consecutive attempts (SCoRe: slightly better past
                     turn 2, then flat; the base model never beats attempt 1)
    --budgets 2,4,8  inference-time compute at equal budget K, temperature 0.7, majority vote:
                     K parallel samples versus K/2 samples each self-corrected once
    --repair PATH    offline repair (the MBPP-R analogue): the wrong attempt 1s recorded in an
                     earlier run's per-problem JSONL are given as attempt 1; greedy attempt 2
    --compare base,stage1,stage2   several checkpoints of one run, one table (the tutorial's last line)
    --table FILES    no model: several runs' metrics side by side as the paper's table (Markdown),
                     plus a plot when matplotlib is installed; NAME_seedN runs (2 or more) become one row
    --curves DIRS    no model: reward, truncation and KL per attempt over training, from the runs' logs
                     (curves.md, first vs last 10 steps and the seconds; curves.png with matplotlib)
Every run also reports the edit-distance ratio between attempt 1 and attempt 2 as a histogram:
does the model change its answer at all? The analyses themselves are pure functions in support/analysis.py.
Under torchrun each process evaluates every N-th problem and rank 0 writes the results.

Reads:  a checkpoint (default {out_dir}/stage2) or any model via --model; test problems
Writes: {out_dir}/eval/{name}.jsonl (per problem: id, y1, y2, ..., correctness, edit ratio),
        {name}.metrics.json; --budgets: {name}.budgets.json; --table: results.md (+ results.png)
Run:    python evaluate.py                          # MATH500 with the Stage II checkpoint
        python evaluate.py --model Qwen/Qwen2.5-1.5B-Instruct --name base   # the base model row
        python evaluate.py --turns 5                # five attempts
        python evaluate.py --budgets 2,4,8,16,32    # parallel vs sequential sampling
        python evaluate.py --task code --repair out/eval/base.jsonl --name stage2_repair
        python evaluate.py --table "out/eval/*.metrics.json"    # quote the glob
        python evaluate.py --preset tiny --compare base,stage1,stage2   # CPU, after the tiny stages
        python evaluate.py --preset smol --compare base,stage1,stage2   # GPU, after the smol stages
        torchrun --nproc_per_node 8 evaluate.py     # the same files and table, 8 GPUs

Where this departs from the paper:
1. The default reads the task from the checkpoint's run config; --task overrides it.
2. --budgets votes over the K/2 second attempts (our reading of the paper's "K/2 samples, each
   self-corrected once"); the vote over all K attempts is reported next to it. The "one sample"
   baseline is the mean accuracy of the temperature-0.7 samples. Code has no final answer to vote
   on, so --budgets supports math and arithmetic only.
3. The edit distance counts a substitution as a deletion plus an insertion, so the ratio spans
   0 (identical) to 1 (nothing in common); with unit-cost substitutions two unrelated strings of
   equal length would sit near 0.5. The paper does not define its edit distance.
4. --repair repairs recorded wrong attempts of our own model's earlier run (e.g. on HumanEval), not
   the MBPP-R set of another model's attempts; the repair rate is the fraction of them fixed.
"""

import dataclasses
import glob
import json
import os
import sys
from dataclasses import dataclass

import torch

from model import load_model, load_tokenizer
from reward import self_correction_metrics  # Table 2's metrics live in reward.py; `from evaluate import` works too
from rollout import run_episodes
from support.analysis import (TABLE_HEADER, answer_equiv, compute_budget_curve, edit_distance_ratio, expand_paths,
                              final_answer, format_row, plot_results, plot_training_curves, print_histogram,
                              ratio_histogram, results_table, training_summary)
from support.checkpoints import append_jsonl, find_checkpoint, read_run_config
from support.distributed import all_gather, barrier, init_distributed, rank_and_world_size
from support.sampler import Sampler
from support.settings import UsageError, parse_config, presets, require_device
from support.tasks import get_task, load_problems, read_jsonl


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
    max_operand: int = 0
    """arithmetic only: operands 0..max_operand; 0: the checkpoint's training value, else 9"""
    mix: str = ""
    """arithmetic only: kinds of problem, e.g. '+:99:9,*:9:9' (support/tasks.py); empty: the checkpoint's, else a + b"""
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
    turns: int = 2
    """attempts per problem, the instruction repeated before each; Table 2's metrics use attempts 1 and 2"""
    budgets: str = ""
    """inference-compute analysis instead: comma-separated even budgets K (the paper's 2,4,8,16,32)"""
    vote_temperature: float = 0.7
    """sampling temperature of the --budgets analysis (the paper's 0.7)"""
    seed: int = 0
    """seeds the sampling of --budgets"""
    repair: str = ""
    """a per-problem JSONL written by evaluate.py: repair its wrong attempt 1s (MBPP-R analogue)"""
    table: str = ""
    """no model: a results table from these metrics files (comma-separated paths or quoted globs)"""
    curves: str = ""
    """no model: reward, truncation and KL per attempt over training, from these run folders' logs (comma-separated, globs)"""
    compare: str = ""
    """several checkpoints of the run in out_dir side by side, e.g. base,stage1,stage2 ('base': the base model)"""


# Evaluation reads the weights as trained: float32, and decodes with them (the sampler's default on a GPU
# is a bf16 copy, support/sampler.py). A trained checkpoint differs from its base by little (~1e-4 a weight at
# lr 5e-6), below bf16's resolution (a weight of 0.05 moves in steps of 2.4e-4), and a hub base model's
# weights are bf16 numbers themselves, so in bf16 most changes round back to the base exactly: 96 % of
# them after 10 Stage I steps from a bf16-exact SmolLM2-135M at the smol preset's lr 1e-5 (median change
# 1.9e-5). A bf16 evaluation would measure mostly the base model. float32 costs twice the weight bytes
# per decoded token (6 GB at 1.5B instead of 3), once per evaluation.
EVAL_DTYPE = torch.float32


def evaluation_sampler(model):
    """The sampler every evaluation decodes with: the loaded float32 weights themselves, no bf16 copy."""
    return Sampler(model, dtype=EVAL_DTYPE)


# ----------------------------------------------------------------------------- N attempts

def turn_flows(correct_by_turn):
    """Accuracy after each attempt and the flows from the attempt before it.
    correct_by_turn: [n_turns][n_problems] bools. Attempt t > 1 gets Table 2's numbers for the pair
    (t - 1, t), so the deltas telescope: their sum is Acc@last - Acc@1."""
    flows = [{"turn": 1, "acc": sum(correct_by_turn[0]) / len(correct_by_turn[0])}]
    for t in range(1, len(correct_by_turn)):
        m = self_correction_metrics(correct_by_turn[t - 1], correct_by_turn[t])
        flows.append({"turn": t + 1, "acc": m["acc_t2"], "delta": m["delta"], "delta_i2c": m["delta_i2c"],
                      "delta_c2i": m["delta_c2i"]})
    return flows


# ----------------------------------------------------------------------------- the runs

def read_run(path):
    """An evaluated run's metrics: its {name}.metrics.json, or recomputed from its per-problem
    {name}.jsonl (what results/ keeps: the table can always be rebuilt from the records)."""
    if not path.endswith(".jsonl"):
        with open(path) as f:
            return json.load(f)
    records = read_jsonl(path)
    if not records or "correct_t2" not in records[0] or "id" not in records[0]:
        raise UsageError(f"{path} holds no two-attempt records (id, correct_t1, correct_t2); pass a file "
                         f"evaluate.py wrote")
    metrics = self_correction_metrics([r["correct_t1"] for r in records], [r["correct_t2"] for r in records])
    if "edit_ratio" in records[0]:
        metrics["edit_ratio"] = ratio_histogram([r["edit_ratio"] for r in records])
    if "truncated_t1" in records[0]:  # which wrong first attempts get fixed: cut off by the budget, or complete
        wrong = [r for r in records if not r["correct_t1"]]
        metrics["wrong_t1"] = {kind: [sum(r["truncated_t1"] == cut for r in wrong),
                                      sum(r["correct_t2"] for r in wrong if r["truncated_t1"] == cut)]
                               for kind, cut in (("cut_off", True), ("complete", False))}
    return {"name": os.path.basename(path).removesuffix(".jsonl"), "n": len(records),
            "distinct": len({r["id"] for r in records}), **metrics}  # arithmetic test sets repeat problems


def write_results(path, records):
    if os.path.exists(path):
        os.remove(path)
    for r in records:
        append_jsonl(path, r)


def evaluate_attempts(cfg, model, tokenizer, task, problems, name, first_attempts=None):
    """Greedy decoding for every attempt (the paper evaluates at temperature 0).
    Writes the per-problem JSONL and returns Table 2's metrics plus the per-turn flows.
    Under torchrun each rank decodes every world_size-th problem; rank 0 gathers them back into the
    test set's order, so the file and the table are those of one process (other ranks get None)."""
    rank, size = rank_and_world_size()
    mine = list(range(rank, len(problems), size))
    episodes = run_episodes(model, tokenizer, task, [problems[i] for i in mine], samples_per_problem=1,
                            temperature=0.0, max_new_tokens=cfg.max_new_tokens, n_turns=cfg.turns,
                            batch_size=cfg.batch_size, sampler=evaluation_sampler(model),
                            first_attempts=None if first_attempts is None else [first_attempts[i] for i in mine])
    records = []
    for row, i in enumerate(mine):
        p, ys = problems[i], [episodes.responses[t][row] for t in range(cfg.turns)]
        record = {"id": p.id, "answer": p.answer}
        for t in range(cfg.turns):
            record.update({f"y{t + 1}": ys[t], f"correct_t{t + 1}": bool(episodes.rewards[t, row]),
                           f"truncated_t{t + 1}": bool(episodes.truncated[t, row])})
        records.append((i, {**record, "edit_ratio": edit_distance_ratio(ys[0], ys[1])}))
    records = [r for _, r in sorted(r for share in all_gather(records) for r in share)]  # every problem once
    if rank != 0:
        return None
    write_results(os.path.join(cfg.out_dir, "eval", f"{name}.jsonl"), records)
    correct = [[r[f"correct_t{t + 1}"] for r in records] for t in range(cfg.turns)]  # [turn][problem]
    return {**self_correction_metrics(correct[0], correct[1]), "turns": turn_flows(correct),
            "edit_ratio": ratio_histogram([r["edit_ratio"] for r in records])}


def repair_attempts(cfg, problems, name):
    """The problems whose recorded attempt 1 was wrong, with those attempts (the MBPP-R analogue)."""
    if not os.path.isfile(cfg.repair):
        raise UsageError(f"--repair: {cfg.repair!r} does not exist; pass a {{name}}.jsonl that evaluate.py wrote")
    by_id = {p.id: p for p in problems}
    rows = [r for r in read_jsonl(cfg.repair) if not r["correct_t1"]]
    missing = [r["id"] for r in rows if r["id"] not in by_id]
    if missing:
        raise UsageError(f"--repair: {len(missing)} ids of {cfg.repair} (e.g. {missing[0]!r}) are not in the "
                         f"{cfg.task} test set; pass the same --task / --test_data as the run that wrote it")
    rows = rows[:cfg.limit] if cfg.limit else rows
    if not rows:
        raise UsageError(f"--repair: {cfg.repair} has no wrong attempt 1 to repair")
    return [by_id[r["id"]] for r in rows], [r["y1"] for r in rows]


def evaluate_budgets(cfg, model, tokenizer, task, problems, name):
    budgets = sorted({int(b) for b in cfg.budgets.split(",") if b.strip()})
    if not budgets or any(b < 2 or b % 2 for b in budgets):
        raise UsageError(f"--budgets needs even numbers >= 2 (K/2 episodes of 2 attempts), got {cfg.budgets!r}")
    top = budgets[-1]
    rank, size = rank_and_world_size()
    torch.manual_seed(cfg.seed + rank)
    mine = problems[rank::size]  # torchrun: each rank samples its share of the problems
    common = dict(temperature=cfg.vote_temperature, max_new_tokens=cfg.max_new_tokens, batch_size=cfg.batch_size,
                  sampler=evaluation_sampler(model))
    # Sample once at the largest budget; smaller budgets vote over the first K of the same samples.
    # Parallel: K independent attempt 1s. Sequential: K/2 episodes of attempt 1 + one self-correction.
    par = run_episodes(model, tokenizer, task, mine, samples_per_problem=top, n_turns=1, **common)
    seq = run_episodes(model, tokenizer, task, mine, samples_per_problem=top // 2, n_turns=2, **common)
    answer = lambda eps, t, i: (final_answer(task.name, eps.responses[t][i]), bool(eps.rewards[t, i]))
    parallel = [[answer(par, 0, i * top + j) for j in range(top)] for i in range(len(mine))]
    sequential = [[(answer(seq, 0, i * (top // 2) + j), answer(seq, 1, i * (top // 2) + j))
                   for j in range(top // 2)] for i in range(len(mine))]
    shares = all_gather((parallel, sequential))
    if rank != 0:
        return None
    # Back in the test set's order: rank r held problems r, r + size, ...
    parallel, sequential = [None] * len(problems), [None] * len(problems)
    for r, (par_r, seq_r) in enumerate(shares):
        parallel[r::size], sequential[r::size] = par_r, seq_r
    result = compute_budget_curve(parallel, sequential, budgets, answer_equiv(task.name))
    result.update(name=name, task=task.name, n=len(problems), temperature=cfg.vote_temperature,
                  generations_per_problem={"parallel": top, "sequential": 2 * (top // 2)},
                  config=dataclasses.asdict(cfg))
    with open(os.path.join(cfg.out_dir, "eval", f"{name}.budgets.json"), "w") as f:
        json.dump(result, f, indent=2)
    print(f"{task.name}, {len(problems)} problems, temperature {cfg.vote_temperature}, majority vote; "
          f"one sample: {100 * result['single_sample']:.1f} %")
    print("| budget K | parallel (K samples) | sequential (K/2 x 2 attempts) | sequential, vote over all K |\n"
          "|---|---|---|---|")
    for c in result["curve"]:
        print(f"| {c['budget']} | {100 * c['parallel']:.1f} ({100 * c['gain_parallel']:+.1f}) | "
              f"{100 * c['sequential']:.1f} ({100 * c['gain_sequential']:+.1f}) | {100 * c['sequential_all']:.1f} |")
    return result


TINY_NOTE = ("What the toy can show is the mechanics, not the paper's MATH result: Stage I rewards attempt 2 alone "
             "and teaches it to fix attempt 1; Stage II rewards both, and with 25 memorisable sums the best policy "
             "is to be right the first time, so the gain moves into attempt 1 and delta returns to about 0.")


def main(cfg):
    if cfg.table:  # no model: read earlier runs' metrics
        runs = [(path, read_run(path)) for path in expand_paths(cfg.table)]
        table = results_table(runs)
        os.makedirs(os.path.join(cfg.out_dir, "eval"), exist_ok=True)
        with open(os.path.join(cfg.out_dir, "eval", "results.md"), "w") as f:
            f.write(table + "\n")
        image = plot_results(runs, os.path.join(cfg.out_dir, "eval", "results.png"))
        print(f"{table}\n\nwritten: {os.path.join(cfg.out_dir, 'eval', 'results.md')}"
              + (f", {image}" if image else " (pip install matplotlib for a plot)"))
        return table
    if cfg.curves:  # no model: training curves from the runs' logs
        runs = [p for part in cfg.curves.split(",") if part.strip() for p in sorted(glob.glob(part.strip()))]
        if not runs:
            raise UsageError(f"--curves: no folder matches {cfg.curves!r}")
        os.makedirs(os.path.join(cfg.out_dir, "eval"), exist_ok=True)
        summary = training_summary(runs)
        with open(os.path.join(cfg.out_dir, "eval", "curves.md"), "w") as f:
            f.write(summary + "\n")
        image = plot_training_curves(runs, os.path.join(cfg.out_dir, "eval", "curves.png"))
        print(f"{summary}\n\nwritten: {os.path.join(cfg.out_dir, 'eval', 'curves.md')}"
              + (f", {image}" if image else " (pip install matplotlib for the curves)"))
        return summary
    if cfg.turns < 2:
        raise UsageError("--turns must be at least 2: self-correction needs a second attempt")
    require_device(cfg.device, os.path.basename(sys.argv[0]) or "evaluate.py")
    _, _, cfg.device = init_distributed(cfg.device)
    if not cfg.compare:
        return evaluate_model(cfg)
    # --compare base,stage1,stage2: several checkpoints of one run, one table (the tutorial's last line).
    base = read_run_config(find_checkpoint(os.path.join(cfg.out_dir, "stage1"), "run stage1.py first"))["base_model"]
    rows = []
    for name in filter(None, (n.strip() for n in cfg.compare.split(","))):
        path = base if name == "base" else os.path.join(cfg.out_dir, name)
        if name != "base":
            path = find_checkpoint(path, f"--compare: run the stage that writes {name} first")
        rows.append((name, evaluate_model(dataclasses.replace(cfg, model=path, name=name, compare=""), quiet=True)))
    if rank_and_world_size()[0] != 0:
        return None
    print(f"greedy, attempt 1 -> attempt 2, every model on the same test problems ({cfg.out_dir}/eval/)")
    print("\n".join([TABLE_HEADER] + [format_row(name, m) for name, m in rows]))
    base_config = os.path.join(base, "score_config.json")
    if os.path.isfile(base_config) and read_run_config(base).get("base_model") == "tiny":
        print(TINY_NOTE)
    return dict(rows)


def evaluate_model(cfg, quiet=False):
    """One model's evaluation: Table 2's row (or --budgets, --repair, --turns), files under eval/."""
    model_path = cfg.model or find_checkpoint(os.path.join(cfg.out_dir, "stage2"),
                                              "run stage2.py first, or pass --model")
    trained_on = read_run_config(model_path) if os.path.isfile(os.path.join(model_path, "score_config.json")) else {}
    cfg.task = cfg.task or trained_on.get("task") or "math"
    cfg.max_operand = cfg.max_operand or trained_on.get("max_operand") or 9
    cfg.mix = cfg.mix or trained_on.get("mix", "")
    name = cfg.name or os.path.basename(os.path.normpath(model_path)).removesuffix(".gguf")
    name += "_repair" if cfg.repair and not cfg.name else ""
    if cfg.budgets:
        final_answer(cfg.task, "")  # code has no answer to vote on: fail before loading the model
    if cfg.repair and cfg.turns != 2:
        raise UsageError("--repair runs exactly two attempts (the given one and the repair)")
    tokenizer = load_tokenizer(model_path)
    model = load_model(model_path, torch.device(cfg.device), EVAL_DTYPE, trainable=False)
    task = get_task(cfg.task)
    os.makedirs(os.path.join(cfg.out_dir, "eval"), exist_ok=True)
    if cfg.budgets:
        problems = load_problems(cfg.task, "test", cfg.test_data, limit=cfg.limit, max_operand=cfg.max_operand, mix=cfg.mix)
        return evaluate_budgets(cfg, model, tokenizer, task, problems, name)

    first_attempts = None
    if cfg.repair:
        problems, first_attempts = repair_attempts(
            cfg, load_problems(cfg.task, "test", cfg.test_data, max_operand=cfg.max_operand, mix=cfg.mix), name)
    else:
        problems = load_problems(cfg.task, "test", cfg.test_data, limit=cfg.limit, max_operand=cfg.max_operand, mix=cfg.mix)
    metrics = evaluate_attempts(cfg, model, tokenizer, task, problems, name, first_attempts)
    if metrics is None:  # torchrun: rank 0 writes and prints
        return None
    if cfg.repair:  # every problem here was wrong at attempt 1, so Acc@t2 is the fraction repaired
        metrics["repair_rate"] = metrics["acc_t2"]
    with open(os.path.join(cfg.out_dir, "eval", f"{name}.metrics.json"), "w") as f:
        json.dump({"name": name, "model": model_path, "task": cfg.task, "n": len(problems), **metrics,
                   "config": dataclasses.asdict(cfg)}, f, indent=2)
    if quiet:  # --compare prints one table for all its models
        return metrics
    mode = f"repairing the wrong attempt 1s of {cfg.repair}" if cfg.repair else "greedy"
    print(f"{cfg.task}, {len(problems)} problems, {mode}\n{TABLE_HEADER}\n{format_row(name, metrics)}")
    if cfg.repair:
        print(f"repair rate: {100 * metrics['repair_rate']:.1f} % of {len(problems)} wrong attempts fixed")
    if cfg.turns > 2:
        print("| attempt | Acc | delta vs previous | i->c | c->i |\n|---|---|---|---|---|")
        for f in metrics["turns"]:
            flows = (f"{100 * f['delta']:+.1f} | {100 * f['delta_i2c']:.1f} | {100 * f['delta_c2i']:.1f}"
                     if "delta" in f else "| |")
            print(f"| {f['turn']} | {100 * f['acc']:.1f} | {flows} |")
    print_histogram(metrics["edit_ratio"])
    print(f"per-problem results: {os.path.join(cfg.out_dir, 'eval', name + '.jsonl')}")
    return metrics


if __name__ == "__main__":
    try:
        main(parse_config(Config, presets("evaluate")))
        barrier()  # every rank leaves together (support/distributed.py, barrier)
    except UsageError as e:
        sys.exit(f"error: {e}")
