"""evaluate.py: its metrics and analyses on recorded results and known strings (no model needed),
given first attempts (--repair) on the tiny model, and each switch end to end on the tiny preset."""

import json
import os
import random
import subprocess
import sys

import pytest
import torch

from support.analysis import (compute_budget_curve, edit_distance, edit_distance_ratio, majority_vote, ratio_histogram,
                      plot_training_curves, results_table, run_labels,
                      training_summary)
from evaluate import read_run, self_correction_metrics, turn_flows
from reward import is_equiv
from support.settings import UsageError


def test_table2_metrics_and_identity():
    t1 = [True, True, False, False, True]
    t2 = [True, False, True, True, True]
    m = self_correction_metrics(t1, t2)
    assert m == pytest.approx({"acc_t1": 0.6, "acc_t2": 0.8, "delta": 0.2, "delta_i2c": 0.4, "delta_c2i": 0.2})
    assert m["delta"] == pytest.approx(m["delta_i2c"] - m["delta_c2i"])


def test_n_turn_flows_sum_to_the_accuracy_change():
    rng = random.Random(0)
    correct = [[rng.random() < 0.5 for _ in range(50)] for _ in range(5)]  # [turn][problem]
    flows = turn_flows(correct)
    assert [f["turn"] for f in flows] == [1, 2, 3, 4, 5]
    assert sum(f["delta"] for f in flows[1:]) == pytest.approx(flows[-1]["acc"] - flows[0]["acc"])
    for f in flows[1:]:
        assert f["delta"] == pytest.approx(f["delta_i2c"] - f["delta_c2i"])


@pytest.mark.parametrize("a, b, distance", [("", "", 0), ("abc", "abc", 0), ("abc", "", 3), ("kitten", "sitting", 5),
                                            ("abc", "abd", 2), ("ab", "ba", 2), ("x" * 100, "y" * 100, 200)])
def test_edit_distance_on_known_strings(a, b, distance):
    # insert/delete distance: a substitution costs 2 (delete + insert), see analysis.edit_distance
    assert edit_distance(a, b) == edit_distance(b, a) == distance


def test_edit_distance_matches_the_naive_table_on_random_strings():
    rng = random.Random(1)
    for _ in range(200):
        a = "".join(rng.choice("abc") for _ in range(rng.randint(0, 30)))
        b = "".join(rng.choice("abc") for _ in range(rng.randint(0, 30)))
        table = [[i + j if i == 0 or j == 0 else 0 for j in range(len(b) + 1)] for i in range(len(a) + 1)]
        for i in range(1, len(a) + 1):
            for j in range(1, len(b) + 1):
                table[i][j] = table[i - 1][j - 1] if a[i - 1] == b[j - 1] else 1 + min(table[i - 1][j], table[i][j - 1])
        assert edit_distance(a, b) == table[-1][-1]


def test_edit_distance_ratio_and_histogram():
    assert edit_distance_ratio("same", "same") == 0.0
    assert edit_distance_ratio("abcd", "wxyz") == 1.0
    assert edit_distance_ratio("abcd", "abce") == pytest.approx(2 / 8)
    hist = ratio_histogram([0.0, 0.0, 0.25, 1.0])
    assert hist["counts"][0] == 2 and hist["counts"][2] == 1 and hist["counts"][-1] == 1
    assert hist["unchanged"] == 0.5 and hist["mean"] == pytest.approx(1.25 / 4)


def test_majority_vote_groups_equivalent_answers():
    assert majority_vote(["\\frac{1}{2}", "0.5", "3", "3", "1/2"], is_equiv) == "\\frac{1}{2}"  # 3 of 5
    assert majority_vote(["7", None, None, "8", "8"], lambda a, b: a == b) == "8"  # None is no vote
    assert majority_vote([None, None], lambda a, b: a == b) is None
    assert majority_vote(["1", "2"], lambda a, b: a == b) == "1"  # a tie goes to the first seen


