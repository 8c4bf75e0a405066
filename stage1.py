"""
Stage I of SCoRe: learn to correct on attempt 2 while attempt 1 stays close to the base model.

    Eq. 3   max_theta  E[ r(y2, y*) - beta2 * KL(pi(.|x1) || pi_ref(.|x1)) ]
            (attempt 2 keeps the small default KL beta1 of Eq. 2)

Only attempt 2 is rewarded. The strong KL on attempt 1 stops the cheap way out, improving attempt 1
and copying it, so Stage II starts from a policy whose two attempts are not coupled. The loop below is
the whole recipe, steps 1-8; the REINFORCE update of Eq. 2 (steps 4-6) is reinforce.py, shared with
stage2.py.

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
        torchrun --nproc_per_node 8 stage1.py --model Qwen/Qwen2.5-7B-Instruct --shard true   # FSDP2 (README)

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
   Not yet run on a GPU (README, "A real model in minutes").
7. Sampling and training compute with different numerics (support/sampler.py samples from a bf16 copy
   of the fp32 policy on a GPU), so each token's policy-gradient term is weighted by the truncated
   importance weight min(pi / pi_sampler, C), C = 2 (Yao et al. 2025; --is_clip 0: off). The reference
   is kept in fp32 under the policy's autocast, so the KL is exactly 0 before the first update.
8. --preset smol_cpu: --preset smol on 2 CPU cores (README, "A real model on a CPU"). 32 episodes a
   step (8 problems x k = 4) instead of 128, so that a step takes about a minute. Sampling temperature
   0.7, not 1.0: at 1.0 this 135M model is right on ~10 % of its samples against 45 % greedy, so most
   RLOO groups score all 0 and carry no signal, and a CPU pilot (16 episodes, lr 2e-5) only drifted
   (KL 0.5-1.5 nats, no reward gain in 19 steps). The sampler still records temperature-1 log-probs
   (support/sampler.py, 5.), so the update is a policy gradient of the tempered sampler's draws. lr 1e-5
   as in 6., and beta2 = 1.0 (ten times Table 5's): at 0.1 a CPU pilot's greedy attempt 1 moved 12
   points (47.5 -> 59.5 on 200 problems) and attempt 2 learned to copy it, the collapse Stage I exists
   to prevent (the paper: beta2 may be adapted). beta1 and alpha stay Table 5's. --bf16 auto computes
   under bf16 autocast only on CPUs that multiply bf16 in hardware (model.use_bf16), the sampler too
   (support/sampler.py, 1.): a Stage I step 2.6x faster than in fp32 on 2 AVX512-BF16 cores (bench.py
   --preset smol_cpu). Micro-batches of 8 episodes, not 32: the same gradient, 1.05-1.34x faster an
   update on 2 CPU cores (three runs of the same bench) and a quarter of the activations.
"""

import dataclasses
import os
import random
import sys
import time
from dataclasses import dataclass

import torch
from tqdm import tqdm

from model import load_policy_and_reference, load_tokenizer, use_bf16
from reinforce import make_optimizer, reinforce_update
from rollout import run_episodes
from support.checkpoints import (find_checkpoint, load_training_state, read_run_config, restore_training_state,
                                 save_checkpoint, training_state)
from support.distributed import average_gradients, barrier, init_distributed, main_process_first
from support.sampler import Sampler
from support.sharding import gathered_weights, shard_model
from support.settings import TrainingConfig, UsageError, check_config, parse_config, presets
from support.tasks import get_task, load_problems
from support.tiny import build_tiny_model, warm_up_tiny_base
from support.training_log import log_step


