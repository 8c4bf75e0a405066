"""
Stage I of SCoRe: learn to correct on attempt 2 while attempt 1 stays close to the base model.

    Eq. 3   max_theta  E[ r(y2, y*) - beta2 * KL(pi(.|x1) || pi_ref(.|x1)) ]
            (attempt 2 keeps the small default KL beta1 of Eq. 2)

Only attempt 2 is rewarded. The strong KL on attempt 1 stops the cheap way out, improving attempt 1
and copying it, so Stage II starts from a policy whose two attempts are not coupled.
This file also holds the REINFORCE update of Eq. 2 that both stages use (`reinforce_update`).

Reads:  a base model (--model: hub id, folder or .gguf), training problems (--task, --train_data)
Writes: {out_dir}/stage1/  (save_pretrained folder + score_config.json, read by stage2.py, and
        training_state.pt: Adam state, RNG states and step, for --resume true)
        {out_dir}/logs/stage1.jsonl (one line per step), {out_dir}/logs/stage1_samples.jsonl
Run:    python stage1.py                         # one 80 GB GPU, Qwen2.5-1.5B-Instruct on MATH
        python stage1.py --model Qwen/Qwen2.5-0.5B-Instruct --micro_batch 4   # a 24 GB GPU
        python stage1.py --preset smol           # one GPU, minutes: SmolLM2-135M-Instruct on arithmetic
        python stage1.py --preset tiny           # CPU, offline, under a minute: the tutorial path
        python stage1.py --resume true           # after a crash: continue from the last checkpoint
        torchrun --nproc_per_node 8 stage1.py    # data parallel over 8 GPUs, the same update (README)

Where this departs from the paper:
1. Scale: 64 episodes a step (16 problems x k=4 samples) and 200 steps, not batch 512 for a share of
   3000 steps; Qwen2.5-1.5B-Instruct, not Gemini 1.5 Flash. Adam lr and beta2 as Table 5 for the
   task (MATH: 5e-6, 0.1; --task code: MBPP's 1e-5, 0.25), alpha, beta1 and temperature 1.0 too.
2. Baseline: leave-one-out over the k samples of a problem (RLOO, the estimator of Ahmadian et al.
   2024, which the paper cites for its REINFORCE); the paper states none. --baseline none for plain.
3. KL: the k1 estimate log(pi/pi_ref), summed over a turn's sampled tokens, enters that turn's
   reward, as in RLOO. The paper does not say which estimator it used.
4. Gradient-norm clipping at 1.0, a common safety net the paper does not mention.
5. --preset tiny trains a tiny model built in-process on `a + b` arithmetic; its base model gets
   a few seconds of supervised warm-up first so that it is right sometimes (no signal at 0 %).
   It uses lr 1e-3 and beta2 = 1.0 (the paper: beta2 may be adapted): at 0.1 the tiny model's
   attempt 1 drifted with attempt 2 (KL 0.53 vs 0.57 nats after 120 steps); at 1.0 attempt 1 stays
   put (KL ~0.04) while attempt 2's reward climbs (tests/test_learning.py).
6. --preset smol: SmolLM2-135M-Instruct on SMOL_MIX arithmetic (two-digit addition, one-digit
   multiplication; train and test problems disjoint), 16 new tokens an attempt. Table 5's beta1,
   beta2, alpha and temperature; 128 episodes a step (32 problems x k = 4) for 200 steps; Adam lr 1e-5,
   twice Table 5's MATH value, because a 135M model and 200 steps are far from Gemini and 3000 steps.
   These settings have not been run on a GPU yet (README, "A real model").
7. Sampling and training compute with different numerics (support/sampler.py samples from a bf16 copy of the
   fp32 policy on a GPU), so each token's policy-gradient term is weighted by the truncated importance
   weight min(pi / pi_sampler, C), C = 2 (Yao et al. 2025; --is_clip 0: off). The reference
   is kept in fp32 under the policy's autocast, so the KL is exactly 0 before the first update.
8. --preset smol_cpu: --preset smol on 2 CPU cores (README, "A real model on a CPU"). 32 episodes a
   step (8 problems x k = 4) instead of 128, so that a step takes about a minute. Sampling temperature
   0.7, not 1.0: at 1.0 this 135M model is right on ~10 % of its samples against 45 % greedy, so most
   RLOO groups score all 0 and carry no signal, and a CPU pilot (16 episodes, lr 2e-5) only drifted
   (KL 0.5-1.5 nats, no reward gain in 19 steps). The sampler still records temperature-1 log-probs
   (support/sampler.py, 5.), so the update is a policy gradient of the tempered sampler's draws. lr 1e-5 (twice
   Table 5's MATH value) and beta2 = 1.0 (ten times Table 5's): at 0.1 a CPU pilot's greedy attempt 1
   moved 12 points (47.5 -> 59.5 on 200 problems) and attempt 2 learned to copy it, the collapse Stage
   I exists to prevent (the paper: beta2 may be adapted). beta1 and alpha stay Table 5's.
   --bf16 auto computes under bf16 autocast only on CPUs that multiply bf16 in hardware (model.use_bf16).
"""