def test_budget_accounting_and_votes():
    same = lambda a, b: a == b
    # One problem, gold "5". Parallel: 8 samples; sequential: 4 episodes of (attempt 1, attempt 2).
    parallel = [[("5", True), ("4", False), ("4", False), ("5", True), ("5", True), ("4", False), ("4", False),
                 ("4", False)]]
    sequential = [[(("4", False), ("5", True)), (("4", False), ("5", True)), (("4", False), ("4", False)),
                   (("5", True), ("5", True))]]
    result = compute_budget_curve(parallel, sequential, [2, 4, 8], same)
    assert result["single_sample"] == pytest.approx(3 / 8)
    for c in result["curve"]:
        k = c["budget"]
        assert c["generations_parallel"] == k and c["generations_sequential"] == k  # K/2 + K/2 = K
    by_k = {c["budget"]: c for c in result["curve"]}
    assert by_k[2]["parallel"] == 1.0  # votes "5", "4": the tie goes to the first, "5"
    assert by_k[4]["parallel"] == 1.0  # "5", "4", "4", "5": a 2-2 tie, "5" was seen first
    assert by_k[8]["parallel"] == 0.0  # "4" 5 times beats "5" 3 times
    assert by_k[8]["sequential"] == 1.0  # final answers "5", "5", "4", "5"
    with pytest.raises(ValueError):
        compute_budget_curve(parallel, sequential, [3], same)  # an odd budget can't be split in two


def test_results_table_in_the_papers_format(tmp_path):
    paths = []
    for name, a1, a2 in [("base", 0.5, 0.4), ("score", 0.6, 0.7)]:
        m = self_correction_metrics([i < 10 * a1 for i in range(10)], [i < 10 * a2 for i in range(10)])
        path = tmp_path / f"{name}.metrics.json"
        path.write_text(json.dumps({"name": name, "task": "math", "n": 10, **m}))
        paths.append(str(path))
    # Per-problem records (what results/ keeps) give the same row as the metrics file; seeds are one row.
    for seed, a1 in [(0, 0.4), (1, 0.6)]:
        path = tmp_path / f"stage1_seed{seed}.jsonl"
        path.write_text("".join(json.dumps({"id": i, "correct_t1": i < 10 * a1, "correct_t2": i < 7, "y1": "",
                                            "y2": "", "edit_ratio": 0.0, "truncated_t1": i % 2 == 0}) + "\n"
                                for i in range(10)))
        paths.append(str(path))
    table = results_table([(p, read_run(p)) for p in paths])
    assert table.splitlines()[0] == "| method | Acc@t1 | Acc@t2 | delta | delta i->c | delta c->i |"
    assert "| base | 50.0 | 40.0 | -10.0 | 0.0 | 10.0 |" in table
    assert "| score | 60.0 | 70.0 | +10.0 | 10.0 | 0.0 |" in table
    assert "| stage1 (2 seeds) | 50.0 [40.0, 60.0] | 70.0 [70.0, 70.0] | +20.0 [+10.0, +30.0] |" in table
    # Seed 0's wrong attempt 1s are 4-9: the cut-off ones (4, 6, 8) fixed at 4 and 6, the complete (5, 7, 9) at 5.
    assert "wrong attempt 1s fixed: 2 of 3 cut off by the token budget, 1 of 3 complete" in table
    assert "- stage1_seed0: 10 problems, y1 unchanged" in table  # all distinct: no count of distinct ones
    (tmp_path / "repeats.jsonl").write_text("".join(json.dumps({"id": i % 3, "correct_t1": True, "correct_t2": True})
                                                    + "\n" for i in range(6)))
    assert "6 problems (3 distinct)" in results_table([(p, read_run(p)) for p in [str(tmp_path / "repeats.jsonl")]])
    # A lone seed keeps its name: one seed is not a mean over seeds.
    alone = [(p, read_run(p)) for p in paths[:3]]
    assert "| stage1_seed0 | 40.0 | 70.0 | +30.0 | 30.0 | 0.0 |" in results_table(alone)
    with pytest.raises(UsageError, match="no two-attempt records"):
        (tmp_path / "empty.jsonl").write_text("")
        read_run(str(tmp_path / "empty.jsonl"))


def test_training_summary_first_and_last_steps_from_the_logs(tmp_path):
    logs = tmp_path / "run" / "logs"
    logs.mkdir(parents=True)
    steps = [{"step": s, "reward_t1": 0.1, "reward_t2": s / 10, "truncated_t1": 0.5, "truncated_t2": 0.0,
              "kl_t1": 0.0, "kl_t2": float(s), "rollout": 1.0, "update": 2.0} for s in range(1, 7)]
    (logs / "stage1.jsonl").write_text("".join(json.dumps(r) + "\n" for r in steps))
    rows = training_summary([str(tmp_path / "run"), str(tmp_path / "no_logs")], window=2).splitlines()
    assert len(rows) == 3  # header, rule, and stage1 of the one run with logs
    cells = [c.strip() for c in rows[2].split("|")[2:-1]]
    # stage, steps, seconds (6 x (1 + 2)), rewards t1/t2, truncated t1/t2, KL t1/t2: steps 1-2 -> steps 5-6
    assert cells == ["stage1", "6", "18", "0.100 → 0.100", "0.150 → 0.550", "0.500 → 0.500", "0.000 → 0.000",
                     "0.000 → 0.000", "1.500 → 5.500"]


