"""The scripts as a user runs them: --preset tiny for a couple of steps, in subprocesses, and the
one-line errors for bad input."""

import json
import os
import subprocess
import sys

import pytest
import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run(script, *args, cwd=None):
    return subprocess.run([sys.executable, os.path.join(ROOT, script), *args], capture_output=True, text=True,
                          cwd=cwd, timeout=600, env={**os.environ, "TQDM_DISABLE": "1"})


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    out = str(tmp_path_factory.mktemp("tiny"))
    stage1 = run("stage1.py", "--preset", "tiny", "--steps", "2", "--out_dir", out)
    assert stage1.returncode == 0, stage1.stderr[-3000:]
    return out, stage1


def read_jsonl(path):
    with open(path) as f:
        return [json.loads(line) for line in f]


def test_stage1_writes_checkpoint_config_and_logs(tiny_run):
    out, result = tiny_run
    assert "step    2 | r1" in result.stdout
    config = json.load(open(os.path.join(out, "stage1", "score_config.json")))
    assert config["stage"] == 1 and config["beta2"] == 1.0 and config["task"] == "arithmetic"  # the tiny preset's beta2
    assert config["base_model"] == os.path.join(out, "base")  # the tiny base, saved as pi_ref
    log = read_jsonl(os.path.join(out, "logs", "stage1.jsonl"))
    assert [r["step"] for r in log] == [1, 2]
    assert {"reward_t1", "reward_t2", "delta", "delta_i2c", "delta_c2i", "kl_t1", "kl_t2", "truncated_t1",
            "truncated_t2", "sampled_tokens_per_s"} <= set(log[0])


def test_stage2_then_evaluate(tiny_run):
    out, _ = tiny_run
    stage2 = run("stage2.py", "--preset", "tiny", "--steps", "2", "--save_every", "1", "--out_dir", out)
    assert stage2.returncode == 0, stage2.stderr[-3000:]
    config = json.load(open(os.path.join(out, "stage2", "score_config.json")))
    assert config["stage"] == 2 and config["alpha"] == 10.0 and config["init"] == os.path.join(out, "stage1")
    assert config["base_model"] == os.path.join(out, "base")  # the reference is still the base model

    evaluation = run("evaluate.py", "--preset", "tiny", "--out_dir", out, "--limit", "12")
    assert evaluation.returncode == 0, evaluation.stderr[-3000:]
    assert "| method | Acc@t1 | Acc@t2 |" in evaluation.stdout and "| stage2 |" in evaluation.stdout
    rows = read_jsonl(os.path.join(out, "eval", "stage2.jsonl"))
    assert len(rows) == 12 and {"id", "y1", "y2", "correct_t1", "correct_t2"} <= set(rows[0])
    metrics = json.load(open(os.path.join(out, "eval", "stage2.metrics.json")))
    assert metrics["acc_t1"] == sum(r["correct_t1"] for r in rows) / 12
    assert metrics["delta"] == pytest.approx(metrics["delta_i2c"] - metrics["delta_c2i"])


def one_line_error(result):
    assert result.returncode != 0
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr[-2000:]
    return lines[0]


def test_stage2_without_stage1_says_what_to_run(tmp_path):
    assert "run stage1.py first" in one_line_error(run("stage2.py", "--preset", "tiny", "--out_dir", str(tmp_path)))


def test_evaluate_without_checkpoint_says_what_to_run(tmp_path):
    assert "run stage2.py first" in one_line_error(run("evaluate.py", "--preset", "tiny", "--out_dir", str(tmp_path)))


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message shown on machines without a GPU")
def test_default_run_without_gpu_points_at_the_cpu_preset(tmp_path):
    line = one_line_error(run("stage1.py", "--out_dir", str(tmp_path)))
    assert "no CUDA device" in line and "--preset tiny" in line


def test_malformed_data_line_is_named(tmp_path):
    data = tmp_path / "train.jsonl"
    data.write_text('{"problem": "1+1?", "answer": "2"}\n{"problem": oops}\n')
    line = one_line_error(run("stage1.py", "--model", "tiny", "--task", "math", "--train_data", str(data),
                              "--device", "cpu", "--out_dir", str(tmp_path)))
    assert f"{data}:2: not a JSON object" in line


def test_data_row_missing_a_field_is_named(tmp_path):
    data = tmp_path / "train.jsonl"
    data.write_text('{"problem": "1+1?"}\n')
    assert "needs 'problem' and 'answer'" in one_line_error(
        run("stage1.py", "--model", "tiny", "--task", "math", "--train_data", str(data), "--device", "cpu",
            "--out_dir", str(tmp_path)))


def test_unknown_model_is_named(tmp_path):
    line = one_line_error(run("stage1.py", "--preset", "tiny", "--model", "no such model", "--out_dir", str(tmp_path)))
    assert "'no such model' is neither a local folder" in line


@pytest.mark.parametrize("script", ["stage1.py", "stage2.py", "evaluate.py"])
def test_help_lists_every_setting_with_its_doc(script):
    result = run(script, "--help")
    assert result.returncode == 0, result.stderr[-2000:]
    assert "--preset {" in result.stdout and "tiny" in result.stdout and "(default:" in result.stdout


def test_single_turn_ablation_trains_attempt_1_only(tiny_run):
    out, _ = tiny_run
    result = run("stage2.py", "--preset", "tiny", "--steps", "2", "--save_every", "1", "--single_turn", "true",
                 "--out_dir", out)
    assert result.returncode == 0, result.stderr[-3000:]
    log = read_jsonl(os.path.join(out, "logs", "stage2.jsonl"))[-2:]
    assert "reward_t1" in log[0] and "reward_t2" not in log[0] and "kl_t2" not in log[0]
    assert json.load(open(os.path.join(out, "stage2", "score_config.json")))["single_turn"] is True
