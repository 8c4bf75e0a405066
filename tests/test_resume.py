"""--resume true: a run that dies loses little. A run interrupted after a checkpoint and resumed ends
with exactly the weights of an uninterrupted run (same seed, deterministic CPU), logs each step once,
and a crash in the middle of a save leaves a checkpoint that still resumes."""

import json
import os

import pytest
import torch
from safetensors.torch import load_file

import stage1
import stage2
from support.checkpoints import read_run_config, save_checkpoint
from support.settings import UsageError
from support.tiny import build_tiny_model


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    """A tiny base model saved once, so each run below skips the tiny preset's warm-up."""
    path = str(tmp_path_factory.mktemp("base") / "base")
    net, tokenizer = build_tiny_model(seed=0, hidden_size=32)
    save_checkpoint(net, tokenizer, {"stage": "base"}, path)
    return path


def stage1_config(base, out, **overrides):
    settings = dict(model=base, task="arithmetic", max_operand=4, out_dir=out, steps=4, save_every=2,
                    problems_per_step=4, samples_per_problem=2, micro_batch=8, lr=1e-3, beta2=1.0,
                    max_new_tokens=3, gradient_checkpointing=False, device="cpu", sample_every=1)
    return stage1.Config(**{**settings, **overrides})


def crash_at(module, monkeypatch, step):
    """Make `module.log_step` raise right after it has logged `step`: the run dies between checkpoints."""
    real = module.log_step

    def log_then_maybe_crash(step_now, *args, **kwargs):
        real(step_now, *args, **kwargs)
        if step_now == step:
            raise RuntimeError("simulated crash")
    monkeypatch.setattr(module, "log_step", log_then_maybe_crash)


def weights(path):
    return load_file(os.path.join(path, "model.safetensors"))


def logged_steps(path):
    with open(path) as f:
        return [json.loads(line)["step"] for line in f]


def test_stage1_resume_matches_an_uninterrupted_run(base, tmp_path, monkeypatch):
    whole, broken = str(tmp_path / "whole"), str(tmp_path / "broken")
    stage1.main(stage1_config(base, whole))

    with monkeypatch.context() as m:
        crash_at(stage1, m, step=3)  # after the step-2 checkpoint, with step 3 already logged
        with pytest.raises(RuntimeError, match="simulated crash"):
            stage1.main(stage1_config(base, broken))
    assert logged_steps(os.path.join(broken, "logs", "stage1.jsonl")) == [1, 2, 3]
    stage1.main(stage1_config(base, broken, resume=True))

    a, b = weights(os.path.join(whole, "stage1")), weights(os.path.join(broken, "stage1"))
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert logged_steps(os.path.join(broken, "logs", "stage1.jsonl")) == [1, 2, 3, 4]  # step 3 once
    assert logged_steps(os.path.join(broken, "logs", "stage1.jsonl")) == \
        logged_steps(os.path.join(whole, "logs", "stage1.jsonl"))
    # The resumed run changed nothing about what the checkpoint says it is.
    config = json.load(open(os.path.join(broken, "stage1", "score_config.json")))
    assert config["base_model"] == base and config["step"] == 4


def test_a_crash_during_a_save_leaves_a_resumable_checkpoint(base, tmp_path, monkeypatch):
    out = str(tmp_path / "run")
    stage1.main(stage1_config(base, out, steps=2))
    before = weights(os.path.join(out, "stage1"))

    real_save = torch.save
    def save_then_die(obj, f, *args, **kwargs):  # the weights are written; the process dies mid-state
        real_save(obj, f, *args, **kwargs)
        raise KeyboardInterrupt("killed during save")
    with monkeypatch.context() as m:
        m.setattr(torch, "save", save_then_die)
        with pytest.raises(KeyboardInterrupt):
            stage1.main(stage1_config(base, out, steps=4, resume=True))
    # The half-written save sits in stage1.tmp; stage1 itself is still the step-2 checkpoint.
    assert os.path.isdir(os.path.join(out, "stage1.tmp"))
    assert all(torch.equal(before[k], v) for k, v in weights(os.path.join(out, "stage1")).items())
    stage1.main(stage1_config(base, out, steps=4, resume=True))
    assert read_run_config(os.path.join(out, "stage1"))["step"] == 4
    assert logged_steps(os.path.join(out, "logs", "stage1.jsonl")) == [1, 2, 3, 4]


def test_stage2_resume_restores_weights_and_the_best_checkpoint_window(base, tmp_path, monkeypatch):
    runs = {}
    for name in ("whole", "broken"):
        out = str(tmp_path / name)
        stage1.main(stage1_config(base, out, steps=1))
        runs[name] = out
    settings = dict(steps=5, save_every=2, problems_per_step=4, samples_per_problem=2, micro_batch=8, lr=1e-3,
                    max_new_tokens=3, gradient_checkpointing=False, device="cpu", sample_every=1)
    stage2.main(stage2.Config(out_dir=runs["whole"], **settings))
    with monkeypatch.context() as m:
        crash_at(stage2, m, step=3)
        with pytest.raises(RuntimeError):
            stage2.main(stage2.Config(out_dir=runs["broken"], **settings))
    stage2.main(stage2.Config(out_dir=runs["broken"], resume=True, **settings))

    for folder in ("stage2_last", "stage2"):
        a, b = weights(os.path.join(runs["whole"], folder)), weights(os.path.join(runs["broken"], folder))
        assert all(torch.equal(a[k], b[k]) for k in a), folder
    best = [read_run_config(os.path.join(runs[n], "stage2"))["train_reward"] for n in runs]
    assert best[0] == best[1]
    assert logged_steps(os.path.join(runs["broken"], "logs", "stage2.jsonl")) == [1, 2, 3, 4, 5]


def test_resume_without_a_checkpoint_is_a_one_line_error(base, tmp_path):
    with pytest.raises(UsageError, match="nothing to resume"):
        stage1.main(stage1_config(base, str(tmp_path / "empty"), resume=True))