def test_run_labels_keep_two_seeds_alpha0_runs_apart():
    dirs = ["results/smol_cpu/seed0", "results/smol_cpu/seed0/alpha0", "results/smol_cpu/seed1/alpha0/"]
    assert run_labels(dirs) == ["seed0", "seed0/alpha0", "seed1/alpha0"]
    assert run_labels(["results/smol_cpu/seed0"]) == ["seed0"]
    assert run_labels(["run"]) == ["run"]
    assert run_labels(["out/seed0", "out/seed0/alpha0"]) == ["seed0", "seed0/alpha0"]


def test_training_curves_plot_an_ablations_copied_stage1_once(tmp_path, monkeypatch):
    pyplot = pytest.importorskip("matplotlib.pyplot")
    import matplotlib.axes
    log = lambda reward_t2: "".join(json.dumps({"step": s, "reward_t1": 0.1, "reward_t2": reward_t2 * s}) + "\n"
                                    for s in range(1, 4))
    for run, stage2_reward in (("seed0", 0.1), ("seed0/alpha0", 0.2)):
        (tmp_path / run / "logs").mkdir(parents=True)
        (tmp_path / run / "logs" / "stage1.jsonl").write_text(log(0.3))  # alpha0's is a copy of seed0's
        (tmp_path / run / "logs" / "stage2.jsonl").write_text(log(stage2_reward))
    drawn, plot = [], matplotlib.axes.Axes.plot

    def recording_plot(ax, xs, ys, *args, **kwargs):
        drawn.append((list(xs), kwargs.get("label")))
        return plot(ax, xs, ys, *args, **kwargs)
    monkeypatch.setattr(matplotlib.axes.Axes, "plot", recording_plot)
    before = len(pyplot.get_fignums())
    image = plot_training_curves([str(tmp_path / "seed0"), str(tmp_path / "seed0" / "alpha0")], str(tmp_path / "c.png"))
    assert open(image, "rb").read(8) == b"\x89PNG\r\n\x1a\n"
    assert len(pyplot.get_fignums()) == before  # the figure is closed, not leaked
    # seed0's Stage I and Stage II (after step 3), then alpha0's Stage II alone, each attempt once
    assert drawn == [([1, 2, 3], "seed0 attempt 1"), ([1, 2, 3], "seed0 attempt 2"), ([4, 5, 6], None), ([4, 5, 6], None),
                     ([4, 5, 6], "seed0/alpha0 attempt 1"), ([4, 5, 6], "seed0/alpha0 attempt 2")]


def test_given_first_attempts_replace_sampling():
    from rollout import run_episodes
    from support.tasks import get_task, load_problems
    from support.tiny import build_tiny_model
    model, tokenizer = build_tiny_model(seed=0)
    problems = load_problems("arithmetic", "test", limit=3, max_operand=4)
    given = ["17", "I think 3", "0"]
    eps = run_episodes(model, tokenizer, get_task("arithmetic"), problems, samples_per_problem=1, temperature=0.0,
                       max_new_tokens=4, first_attempts=given)
    assert eps.responses[0] == given
    for i in range(3):
        assert tokenizer.decode(eps.input_ids[i][eps.action_masks[0, i]], skip_special_tokens=True) == given[i]
    expected = torch.tensor([float(str(int(p.answer)) in g.split()[-1:]) for p, g in zip(problems, given)])
    assert eps.rewards[0].tolist() == expected.tolist()


# ----------------------------------------------------------------------------- the switches, end to end

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run(script, *args):
    return subprocess.run([sys.executable, os.path.join(ROOT, script), *args], capture_output=True, text=True,
                          timeout=600, env={**os.environ, "TQDM_DISABLE": "1", "OMP_NUM_THREADS": "1"})


def read_jsonl(path):
    with open(path) as f:
        return [json.loads(line) for line in f]