@dataclass
class Config(TrainingConfig):
    """Stage I's settings: these, and the ones both stages share (support/settings.py: TrainingConfig)."""
    model: str = "Qwen/Qwen2.5-1.5B-Instruct"
    """the base model pi_ref and the starting policy: hub id, local folder or .gguf file ('tiny': built in-process)"""
    task: str = "math"
    """arithmetic, math (MATH train -> MATH500) or code (MBPP -> HumanEval)"""
    train_data: str = ""
    """a local JSONL of training problems; empty: download the task's training split once"""
    max_operand: int = 99
    """arithmetic only: problems are a + b with a, b drawn from 0..max_operand (unless mix is set)"""
    mix: str = ""
    """arithmetic only: kinds of problem, e.g. '+:99:99,*:9:9' (OP:MAX_A:MAX_B, support/tasks.py); empty: a + b"""
    beta2: float | None = None
    """beta2, the strong KL coefficient on attempt 1 (Eq. 3); unset: Table 5's for the task (MATH 0.1, MBPP 0.25)"""
    resume: bool = False
    """continue from {out_dir}/stage1: weights, Adam state, RNG states, step; logs keep each step once"""


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
    elif cfg.model == "tiny":  # build, warm up and save the tiny base (support/tiny.py); Stage II and evaluate read it
        cfg.model = os.path.join(cfg.out_dir, "base")
        if rank == 0:
            model, tokenizer = build_tiny_model(cfg.seed)
            if cfg.task == "arithmetic":  # other tasks only check that the scripts run: a random model can't code
                warm_up_tiny_base(model, tokenizer, task, problems, seed=cfg.seed)
            save_checkpoint(model, tokenizer, {"stage": "base", "base_model": "tiny"}, cfg.model)
        barrier()
        policy_path = cfg.model
    sharded = cfg.shard and world_size > 1  # FSDP2 (support/sharding.py); one process has nothing to shard
    tokenizer, policy, reference = load_policy_and_reference(policy_path, cfg.model, "cpu" if sharded else cfg.device,
                                                             cfg.gradient_checkpointing)
    bf16 = use_bf16(cfg.device, cfg.bf16)  # the trainer's numerics: bf16 autocast on a GPU or a bf16-native CPU
    # The sampler decodes from a bf16 copy on a GPU, refreshed each rollout; sharded, from a whole copy; on a
    # CPU from the policy itself, under the trainer's autocast (support/sampler.py, 1.).
    sampler = Sampler(policy, compile=cfg.compile_decode, copy_to=cfg.device if sharded else None, autocast=bf16)
    if sharded:  # loaded whole on the CPU; each process keeps its shards on its own device
        shard_model(policy, cfg.device), shard_model(reference, cfg.device)
    optimizer = make_optimizer(policy, cfg.lr, cfg.device)
    gradient_sync = None if sharded else average_gradients  # FSDP2 averages a sharded policy's gradients itself
    start = 0
    if state is not None:
        start = restore_training_state(state, policy, optimizer, rng, cfg.device, [log_path, samples_path])
    # Eq. 3's KL weights: beta2 pins attempt 1 to pi_ref, attempt 2 keeps the default beta1.
    kl_coefs = torch.tensor([cfg.beta2, cfg.beta1], device=cfg.device)
    run_config = {**dataclasses.asdict(cfg), "stage": 1, "base_model": cfg.model, "world_size": world_size}

    for step in tqdm(range(start + 1, cfg.steps + 1), desc="stage 1", disable=None if rank == 0 else True):
        batch = rng.sample(problems, min(cfg.problems_per_step, len(problems)))
        my_problems = batch[rank::world_size]  # whole problems: RLOO needs all k samples of a problem together
        t0 = time.time()
        # 1. attempt 1, y1 ~ pi(.|x1), k samples of each problem, and 2. attempt 2 after the
        # self-correction instruction p, y2 ~ pi(.|x1, y1, p); the verifier scores both (rollout.py).
        episodes = run_episodes(policy, tokenizer, task, my_problems, samples_per_problem=cfg.samples_per_problem,
                                temperature=cfg.temperature, max_new_tokens=cfg.max_new_tokens, sampler=sampler)
        t1 = time.time()
        # 3. rewards (Eq. 3): only attempt 2 earns its task reward r(y2, y*); attempt 1's reward is its
        # KL term alone, which the beta2 above makes strong.
        task_rewards = torch.stack([torch.zeros_like(episodes.rewards[1]), episodes.rewards[1]])  # (2, N)
        # 4. reference log-probs, 5. KL per turn, 6. loss, backward, step: Eq. 2's REINFORCE with the
        # RLOO baseline (reinforce.py). Under torchrun the gradients are averaged over processes first.
        stats = reinforce_update(policy, reference, optimizer, episodes, task_rewards, kl_coefs, cfg, bf16,
                                 average_gradients=gradient_sync)
        # 7. log (rank 0, for every rank's episodes; support/training_log.py)
        log_step(step, episodes, stats, {"rollout": t1 - t0, "update": time.time() - t1}, log_path, samples_path,
                 cfg.sample_every, my_problems)
        # 8. checkpoint, resumable: weights with the optimizer, every rank's RNG states and the step
        if step % cfg.save_every == 0 or step == cfg.steps:
            # Every rank takes part: RNG states gathered, and a sharded policy's weights and Adam state too.
            state, weights = training_state(step, policy, optimizer, rng, cfg.device), gathered_weights(policy)
            if rank == 0:
                save_checkpoint(policy, tokenizer, {**run_config, "step": step}, ckpt, state, weights)
    if rank == 0:
        print(f"saved {ckpt}")


if __name__ == "__main__":
    try:
        main(parse_config(Config, presets("stage1")))
        barrier()  # every rank leaves together (support/distributed.py, barrier)
    except UsageError as e:
        sys.exit(f"error: {e}")