import dataclasses
import math
import os
import random
import sys
import time
from dataclasses import dataclass

import torch
from tqdm import tqdm

from model import autocast, load_model, load_tokenizer, token_logprobs, use_bf16
from support.chat_template import chat_prompt_ids, end_of_turn_ids, turn_end_id, turn_glue_ids
from support.tiny import build_tiny_model
from support.checkpoints import (append_jsonl, find_checkpoint, load_training_state, read_run_config,
                                 restore_training_state, save_checkpoint, training_state)
from support.distributed import (all_gather, average_gradients, barrier, init_distributed, main_process_first,
                                 rank_and_world_size)
from support.settings import UsageError, parse_config, require_device
from support.sampler import Sampler
from evaluate import self_correction_metrics
from rollout import episode_row, pad_rows, run_episodes
from support.tasks import SMOL_MIX, get_task, load_problems


@dataclass
class Config:
    model: str = "Qwen/Qwen2.5-1.5B-Instruct"
    """the base model pi_ref and the starting policy: hub id, local folder or .gguf file ('tiny': built in-process)"""
    task: str = "math"
    """arithmetic, math (MATH train -> MATH500) or code (MBPP -> HumanEval)"""
    train_data: str = ""
    """a local JSONL of training problems; empty: download the task's training split once"""
    max_operand: int = 99
    """arithmetic only: problems are a + b with a, b drawn from 0..max_operand (unless mix is set)"""
    mix: str = ""
    """arithmetic only: kinds of problem, e.g. '+:99:99,*:9:9' (OP:MAX_A:MAX_B, tasks.py); empty: a + b"""
    out_dir: str = "out"
    """checkpoints and logs go here"""
    steps: int = 200
    """policy updates (the paper: 3000 in all, split between the stages unstated)"""
    problems_per_step: int = 16
    """problems per update (paper batch 512 episodes; one GPU: 16 x k = 64)"""
    samples_per_problem: int = 4
    """k, episodes per problem: the RLOO baseline of each is the mean reward of the other k - 1"""
    micro_batch: int = 16
    """episodes per forward/backward; rounded to whole problems (memory knob, not a hyperparameter)"""
    lr: float | None = None
    """Adam learning rate; unset: Table 5's for the task (MATH 5e-6, MBPP 1e-5)"""
    beta1: float = 0.01
    """beta1, the KL coefficient on attempt 2 (Table 5)"""
    beta2: float | None = None
    """beta2, the strong KL coefficient on attempt 1; unset: Table 5's for the task (MATH 0.1, MBPP 0.25)"""
    temperature: float = 1.0
    """sampling temperature during training (Table 5)"""
    max_new_tokens: int = 512
    """per attempt; a cut-off attempt usually scores 0, so watch the truncation rate in the log"""
    baseline: str = "rloo"
    """rloo (leave-one-out over the k samples) or none (plain REINFORCE)"""
    grad_clip: float = 1.0
    """max gradient norm"""
    is_clip: float = 2.0
    """C of the token-level truncated importance weight min(pi / pi_sampler, C) (Yao et al. 2025); 0: off"""
    gradient_checkpointing: bool = True
    """recompute activations in backward: less memory, ~30 % more compute"""
    bf16: str = "auto"
    """bf16 autocast for the policy and reference over fp32 weights: auto (GPU; CPU with AMX/AVX512-BF16), true, false"""
    device: str = "cuda"
    """cuda, cuda:N or cpu (under torchrun each process takes cuda:LOCAL_RANK)"""
    seed: int = 0
    """seeds problem order, sampling and the tiny model"""
    sample_every: int = 20
    """write a few decoded episodes to the samples log every this many steps"""
    save_every: int = 50
    """checkpoint every this many steps (and at the end)"""
    compile_decode: bool = False
    """CUDA only, not yet measured: compile the decode step and replay it as a CUDA graph (support/sampler.py)"""
    resume: bool = False
    """continue from {out_dir}/stage1: weights, Adam state, RNG states, step; logs keep each step once"""


