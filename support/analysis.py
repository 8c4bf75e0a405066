"""
The paper's analyses beyond its Table 2, on recorded results (no model here): evaluate.py runs the
models and calls these. A file of its own because none of it samples or trains: it is pure functions
on lists of answers and metrics files, tested on known strings and numbers (tests/test_evaluate.py).

    edit_distance_ratio, ratio_histogram     does the model change its answer at all? (the paper's edit-distance ratio)
    majority_vote, compute_budget_curve      inference-time compute: K parallel vs K/2 x 2 sequential
    results_table, plot_results              several runs side by side in the paper's format
    training_summary, plot_training_curves   reward, truncation and KL per attempt over training, from the runs' logs
"""

import glob
import json
import os
import re

from support.settings import UsageError
from support.tasks import read_jsonl


# ----------------------------------------------------------------------------- the paper's table

def format_row(name, m):
    """One row of the paper's table, in percent."""
    return (f"| {name} | {100 * m['acc_t1']:.1f} | {100 * m['acc_t2']:.1f} | {100 * m['delta']:+.1f} | "
            f"{100 * m['delta_i2c']:.1f} | {100 * m['delta_c2i']:.1f} |")


TABLE_HEADER = "| method | Acc@t1 | Acc@t2 | delta | delta i->c | delta c->i |\n|---|---|---|---|---|---|"


# ----------------------------------------------------------------------------- edit distance

def edit_distance(a, b):
    """Insert/delete edit distance (a substitution costs 2) = len(a) + len(b) - 2 * LCS(a, b).

    The naive version is the O(len(a) * len(b)) table of the longest common subsequence:
        row = [0] * (len(a) + 1)
        for cb in b:
            prev, row = row, [0]
            for i, ca in enumerate(a):
                row.append(prev[i] + 1 if ca == cb else max(prev[i + 1], row[i]))
        lcs = row[-1]
    Here the same LCS comes from the bit-parallel algorithm (Allison & Dix 1986; Hyyro 2004): one
    Python integer holds a whole column of that table as bits, so a 2,000-character solution costs
    2,000 big-integer operations instead of 4 million Python steps."""
    if len(a) < len(b):
        a, b = b, a
    if not b:
        return len(a)
    match = {}  # character -> bit mask of its positions in a
    for i, ch in enumerate(a):
        match[ch] = match.get(ch, 0) | (1 << i)
    full = (1 << len(a)) - 1
    v = full  # zero bits will mark the positions of a that the LCS uses
    for ch in b:
        u = v & match.get(ch, 0)
        v = ((v + u) | (v - u)) & full
    lcs = len(a) - bin(v).count("1")
    return len(a) + len(b) - 2 * lcs


def edit_distance_ratio(a, b):
    """Edit distance over summed lengths (the paper's edit-distance ratio): 0 for a copy, 1 for nothing in common."""
    return edit_distance(a, b) / (len(a) + len(b)) if a or b else 0.0


def ratio_histogram(ratios, bins=10):
    """Counts of ratios in [0, 0.1), [0.1, 0.2), ..., [0.9, 1.0]; plus the share of exact copies."""
    counts = [0] * bins
    for r in ratios:
        counts[min(int(r * bins), bins - 1)] += 1
    return {"bins": [i / bins for i in range(bins + 1)], "counts": counts,
            "mean": sum(ratios) / len(ratios), "unchanged": sum(r == 0 for r in ratios) / len(ratios)}


def print_histogram(hist):
    width = max(hist["counts"]) or 1
    print(f"edit-distance ratio y1 -> y2 (0: unchanged): mean {hist['mean']:.3f}, "
          f"{100 * hist['unchanged']:.1f} % unchanged")
    for lo, hi, c in zip(hist["bins"], hist["bins"][1:], hist["counts"]):
        print(f"  {lo:.1f}-{hi:.1f} {c:5d} {'#' * round(40 * c / width)}")


# ----------------------------------------------------------------------------- inference-time compute

_INTEGER = re.compile(r"(?<!\d)-?\d+(?:,\d{3})*(?!\d)")  # reward.arithmetic_reward's integers


def final_answer(task_name, response):
    """The answer a majority vote counts: the MATH final answer, or the last integer for arithmetic."""
    if task_name == "math":
        from reward import extract_answer
        return extract_answer(response)
    if task_name == "arithmetic":
        integers = _INTEGER.findall(response)
        return str(int(integers[-1].replace(",", ""))) if integers else None
    raise UsageError(f"a majority vote needs final answers to compare, and {task_name!r} has none (two programs "
                     f"are not 'the same answer' by string); --budgets supports math and arithmetic")


def answer_equiv(task_name):
    """How two final answers are grouped: reward.is_equiv for MATH, equal integers for arithmetic."""
    if task_name == "math":
        from reward import is_equiv
        return is_equiv
    return lambda a, b: a == b


