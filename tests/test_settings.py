"""Settings a user can set: 0 is a value (not "the default") for lr and beta2, any CUDA device string
picks bf16 evaluation, a wrong --model fails before any data is fetched, and the single-turn ablation
starts from the base model."""

import json
import os

import pytest
import torch

import evaluate
import stage1
import stage2
from support import tasks
from support.settings import UsageError, check_config, parse_config, presets


def test_zero_is_a_setting_and_unset_is_table5():
    cfg = parse_config(stage1.Config, presets("stage1"), ["--beta2", "0", "--lr", "0", "--device", "cpu"])
    check_config(cfg)
    assert cfg.beta2 == 0.0 and cfg.lr == 0.0  # a Stage I without KL on attempt 1 can be run
    cfg = parse_config(stage1.Config, presets("stage1"), ["--device", "cpu", "--task", "code"])
    check_config(cfg)
    assert (cfg.lr, cfg.beta2) == (1e-5, 0.25)  # Table 5's MBPP column
    cfg = parse_config(stage2.Config, presets("stage2"), ["--lr", "0", "--device", "cpu", "--task", "math"])
    check_config(cfg)
    assert cfg.lr == 0.0


def test_any_cuda_device_string_evaluates_the_float32_weights(monkeypatch, tmp_path):
    """cuda:N is a CUDA device, and evaluation loads the checkpoint's float32 weights on it (in bf16,
    most of a run's small trained changes would round back to the base model's weights)."""
    seen = {}

    def fake_load_model(path, device, dtype, trainable):
        seen["device"], seen["dtype"] = device, dtype
        raise RuntimeError("stop here")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(evaluate, "load_tokenizer", lambda path: None)
    monkeypatch.setattr(evaluate, "load_model", fake_load_model)
    cfg = evaluate.Config(model=str(tmp_path), device="cuda:0", task="arithmetic", out_dir=str(tmp_path))
    with pytest.raises(RuntimeError, match="stop here"):
        evaluate.main(cfg)
    assert seen["dtype"] == torch.float32 and str(seen["device"]) == "cuda:0"


def test_a_wrong_model_fails_before_the_data_is_fetched(monkeypatch, tmp_path):
    def no_download(*args):
        raise AssertionError("the training data was fetched before the model was checked")
    monkeypatch.setattr(tasks, "download", no_download)
    cfg = stage1.Config(model="foo", task="math", device="cpu", out_dir=str(tmp_path))
    with pytest.raises(UsageError, match="'foo' is neither a local folder"):
        stage1.main(cfg)


def test_single_turn_ablation_starts_from_the_base_model(tmp_path):
    from support.checkpoints import save_checkpoint
    from support.tiny import build_tiny_model
    base = str(tmp_path / "base")
    net, tokenizer = build_tiny_model(seed=0, hidden_size=32)
    save_checkpoint(net, tokenizer, {"stage": "base"}, base)
    small = dict(problems_per_step=2, samples_per_problem=2, micro_batch=4, max_new_tokens=2, device="cpu",
                 gradient_checkpointing=False, out_dir=str(tmp_path), steps=1)
    stage1.main(stage1.Config(model=base, task="arithmetic", max_operand=4, lr=1e-3, **small))
    stage2.main(stage2.Config(single_turn=True, **small))
    config = json.load(open(os.path.join(tmp_path, "stage2", "score_config.json")))
    assert config["init"] == base and config["single_turn"]
    stage2.main(stage2.Config(**small))  # SCoRe's Stage II still starts from Stage I
    config = json.load(open(os.path.join(tmp_path, "stage2", "score_config.json")))
    assert config["init"] == os.path.join(str(tmp_path), "stage1")