PRESETS = {
    # The CPU tutorial: a tiny model built in-process, 25 memorisable sums (see the docstring, 5.).
    "tiny": dict(model="tiny", task="arithmetic", max_operand=4, out_dir="out/tiny", steps=60,
                 problems_per_step=16, samples_per_problem=4, micro_batch=64, lr=1e-3, beta2=1.0, max_new_tokens=4,
                 gradient_checkpointing=False, device="cpu", sample_every=20, save_every=60),
    # A real instruct model in minutes on one GPU (see the docstring, 6.): SmolLM2-135M on a mix of
    # two-digit addition and one-digit multiplication, where it is right about half the time.
    "smol": dict(model="HuggingFaceTB/SmolLM2-135M-Instruct", task="arithmetic", mix=SMOL_MIX, out_dir="out/smol",
                 steps=200, problems_per_step=32, samples_per_problem=4, micro_batch=128, lr=1e-5, beta2=0.1,
                 max_new_tokens=16, gradient_checkpointing=False, sample_every=20, save_every=25),
    # The same model and task on 2 CPU cores (see the docstring, 8.): a quarter of the batch, temperature
    # 0.7, beta2 = 1.0, checkpoints every 5 steps so that --resume true loses little.
    "smol_cpu": dict(model="HuggingFaceTB/SmolLM2-135M-Instruct", task="arithmetic", mix=SMOL_MIX,
                     out_dir="out/smol_cpu", steps=60, problems_per_step=8, samples_per_problem=4, micro_batch=32,
                     lr=1e-5, beta2=1.0, temperature=0.7, max_new_tokens=16, gradient_checkpointing=False,
                     device="cpu", sample_every=5, save_every=5),
}


# Table 5's per-domain values; arithmetic borrows MATH's.
TABLE5 = {"math": dict(lr=5e-6, beta2=0.1), "code": dict(lr=1e-5, beta2=0.25), "arithmetic": dict(lr=5e-6, beta2=0.1)}


# ----------------------------------------------------------------------------- Eq. 2, REINFORCE

def rloo_advantages(rewards, k):
    """reward minus the mean reward of the other k - 1 samples of the same problem (RLOO).
    rewards: (..., N) with the k samples of each problem adjacent. An unbiased baseline: it does
    not depend on the sample it is subtracted from."""
    grouped = rewards.unflatten(-1, (-1, k))  # (..., N / k, k)
    others_mean = (grouped.sum(-1, keepdim=True) - grouped) / (k - 1)
    return (grouped - others_mean).flatten(-2)