def test_turns_budgets_repair_and_table_on_the_tiny_model(tmp_path):
    out = str(tmp_path)
    stage1 = run("stage1.py", "--preset", "tiny", "--steps", "1", "--out_dir", out)
    assert stage1.returncode == 0, stage1.stderr[-3000:]
    tiny = ["--preset", "tiny", "--out_dir", out, "--model", os.path.join(out, "stage1"), "--limit", "10"]

    # --turns 3: three attempts per problem, Table 2 from the first two, the flows of all three.
    result = run("evaluate.py", *tiny, "--turns", "3")
    assert result.returncode == 0, result.stderr[-3000:]
    assert "| attempt | Acc | delta vs previous |" in result.stdout and "edit-distance ratio" in result.stdout
    rows = read_jsonl(os.path.join(out, "eval", "stage1.jsonl"))
    assert len(rows) == 10 and {"y3", "correct_t3", "edit_ratio"} <= set(rows[0])
    metrics = json.load(open(os.path.join(out, "eval", "stage1.metrics.json")))
    assert [f["turn"] for f in metrics["turns"]] == [1, 2, 3]
    assert metrics["turns"][2]["acc"] == sum(r["correct_t3"] for r in rows) / 10
    assert sum(metrics["edit_ratio"]["counts"]) == 10

    # --repair: the recorded wrong attempt 1s come back verbatim as attempt 1; only attempt 2 is new.
    wrong = [r for r in rows if not r["correct_t1"]]
    result = run("evaluate.py", *tiny, "--repair", os.path.join(out, "eval", "stage1.jsonl"))
    if not wrong:
        assert "no wrong attempt 1" in result.stderr
    else:
        assert result.returncode == 0, result.stderr[-3000:]
        repaired = read_jsonl(os.path.join(out, "eval", "stage1_repair.jsonl"))
        assert [r["y1"] for r in repaired] == [r["y1"] for r in wrong] and not any(r["correct_t1"] for r in repaired)
        m = json.load(open(os.path.join(out, "eval", "stage1_repair.metrics.json")))
        assert m["repair_rate"] == sum(r["correct_t2"] for r in repaired) / len(repaired)

    # --budgets: K parallel samples vs K/2 two-attempt episodes, both K generations per problem.
    result = run("evaluate.py", *tiny, "--budgets", "2,4")
    assert result.returncode == 0, result.stderr[-3000:]
    budgets = json.load(open(os.path.join(out, "eval", "stage1.budgets.json")))
    assert budgets["generations_per_problem"] == {"parallel": 4, "sequential": 4}
    assert [c["budget"] for c in budgets["curve"]] == [2, 4]
    assert "error: --budgets needs even numbers" in run("evaluate.py", *tiny, "--budgets", "3").stderr
    assert "--budgets supports math and arithmetic" in run("evaluate.py", *tiny, "--task", "code", "--budgets", "2").stderr

    # --table: no model, the runs above side by side.
    result = run("evaluate.py", "--out_dir", out, "--table", os.path.join(out, "eval", "*.metrics.json"))
    assert result.returncode == 0, result.stderr[-3000:]
    assert "| stage1 |" in result.stdout and os.path.isfile(os.path.join(out, "eval", "results.md"))


def test_evaluation_loads_and_decodes_the_float32_weights(tmp_path, monkeypatch):
    """Trained changes (~1e-4 a weight) are below bf16's resolution, so a bf16 evaluation mostly measures the
    base model. On a GPU evaluate.py loaded checkpoints as bf16, and the sampler's default there decodes a
    bf16 copy; emulated here on the CPU (the sampler's default made bf16): evaluation must still load the
    checkpoint in float32 and decode with those weights."""
    import support.sampler
    import evaluate
    from support.checkpoints import save_checkpoint
    from support.tiny import build_tiny_model
    model, tokenizer = build_tiny_model(seed=0)
    path = str(tmp_path / "ckpt")
    save_checkpoint(model, tokenizer, {"stage": "base"}, path)
    loaded, decoded = [], []
    real_init, real_load = support.sampler.Sampler.__init__, evaluate.load_model

    def gpu_default_init(self, model, *, dtype=None, **kwargs):  # a GPU's default: decode a bf16 copy
        real_init(self, model, dtype=torch.bfloat16 if dtype is None else dtype, **kwargs)
        decoded.append(next(self.model.parameters()).dtype)

    def load_on_cpu(name, device, dtype, trainable=True):
        loaded.append((torch.device(device).type, dtype))
        return real_load(name, "cpu", dtype, trainable)

    monkeypatch.setattr(support.sampler.Sampler, "__init__", gpu_default_init)
    monkeypatch.setattr(evaluate, "load_model", load_on_cpu)
    cfg = evaluate.Config(model=path, task="arithmetic", max_operand=4, limit=2, max_new_tokens=2, device="cuda",
                          out_dir=str(tmp_path))
    metrics = evaluate.evaluate_model(cfg, quiet=True)
    assert loaded == [("cuda", torch.float32)]
    assert decoded and set(decoded) == {torch.float32}
    assert 0 <= metrics["acc_t1"] <= 1
