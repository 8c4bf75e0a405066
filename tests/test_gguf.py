"""A real small instruct model: SmolLM2-135M-Instruct as GGUF, when ../shared/models has it (a
fresh clone does not: then these tests are skipped). Checks the loading path for .gguf files, the
chat glue on a real template, our log-probs against the model's own loss, and one Stage I step."""

import glob
import json
import os
import shutil
import subprocess
import sys

import pytest
import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PARTS = sorted(glob.glob(os.path.join(ROOT, "..", "shared", "models", "SmolLM2-135M-Instruct.Q4_1.gguf.part*")))
pytestmark = [pytest.mark.slow, pytest.mark.skipif(not PARTS, reason="../shared/models has no SmolLM2 GGUF")]


@pytest.fixture(scope="module")
def gguf_path(tmp_path_factory):
    path = tmp_path_factory.mktemp("smollm2") / "SmolLM2-135M-Instruct.Q4_1.gguf"
    with open(path, "wb") as joined:
        for part in PARTS:
            with open(part, "rb") as f:
                shutil.copyfileobj(f, joined)
    return str(path)


def test_gguf_logprobs_glue_and_sampling(gguf_path):
    from model import load_model, load_tokenizer, token_logprobs
    from support.chat_template import chat_prompt_ids, end_of_turn_ids, turn_glue_ids
    from support.sampler import Sampler
    tokenizer, model = load_tokenizer(gguf_path), load_model(gguf_path, "cpu", trainable=False)
    end_ids = end_of_turn_ids(model, tokenizer)
    assert tokenizer.convert_tokens_to_ids("<|im_end|>") in end_ids

    # Glue: prompt + y1 + <|im_end|> + glue is what the chat template renders for the whole chat.
    prompt = chat_prompt_ids(tokenizer, "What is 2 + 3?")
    y1 = tokenizer("6", add_special_tokens=False).input_ids + [tokenizer.convert_tokens_to_ids("<|im_end|>")]
    glue = turn_glue_ids(tokenizer, end_ids, "Check it.")
    rendered = tokenizer.apply_chat_template(
        [{"role": "user", "content": "What is 2 + 3?"}, {"role": "assistant", "content": "6"},
         {"role": "user", "content": "Check it."}], tokenize=False, add_generation_prompt=True)
    assert prompt + y1 + glue == tokenizer(rendered, add_special_tokens=False).input_ids

    ids = torch.tensor([prompt + y1 + glue])
    with torch.no_grad():
        ours = -token_logprobs(model, ids, torch.ones_like(ids), chunk_tokens=16).mean()
        theirs = model(input_ids=ids, labels=ids).loss
    torch.testing.assert_close(ours, theirs, rtol=1e-4, atol=1e-4)

    answers, truncated, _ = Sampler(model).sample([prompt], max_new_tokens=8, temperature=0, end_ids=end_ids,
                                                  pad_id=tokenizer.pad_token_id)
    assert "5" in tokenizer.decode(answers[0])  # the real model can add


def run(script, *args):
    return subprocess.run([sys.executable, os.path.join(ROOT, script), *args], capture_output=True, text=True,
                          timeout=900, env={**os.environ, "TQDM_DISABLE": "1"})


def test_smol_preset_wiring_on_the_gguf_model(gguf_path, tmp_path):
    """--preset smol end to end, one step a stage on the CPU: the real model, the preset's settings, the
    arithmetic mix, and the base / Stage I / Stage II table."""
    out, small = str(tmp_path), ["--device", "cpu", "--steps", "1", "--problems_per_step", "2", "--micro_batch", "8"]
    result = run("stage1.py", "--preset", "smol", "--model", gguf_path, "--out_dir", out, *small)
    assert result.returncode == 0, result.stderr[-3000:]
    config = json.load(open(os.path.join(out, "stage1", "score_config.json")))
    assert config["mix"] == "+:99:99,*:9:9" and config["lr"] == 1e-5 and config["beta2"] == 0.1
    assert config["base_model"] == gguf_path
    result = run("stage2.py", "--preset", "smol", "--out_dir", out, *small)
    assert result.returncode == 0, result.stderr[-3000:]
    result = run("evaluate.py", "--preset", "smol", "--out_dir", out, "--device", "cpu", "--limit", "6",
                 "--compare", "base,stage1,stage2")
    assert result.returncode == 0, result.stderr[-3000:]
    rows = [line for line in result.stdout.splitlines() if line.startswith(("| base", "| stage1", "| stage2"))]
    assert len(rows) == 3, result.stdout
    with open(os.path.join(out, "eval", "base.jsonl")) as f:
        questions = [json.loads(line)["id"] for line in f]
    assert len(questions) == 6 and any("*" in q for q in questions) and any("+" in q for q in questions)


LEARN_STEPS, LEARN_WINDOW = 12, 4  # about 15 minutes on 2 CPU cores


def test_a_real_model_learns_on_attempt_2_while_attempt_1_stays(gguf_path, tmp_path):
    """SmolLM2-135M-Instruct, the first 12 steps of --preset smol_cpu's Stage I (32 episodes a step),
    first LEARN_WINDOW steps against the last. The base model rambles on after its answer, and a
    cut-off answer usually scores 0 (its last number is not the answer). Only attempt 2 is rewarded
    (Eq. 3), so only attempt 2 learns to stop: its truncation rate falls, while attempt 1, held by
    beta2, keeps the base model's habit and stays far closer to pi_ref. (On this CPU the run's sampled
    reward itself is still flat at step 12: 0.26 -> 0.24 for attempt 2; the README has the longer run.)
    The seed is fixed, so on one machine the run repeats itself."""
    out = str(tmp_path)
    result = run("stage1.py", "--preset", "smol_cpu", "--model", gguf_path, "--out_dir", out,
                 "--steps", str(LEARN_STEPS), "--save_every", str(LEARN_STEPS),
                 # the fp32 numerics and one micro-batch of 32 these margins (and the committed runs) were measured in
                 "--bf16", "false", "--micro_batch", "32")
    assert result.returncode == 0, result.stderr[-3000:]
    rows = [json.loads(line) for line in open(os.path.join(out, "logs", "stage1.jsonl"))]
    mean = lambda part, key: sum(r[key] for r in part) / len(part)
    first, last = rows[:LEARN_WINDOW], rows[-LEARN_WINDOW:]
    print({k: (round(mean(first, k), 3), round(mean(last, k), 3))
           for k in ("reward_t1", "reward_t2", "truncated_t1", "truncated_t2", "kl_t1", "kl_t2")})
    # measured on the 2-core CPU: truncated_t2 0.27 -> 0.10, truncated_t1 0.38 -> 0.50, kl 0.12 vs 1.79
    assert mean(last, "truncated_t2") < mean(first, "truncated_t2") - 0.1  # attempt 2 learned to stop
    assert mean(last, "truncated_t1") > mean(last, "truncated_t2") + 0.15  # attempt 1 did not
    assert mean(last, "kl_t1") < mean(last, "kl_t2") / 3  # attempt 1 stays near pi_ref