def truncated_importance_weights(logp, sampler_logp, clip):
    """Token-level truncated importance sampling (Yao et al. 2025, "Your efficient RL framework
    secretly brings you off-policy RL training"; the correction verl and OpenRLHF adopt):
        w_t = min(pi_theta(y_t) / pi_sampler(y_t), C)      no gradient through w
    The sampler (support/sampler.py: bf16 weights, KV cache) and the trainer (token_logprobs: fp32 master
    weights under autocast, one full forward) compute slightly different numbers, so the tokens
    were drawn from pi_sampler, not from the pi_theta we differentiate. w reweights each token's
    policy-gradient term back to pi_theta; truncating at C bounds the variance (sequence-level
    ratios, products of hundreds of these, are unstable). With identical numerics w is exactly 1.
    logp, sampler_logp: (b, T-1); sampler_logp is NaN where nothing was sampled (a given attempt): w = 1."""
    ratio = torch.exp(logp.detach() - sampler_logp.nan_to_num(nan=0.0)).where(~sampler_logp.isnan(), 1.0)
    return ratio.clamp(max=clip)


def policy_gradient_loss(logp, masks, advantages, n_episodes, weights=None):
    """REINFORCE: -1/N sum_i sum_t A_t,i * log pi(y_t,i), where log pi(y) sums the turn's tokens.
    logp (B, T-1) carries the gradient; masks (turns, B, T-1); advantages (turns, B) must not.
    weights (B, T-1), optional: each token's importance weight (truncated_importance_weights).
    The reward reaches the gradient only here, as the weight of log pi: the popular bug
    `-reward.mean() + beta * KL` with a gradient-free reward trains on the KL alone."""
    assert not advantages.requires_grad, "advantages are weights: detach them"
    if weights is not None:
        assert not weights.requires_grad, "importance weights carry no gradient"
        logp = weights * logp
    return -(advantages.unsqueeze(-1) * logp.unsqueeze(0) * masks).sum() / n_episodes