def majority_vote(answers, equiv):
    """The most common answer, grouping answers that equiv() says are the same (None = no answer,
    not counted). Each group is named by its first member; a tie goes to the group seen first."""
    groups = []  # [representative, count]
    for a in answers:
        if a is None:
            continue
        for g in groups:
            if equiv(a, g[0]):
                g[1] += 1
                break
        else:
            groups.append([a, 1])
    return max(groups, key=lambda g: g[1])[0] if groups else None


def vote_is_correct(samples, equiv):
    """samples: [(answer, correct)]. The vote's answer scored as the task's reward scored the sample
    that carries it (its group's first member), so no second verifier is needed."""
    winner = majority_vote([a for a, _ in samples], equiv)
    return winner is not None and next(c for a, c in samples if a == winner)


def compute_budget_curve(parallel, sequential, budgets, equiv):
    """Majority-vote accuracy at equal generation budgets K (the paper's inference-time compute experiment).

    parallel:   per problem, >= K (answer, correct) pairs of independent attempt-1 samples
    sequential: per problem, >= K/2 episodes, each ((answer1, correct1), (answer2, correct2))
    For each K: parallel votes over the first K samples (K generations); sequential takes the first
    K/2 episodes (K/2 + K/2 = K generations) and votes over their K/2 final answers ("sequential"),
    or over all K of their answers ("sequential_all")."""
    n = len(parallel)
    single = sum(c for samples in parallel for _, c in samples) / sum(len(s) for s in parallel)
    curve = []
    for k in budgets:
        if k < 2 or k % 2 or any(len(p) < k for p in parallel) or any(len(s) < k // 2 for s in sequential):
            raise ValueError(f"budget {k}: need an even K >= 2 and K samples / K/2 episodes per problem")
        par = sum(vote_is_correct(p[:k], equiv) for p in parallel) / n
        seq = sum(vote_is_correct([e[1] for e in s[:k // 2]], equiv) for s in sequential) / n
        seq_all = sum(vote_is_correct([x for e in s[:k // 2] for x in e], equiv) for s in sequential) / n
        curve.append({"budget": k, "generations_parallel": k, "generations_sequential": 2 * (k // 2),
                      "parallel": par, "sequential": seq, "sequential_all": seq_all,
                      "gain_parallel": par - single, "gain_sequential": seq - single})
    return {"single_sample": single, "curve": curve}


# ----------------------------------------------------------------------------- the results table

def expand_paths(spec):
    """'a.json,out/eval/*.metrics.json' -> the files, globs expanded in sorted order."""
    paths = []
    for part in filter(None, (p.strip() for p in spec.split(","))):
        matches = sorted(glob.glob(part))
        if not matches:
            raise UsageError(f"--table: no file matches {part!r}")
        paths += matches
    return paths


def results_table(runs_read):
    """Several evaluated runs side by side in the paper's format, as Markdown. runs_read: (path, metrics)
    pairs (evaluate.read_run). Runs named NAME_seedN become one row, NAME, with the mean and the
    spread (min to max) over the seeds."""
    runs, notes = {}, []
    for path, m in runs_read:
        runs.setdefault(re.sub(r"_seed\d+$", "", m["name"]), []).append(m)
        extra = f", repair rate {100 * m['repair_rate']:.1f} %" if "repair_rate" in m else ""
        if "edit_ratio" in m:
            extra += f", y1 unchanged in {100 * m['edit_ratio']['unchanged']:.1f} %"
        if "wrong_t1" in m:
            (cut, cut_fixed), (done, done_fixed) = m["wrong_t1"]["cut_off"], m["wrong_t1"]["complete"]
            extra += (f", wrong attempt 1s fixed: {cut_fixed} of {cut} cut off by the token budget, "
                      f"{done_fixed} of {done} complete")
        task = f"{m['task']}, " if "task" in m else ""  # per-problem records do not name their task
        distinct = f" ({m['distinct']} distinct)" if m.get("distinct", m.get("n")) != m.get("n") else ""
        notes.append(f"- {m['name']}: {task}{m.get('n', '?')} problems{distinct}{extra} ({path})")
    # A lone seed keeps its own name, so a table of seed 0 alone does not pass for a mean.
    rows = [format_row(ms[0]["name"], ms[0]) if len(ms) == 1 else format_seed_row(name, ms)
            for name, ms in runs.items()]
    return "\n".join([TABLE_HEADER, *rows, "", *notes])


def format_seed_row(name, runs):
    """One row for several seeds: mean [min, max] of each metric, in percent."""
    cells = []
    for key in ("acc_t1", "acc_t2", "delta", "delta_i2c", "delta_c2i"):
        values = [100 * m[key] for m in runs]
        sign = "+" if key == "delta" else ""
        cells.append(f"{sum(values) / len(values):{sign}.1f} [{min(values):{sign}.1f}, {max(values):{sign}.1f}]")
    return f"| {name} ({len(runs)} seeds) | " + " | ".join(cells) + " |"


def training_summary(run_dirs, window=10):
    """What each run's training did, as Markdown, from its logs/stage{1,2}.jsonl: per stage the steps,
    the seconds spent sampling and updating (summed over the steps, so a resumed run counts once), and
    per attempt the sampled reward, the truncated fraction and the KL to the reference, each as the mean
    of the first `window` steps -> the mean of the last `window`."""
    def mean(records, key):
        return sum(r[key] for r in records) / len(records)

    def change(records, key):
        return f"{mean(records[:window], key):.3f} → {mean(records[-window:], key):.3f}"

    lines = ["| run | stage | steps | seconds | reward t1 | reward t2 | truncated t1 | truncated t2 | KL t1 | KL t2 |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for run_dir in run_dirs:
        for stage in ("stage1", "stage2"):
            path = os.path.join(run_dir, "logs", f"{stage}.jsonl")
            records = read_jsonl(path) if os.path.isfile(path) else []
            if not records:
                continue
            seconds = sum(r["rollout"] + r["update"] for r in records)
            cells = [change(records, f"{what}_t{t}") for what in ("reward", "truncated", "kl") for t in (1, 2)]
            lines.append(f"| {os.path.normpath(run_dir)} | {stage} | {len(records)} | {seconds:.0f} | "
                         + " | ".join(cells) + " |")
    return "\n".join(lines)


def run_labels(run_dirs):
    """Short, distinct names for run directories: each one's path below the folder they share
    (results/smol_cpu/seed0/alpha0 -> seed0/alpha0), so that two seeds' alpha0 runs keep apart."""
    paths = [os.path.normpath(d) for d in run_dirs]
    try:  # shared by the folders that hold the runs, so that no run is named "."
        common = os.path.commonpath([os.path.dirname(p) or "." for p in paths])
    except ValueError:  # absolute and relative paths mixed
        return paths
    return [os.path.relpath(p, common) for p in paths]


def plot_training_curves(run_dirs, image_path, smooth=10):
    """Reward per attempt over the steps of Stage I then Stage II, from the runs' logs/stage{1,2}.jsonl
    (a moving average over `smooth` steps): one colour per run, attempt 1 dashed, attempt 2 solid.
    Needs matplotlib."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    fig, ax = plt.subplots(figsize=(11, 4.5))
    drawn = set()  # an ablation's copy of its Stage I log is drawn once, under the run it came from
    for i, (run_dir, label) in enumerate(zip(run_dirs, run_labels(run_dirs))):
        stages = {}
        for stage in ("stage1", "stage2"):
            path = os.path.join(run_dir, "logs", f"{stage}.jsonl")
            stages[stage] = read_jsonl(path) if os.path.isfile(path) else []
        offset, labelled = (stages["stage1"][-1]["step"] if stages["stage1"] else 0), False
        if stages["stage2"] and offset:
            ax.axvline(offset, color="0.85", lw=0.8, zorder=0)  # where Stage II starts
        for stage, start in (("stage1", 0), ("stage2", offset)):
            key = json.dumps(stages[stage])
            if not stages[stage] or key in drawn:
                continue
            drawn.add(key)
            records = stages[stage]
            for t, style in ((1, "--"), (2, "-")):
                rewards = [r[f"reward_t{t}"] for r in records if f"reward_t{t}" in r]
                windows = [rewards[max(0, j - smooth + 1):j + 1] for j in range(len(rewards))]
                ys = [sum(w) / len(w) for w in windows]
                ax.plot([start + r["step"] for r in records][:len(ys)], ys, style, color=f"C{i % 10}",
                        label=None if labelled else f"{label} attempt {t}")
            labelled = True
    ax.set_xlabel("step (Stage I, then Stage II)")
    ax.set_ylabel(f"training reward (mean of {smooth} steps)")
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1))
    fig.tight_layout()
    fig.savefig(image_path)
    plt.close(fig)
    return image_path


def plot_results(runs_read, image_path):
    """Accuracy bars per run and the edit-distance histograms, if matplotlib is installed.
    runs_read: (path, metrics) pairs, as results_table takes them."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    runs = [m for _, m in runs_read]
    fig, (bars, hists) = plt.subplots(1, 2, figsize=(11, 4))
    keys = ["acc_t1", "acc_t2", "delta_i2c", "delta_c2i"]
    for j, key in enumerate(keys):
        bars.bar([i + 0.2 * j for i in range(len(runs))], [100 * r[key] for r in runs], width=0.2, label=key)
    bars.set_xticks([i + 0.3 for i in range(len(runs))], [r["name"] for r in runs])
    bars.set_ylabel("% of problems")
    bars.legend()
    for r in runs:
        if "edit_ratio" in r:
            h = r["edit_ratio"]
            hists.stairs([c / max(1, sum(h["counts"])) for c in h["counts"]], h["bins"], label=r["name"])
    hists.set_xlabel("edit-distance ratio, y1 -> y2")
    hists.set_ylabel("fraction of problems")
    hists.legend()
    fig.tight_layout()
    fig.savefig(image_path)
    return image_path