def reinforce_update(policy, reference, optimizer, episodes, task_rewards, kl_coefs, cfg, bf16=None):
    """One update of Eq. 2 on every turn of a batch of episodes, with gamma = 0 credit:
        R_t = r_t - beta_t * KL_t     (turn t's own task reward and KL, nothing from other turns)
        A_t = R_t - baseline_t        (RLOO over the k samples of the problem, or 0)
    task_rewards (turns, N): what each stage rewards; kl_coefs (turns,): beta per turn. bf16: whether the
    policy and the reference both compute under bf16 autocast (model.use_bf16; None: its automatic choice).
    Each token's term is weighted by its truncated importance weight when the episodes carry the
    sampler's log-probs and cfg.is_clip > 0. Returns the loss, gradient norm, KL per turn and the
    sampler/trainer mismatch (mean |log pi_theta - log pi_sampler| per sampled token, the share of
    ratios outside [0.5, 2], the share clipped at C)."""
    k, n = episodes.samples_per_problem, episodes.input_ids.shape[0]
    chunk = k * max(1, cfg.micro_batch // k)  # whole problems per micro-batch: RLOO needs all k together
    device = episodes.input_ids.device
    use_is = episodes.sampler_logprobs is not None and cfg.is_clip > 0
    # Problems ordered by their longest row, so each micro-batch holds rows of similar length and is
    # cut to its own longest row below: less padding to run through the model. Rows of a problem stay
    # together (RLOO); the order changes nothing else, since every sum below is over all episodes.
    lengths = episodes.attention_mask.sum(-1)  # (N,) real tokens; rows are right padded, so columns 0..length-1
    by_length = lengths.view(-1, k).max(-1).values.argsort()  # problems, shortest first
    order = (by_length[:, None] * k + torch.arange(k, device=device)).flatten()  # their rows, k at a time
    kl = torch.zeros_like(task_rewards)
    # sampler/trainer mismatch, summed over drawn tokens: |log ratio|, ratios outside [0.5, 2], clipped, tokens
    loss_sum, mismatch = 0.0, torch.zeros(4, device=device)
    for start in range(0, n, chunk):
        rows = order[start:start + chunk]
        width = int(lengths[rows].max())  # this micro-batch's longest row; the rest is padding
        ids, attn = episodes.input_ids[rows, :width], episodes.attention_mask[rows, :width]
        masks = episodes.action_masks[:, rows, 1:width].float()  # token j+1 is predicted at position j
        actions = episodes.action_masks[:, rows, 1:width].any(0)  # (b, T-1): log-probs needed only here
        # 4. reference log-probs: the frozen base model, no graph, with the policy's numerics (same
        # weight dtype, same autocast), so log pi - log pi_ref is exactly 0 before the first update.
        with torch.no_grad(), autocast(device, bf16):
            ref_logp = token_logprobs(reference, ids, attn, only=actions)  # (b, T-1), 0 off the actions
        with autocast(device, bf16):
            logp = token_logprobs(policy, ids, attn, only=actions)  # (b, T-1), with graph
        # 5. KL per turn: k1 = sum over the turn's sampled tokens of log pi - log pi_ref. Its
        # expectation under pi is exactly KL(pi || pi_ref) of the whole attempt; as a reward
        # (no gradient of its own) the REINFORCE update is an unbiased gradient of Eq. 2's KL term.
        kl[:, rows] = ((logp.detach() - ref_logp).unsqueeze(0) * masks).sum(-1)
        total = task_rewards[:, rows] - kl_coefs[:, None] * kl[:, rows]
        advantages = rloo_advantages(total, k) if cfg.baseline == "rloo" else total
        # 6. loss and backward, each token's term weighted by its truncated importance weight: the
        # sampler drew the tokens with other numerics (truncated_importance_weights). Micro-batch
        # losses add up to the loss of the whole batch.
        weights = None
        if episodes.sampler_logprobs is not None:
            sampler_logp = episodes.sampler_logprobs[rows, :width - 1]  # (b, T-1), NaN on a given attempt
            drawn = masks.amax(0) * ~sampler_logp.isnan()  # (b, T-1): 1 on the tokens the sampler drew
            log_ratio = (logp.detach() - sampler_logp.nan_to_num(nan=0.0)) * drawn  # log pi / pi_sampler, else 0
            clip = cfg.is_clip if use_is else math.inf
            mismatch += torch.stack([log_ratio.abs().sum(), (log_ratio.abs() > math.log(2)).sum(),
                                     (log_ratio > math.log(clip)).sum(), drawn.sum()])
            if use_is:
                weights = truncated_importance_weights(logp, sampler_logp, cfg.is_clip)
        loss = policy_gradient_loss(logp, masks, advantages, n, weights)
        loss.backward()
        loss_sum += loss.item()
    average_gradients(policy)  # several processes (torchrun): the mean gradient of the whole batch (support/distributed.py)
    grad_norm = torch.nn.utils.clip_grad_norm_(policy.parameters(), cfg.grad_clip)
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    stats = {"loss": loss_sum, "grad_norm": grad_norm.item(), "kl": kl.mean(-1).tolist()}
    if episodes.sampler_logprobs is not None:  # the mismatch, measured before any correction
        total_abs, outside, clipped, tokens = mismatch.tolist()
        stats.update(mismatch=total_abs / max(tokens, 1), mismatch_outside=outside / max(tokens, 1),
                     is_clipped=clipped / max(tokens, 1))
    return stats


def make_optimizer(policy, lr, device):
    """Adam (Table 5) over the policy's fp32 weights; on a GPU the fused kernel, one launch for all
    parameters instead of several per parameter tensor (same math)."""
    return torch.optim.Adam(policy.parameters(), lr=lr, fused=torch.device(device).type == "cuda")


# ----------------------------------------------------------------------------- shared by the stages

def check_config(cfg):
    """Validate the settings and fill the values derived from them (Table 5's per-task defaults)."""
    if cfg.task not in TABLE5:
        raise UsageError(f"unknown task {cfg.task!r}; choose {', '.join(TABLE5)}")
    if cfg.lr is None:  # None, not 0, is "unset": lr 0 and beta2 0 are settings a user can ask for
        cfg.lr = TABLE5[cfg.task]["lr"]
    if hasattr(cfg, "beta2") and cfg.beta2 is None:
        cfg.beta2 = TABLE5[cfg.task]["beta2"]
    if cfg.baseline not in ("rloo", "none"):
        raise UsageError(f"--baseline must be rloo or none, not {cfg.baseline!r}")
    if cfg.baseline == "rloo" and cfg.samples_per_problem < 2:
        raise UsageError("the RLOO baseline needs --samples_per_problem >= 2 (or pass --baseline none)")
    require_device(cfg.device, os.path.basename(sys.argv[0]) or "stage1.py")


def load_policy_and_reference(policy_path, reference_path, cfg):
    device = torch.device(cfg.device)
    tokenizer = load_tokenizer(policy_path)
    policy = load_model(policy_path, device, torch.float32, trainable=True)
    # The reference as the policy: fp32 weights under the same autocast. A bf16 reference computes
    # other numbers (~0.03 nats a token), so the KL would start from noise, not from exactly 0.
    reference = load_model(reference_path, device, torch.float32, trainable=False)
    if cfg.gradient_checkpointing:  # transformers 5.23 renamed it; older 5.x only has the old name
        getattr(policy, "activation_checkpointing_enable", policy.gradient_checkpointing_enable)()
    return tokenizer, policy, reference


def log_step(step, episodes, stats, seconds, log_path, samples_path, sample_every, problems):
    """7. log: one printed line, the same as a JSONL record, and a few decoded episodes now and then.
    Works for one turn too (stage2.py --single_turn). Under torchrun each rank holds a share of the
    batch: the per-episode facts are gathered and rank 0 alone logs the whole batch, once."""
    turns = episodes.rewards.shape[0]
    mismatch_keys = [k for k in ("mismatch", "mismatch_outside", "is_clipped") if k in stats]
    shares = all_gather({"correct": episodes.rewards.bool().tolist(), "truncated": episodes.truncated.tolist(),
                         "tokens": int(episodes.action_masks.sum()), "kl": stats["kl"], "loss": stats["loss"],
                         **{k: stats[k] for k in mismatch_keys}})
    if rank_and_world_size()[0] != 0:
        return None
    correct = [sum((s["correct"][t] for s in shares), []) for t in range(turns)]
    truncated = [sum((s["truncated"][t] for s in shares), []) for t in range(turns)]
    kl = [sum(s["kl"][t] for s in shares) / len(shares) for t in range(turns)]  # equal shares: mean of means
    record = {"step": step}
    for t in range(turns):
        record.update({f"reward_t{t + 1}": sum(correct[t]) / len(correct[t]), f"kl_t{t + 1}": kl[t],
                       f"truncated_t{t + 1}": sum(truncated[t]) / len(truncated[t])})
    line = " ".join(f"r{t + 1} {record[f'reward_t{t + 1}']:.3f}" for t in range(turns))
    if turns > 1:  # the batch's self-correction flows, attempt 1 -> 2
        m = self_correction_metrics(correct[0], correct[1])
        record.update(delta=m["delta"], delta_i2c=m["delta_i2c"], delta_c2i=m["delta_c2i"])
        line += f" | delta {m['delta']:+.3f} i->c {m['delta_i2c']:.3f} c->i {m['delta_c2i']:.3f}"
    record.update({k: sum(s[k] for s in shares) / len(shares) for k in mismatch_keys})  # equal shares
    record.update(loss=sum(s["loss"] for s in shares), grad_norm=stats["grad_norm"],
                  sampled_tokens_per_s=sum(s["tokens"] for s in shares) / seconds["rollout"], **seconds)
    kls = " ".join(f"kl{t + 1} {kl[t]:.4f}" for t in range(turns))
    truncs = "/".join(f"{record[f'truncated_t{t + 1}']:.2f}" for t in range(turns))
    # mis: mean |log pi - log pi_sampler| per sampled token (the sampler vs token_logprobs; IS corrects it)
    mis = f"mis {record['mismatch']:.4f} | " if "mismatch" in record else ""
    tqdm.write(f"step {step:4d} | {line} | {kls} | trunc {truncs} | {mis}{record['sampled_tokens_per_s']:.0f} tok/s | "
               f"{sum(seconds.values()):.1f}s")
    append_jsonl(log_path, record)
    if step % sample_every == 0:  # a few of rank 0's own episodes: the first sample of a few problems
        k = episodes.samples_per_problem
        for i in range(0, min(3 * k, len(episodes.responses[0])), k):
            p = problems[i // k]
            append_jsonl(samples_path, {"step": step, "problem": p.question, "answer": p.answer,
                                        **{f"y{t + 1}": episodes.responses[t][i] for t in range(turns)},
                                        **{f"r{t + 1}": bool(episodes.rewards[t, i]) for t in range(turns)}})
    return record


# ----------------------------------------------------------------------------- the tiny base model

def warm_up_tiny_base(model, tokenizer, task, problems, steps=200, p_correct=0.5, seed=0):
    """Supervised warm-up of the tiny model on two-turn conversations whose answers are right with
    probability p_correct and otherwise a random wrong number, independently per attempt. The result
    answers in the right format and is right about p_correct of the time at temperature 1: a base
    model with room to improve and no habit of self-correcting."""
    rng = random.Random(seed)
    end_ids = end_of_turn_ids(model, tokenizer)
    glue = turn_glue_ids(tokenizer, end_ids, task.instruction)
    end = turn_end_id(tokenizer)  # the template's end of turn, as rollout.py closes attempts
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)

    token_cache = {}  # 25 distinct problems and a few dozen answers: tokenize each once, not every step

    def tokens(key, make):
        if key not in token_cache:
            token_cache[key] = make()
        return token_cache[key]

    def answer_ids(p):
        value = p.answer if rng.random() < p_correct else str(int(p.answer) + rng.choice([-2, -1, 1, 2, 3]))
        return tokens(("answer", value), lambda: tokenizer(value, add_special_tokens=False).input_ids + [end])

    for _ in range(steps):
        rows, spans = [], []
        for p in rng.sample(problems, min(32, len(problems))):
            prompt = tokens(("prompt", p.id), lambda: chat_prompt_ids(tokenizer, task.first_prompt(p)))
            y1, y2 = answer_ids(p), answer_ids(p)
            row, row_spans = episode_row(prompt, [y1, y2], glue, end)  # [x1, y1, glue with p, y2]
            rows.append(row)
            spans.append(row_spans)
        ids, attn, action_masks, _ = pad_rows(rows, spans, tokenizer.pad_token_id)
        mask = action_masks.any(0)[:, 1:].float()  # both answers; position j predicts token j+1
        loss = -(token_logprobs(model, ids, attn) * mask).sum() / mask.sum()
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    return model


# ----------------------------------------------------------------------------- the run

def main(cfg):
    check_config(cfg)
    rank, world_size, cfg.device = init_distributed(cfg.device)
    if cfg.problems_per_step % world_size:
        raise UsageError(f"--problems_per_step {cfg.problems_per_step} does not split over {world_size} processes; "
                         f"use a multiple of {world_size}")
    if cfg.model != "tiny" and not cfg.resume:  # a wrong --model fails now, not after the data download
        load_tokenizer(cfg.model)
    ckpt, logs = os.path.join(cfg.out_dir, "stage1"), os.path.join(cfg.out_dir, "logs")
    log_path, samples_path = os.path.join(logs, "stage1.jsonl"), os.path.join(logs, "stage1_samples.jsonl")
    # Every rank draws the same problems (same seed) and keeps its share; sampling differs per rank.
    rng = random.Random(cfg.seed)
    torch.manual_seed(cfg.seed + rank)
    task = get_task(cfg.task)
    with main_process_first():  # rank 0 downloads, the others then read its cache
        problems = load_problems(cfg.task, "train", cfg.train_data, seed=cfg.seed, max_operand=cfg.max_operand,
                                 mix=cfg.mix)
    state, policy_path = None, cfg.model
    if cfg.resume:  # continue from the last checkpoint: its weights are the policy, its base the reference
        policy_path = find_checkpoint(ckpt, "nothing to resume; run without --resume true first")
        state = load_training_state(policy_path)
        cfg.model = read_run_config(policy_path)["base_model"]
    elif cfg.model == "tiny":  # build, warm up and save the tiny base; Stage II and evaluate read it
        cfg.model = os.path.join(cfg.out_dir, "base")
        if rank == 0:
            model, tokenizer = build_tiny_model(cfg.seed)
            if cfg.task == "arithmetic":  # other tasks only check that the scripts run: a random model can't code
                warm_up_tiny_base(model, tokenizer, task, problems, seed=cfg.seed)
            save_checkpoint(model, tokenizer, {"stage": "base", "base_model": "tiny"}, cfg.model)
        barrier()
        policy_path = cfg.model
    tokenizer, policy, reference = load_policy_and_reference(policy_path, cfg.model, cfg)
    optimizer = make_optimizer(policy, cfg.lr, cfg.device)
    sampler = Sampler(policy, compile=cfg.compile_decode)  # a bf16 copy on a GPU, refreshed each rollout (support/sampler.py)
    start = 0
    if state is not None:
        start = restore_training_state(state, optimizer, rng, cfg.device, [log_path, samples_path])
    # Eq. 3's KL weights: beta2 pins attempt 1 to pi_ref, attempt 2 keeps the default beta1.
    kl_coefs = torch.tensor([cfg.beta2, cfg.beta1], device=cfg.device)
    bf16 = use_bf16(cfg.device, cfg.bf16)  # the trainer's numerics: bf16 autocast on a GPU or a bf16-native CPU
    run_config = {**dataclasses.asdict(cfg), "stage": 1, "base_model": cfg.model, "world_size": world_size}

    for step in tqdm(range(start + 1, cfg.steps + 1), desc="stage 1", disable=None if rank == 0 else True):
        batch = rng.sample(problems, min(cfg.problems_per_step, len(problems)))
        shard = batch[rank::world_size]  # whole problems: RLOO needs all k samples of a problem together
        t0 = time.time()
        # 1. attempt 1, and 2. attempt 2 after the self-correction instruction (rollout.py)
        episodes = run_episodes(policy, tokenizer, task, shard, samples_per_problem=cfg.samples_per_problem,
                                temperature=cfg.temperature, max_new_tokens=cfg.max_new_tokens, sampler=sampler)
        t1 = time.time()
        # 3. rewards (Eq. 3): only attempt 2 earns its task reward; attempt 1's reward is its KL term alone.
        task_rewards = torch.stack([torch.zeros_like(episodes.rewards[1]), episodes.rewards[1]])
        # 4.-6. reference log-probs, KL, loss, backward, step
        stats = reinforce_update(policy, reference, optimizer, episodes, task_rewards, kl_coefs, cfg, bf16)
        # 7. log (rank 0, for every rank's episodes)
        log_step(step, episodes, stats, {"rollout": t1 - t0, "update": time.time() - t1}, log_path, samples_path,
                 cfg.sample_every, shard)
        # 8. checkpoint, resumable: weights with the optimizer, every rank's RNG states and the step
        if step % cfg.save_every == 0 or step == cfg.steps:
            state = training_state(step, optimizer, rng, cfg.device)  # every rank's RNG states, gathered
            if rank == 0:
                save_checkpoint(policy, tokenizer, {**run_config, "step": step}, ckpt, state)
    if rank == 0:
        print(f"saved {ckpt}")


if __name__ == "__main__":
    try:
        main(parse_config(Config, PRESETS))
    except UsageError as e:
        sys.exit(f"error: {e}")
