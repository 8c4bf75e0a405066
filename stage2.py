"""
Stage II of SCoRe: reward both attempts, and pay a bonus for real corrections.

    Eq. 4   max_theta  E[ sum_{i=1,2} r(y_i, y*) - beta1 * KL(pi(.|x_i) || pi_ref(.|x_i)) ]
    bonus   b(y2 | y1, y*) = alpha * (r(y2, y*) - r(y1, y*)),  alpha > 1, added to attempt 2's reward

wrong -> right earns a large positive bonus, right -> wrong a large negative one, so copying a
wrong answer is worth less than fixing it. Credit is per turn (gamma = 0): attempt 1's log-probs are
weighted by attempt 1's reward, attempt 2's by attempt 2's shaped reward (`shaped_rewards`).
The loop is Stage I's (stage1.py); what Stage II changes is step 3 (the rewards), beta1 on both turns,
where it starts from, and which checkpoint it keeps. The update is reinforce.py's (Eq. 2).

Reads:  {out_dir}/stage1/ (the Stage I checkpoint; its score_config.json names the base model,
        which stays the KL reference pi_ref) and the same training problems
Writes: {out_dir}/stage2/ (the checkpoint with the highest training reward, as the paper picks it),
        {out_dir}/logs/stage2.jsonl, {out_dir}/logs/stage2_samples.jsonl
        {out_dir}/stage2_last/ (the latest weights + training_state.pt, what --resume true continues from)
Run:    python stage2.py                  # after python stage1.py, one GPU
        python stage2.py --preset smol    # after python stage1.py --preset smol
        python stage2.py --preset tiny    # CPU, after python stage1.py --preset tiny
        python stage2.py --resume true    # after a crash: continue from stage2_last
Ablations (Table 4), each into its own --out_dir copy or compared via evaluate.py --name:
        python stage2.py --init base      # without Stage I
        python stage2.py --alpha 0        # without reward shaping
        python stage2.py --single_turn true   # single-turn RL: attempt 1 only, from the base model

Where this departs from the paper:
1. Scale as in stage1.py (64 episodes a step, 200 steps, RLOO baseline, k1 KL in the reward).
2. "Highest training reward" is the mean of r(y1) + r(y2) (without bonus and KL) over the
   save_every steps before each check; the paper does not define its window.
3. The paper's optional extra prompts (first attempts sampled from the base model) are left out.
4. --preset smol uses stage1.py's smol settings (its docstring, 6.): 128 episodes, 200 steps, lr 1e-5;
   --preset smol_cpu its smol_cpu settings (its docstring, 8.): 32 episodes a step, temperature 0.7.
"""

import dataclasses
import os
import random
import sys
import time
from dataclasses import dataclass

import torch
from tqdm import tqdm

from model import load_policy_and_reference, use_bf16
from reinforce import make_optimizer, reinforce_update
from rollout import run_episodes
from support.checkpoints import (find_checkpoint, load_training_state, read_run_config, restore_training_state,
                                 save_checkpoint, training_state)
from support.distributed import all_gather, average_gradients, barrier, init_distributed, main_process_first
from support.sampler import Sampler
from support.sharding import gathered_weights, shard_model
from support.settings import TABLE5_SHARED, TrainingConfig, UsageError, check_config, parse_config, presets
from support.tasks import get_task, load_problems
from support.training_log import log_step


@dataclass
class Config(TrainingConfig):
    """Stage II's settings: these, and the ones both stages share (support/settings.py: TrainingConfig)."""
    init: str = ""
    """the starting policy: empty for {out_dir}/stage1 (the base model with --single_turn); 'base': the base model (ablation: without Stage I); or a path"""
    out_dir: str = "out"
    """Stage I's output folder; Stage II's checkpoint and logs go here too"""
    task: str = ""
    """empty: the task Stage I trained on"""
    train_data: str = ""
    """empty: the training data Stage I used"""
    alpha: float = TABLE5_SHARED["alpha"]
    """alpha, the bonus multiplier on r(y2) - r(y1) (Table 5); 0 is the 'without reward shaping' ablation"""
    single_turn: bool = False
    """the 'single-turn RL' ablation (Table 4): plain RL on attempt 1 only, from the base model; evaluate with two attempts"""
    seed: int = 1
    """seeds problem order and sampling (differs from Stage I's so Stage II sees other batches)"""
    save_every: int = 50
    """compare the training reward every this many steps; save when it is the best so far"""
    resume: bool = False
    """continue from {out_dir}/stage2_last: weights, Adam state, RNG states, step, best training reward so far"""


def shaped_rewards(r1, r2, alpha):
    """Stage II's per-turn rewards from the verifier's r1 = r(y1, y*), r2 = r(y2, y*):
    attempt 1 gets r1; attempt 2 gets r2 + alpha * (r2 - r1), the paper's bonus b(y2 | y1, y*)."""
    return r1, r2 + alpha * (r2 - r1)


def main(cfg):
    stage1_path = find_checkpoint(os.path.join(cfg.out_dir, "stage1"), "run stage1.py first (same --out_dir)")
    stage1 = read_run_config(stage1_path)
    cfg.task = cfg.task or stage1["task"]
    cfg.train_data = cfg.train_data or stage1["train_data"]
    base_model = stage1["base_model"]  # pi_ref stays the base model in both stages
    # Table 4's single-turn RL is plain RL from the base model; SCoRe's Stage II starts from Stage I.
    default_init = base_model if cfg.single_turn else stage1_path
    init = {"": default_init, "base": base_model}.get(cfg.init, cfg.init)
    check_config(cfg)
    rank, world_size, cfg.device = init_distributed(cfg.device)
    if cfg.problems_per_step % world_size:
        raise UsageError(f"--problems_per_step {cfg.problems_per_step} does not split over {world_size} processes; "
                         f"use a multiple of {world_size}")
    ckpt, last = os.path.join(cfg.out_dir, "stage2"), os.path.join(cfg.out_dir, "stage2_last")
    logs = os.path.join(cfg.out_dir, "logs")
    log_path, samples_path = os.path.join(logs, "stage2.jsonl"), os.path.join(logs, "stage2_samples.jsonl")
    rng = random.Random(cfg.seed)
    torch.manual_seed(cfg.seed + rank)
    task = get_task(cfg.task)
    with main_process_first():
        problems = load_problems(cfg.task, "train", cfg.train_data, seed=stage1["seed"],
                                 max_operand=stage1["max_operand"], mix=stage1.get("mix", ""))
    state, policy_path = None, init
    if cfg.resume:  # the latest weights live in stage2_last; stage2 holds the best so far
        policy_path = find_checkpoint(last, "nothing to resume; run without --resume true first")
        state = load_training_state(policy_path)
        init = read_run_config(policy_path)["init"]
    sharded = cfg.shard and world_size > 1  # FSDP2 (support/sharding.py); one process has nothing to shard
    tokenizer, policy, reference = load_policy_and_reference(policy_path, base_model, "cpu" if sharded else cfg.device,
                                                             cfg.gradient_checkpointing)
    bf16 = use_bf16(cfg.device, cfg.bf16)  # the trainer's numerics: bf16 autocast on a GPU or a bf16-native CPU
    # The sampler decodes from a bf16 copy on a GPU, refreshed each rollout; sharded, from a whole copy; on a
    # CPU from the policy itself, under the trainer's autocast (support/sampler.py, 1.).
    sampler = Sampler(policy, compile=cfg.compile_decode, copy_to=cfg.device if sharded else None, autocast=bf16)
    if sharded:  # loaded whole on the CPU; each process keeps its shards on its own device
        shard_model(policy, cfg.device), shard_model(reference, cfg.device)
    optimizer = make_optimizer(policy, cfg.lr, cfg.device)
    gradient_sync = None if sharded else average_gradients  # FSDP2 averages a sharded policy's gradients itself
    start, window, best = 0, [], float("-inf")
    if state is not None:
        start = restore_training_state(state, policy, optimizer, rng, cfg.device, [log_path, samples_path])
        best = state["best"]  # the best-checkpoint window restarts at every save: the best score is all it needs
    n_turns = 1 if cfg.single_turn else 2
    kl_coefs = torch.tensor([cfg.beta1] * n_turns, device=cfg.device)  # Eq. 4: beta1 on both turns
    run_config = {**dataclasses.asdict(cfg), "stage": 2, "base_model": base_model, "init": init,  # resolved last
                  "max_operand": stage1["max_operand"], "mix": stage1.get("mix", ""),  # evaluate.py's test range
                  "world_size": world_size}

    for step in tqdm(range(start + 1, cfg.steps + 1), desc="stage 2", disable=None if rank == 0 else True):
        batch = rng.sample(problems, min(cfg.problems_per_step, len(problems)))
        my_problems = batch[rank::world_size]  # whole problems per rank (RLOO)
        t0 = time.time()
        # 1. attempt 1, and 2. attempt 2 after the self-correction instruction (rollout.py), as in Stage I
        episodes = run_episodes(policy, tokenizer, task, my_problems, samples_per_problem=cfg.samples_per_problem,
                                temperature=cfg.temperature, max_new_tokens=cfg.max_new_tokens, n_turns=n_turns,
                                sampler=sampler)
        t1 = time.time()
        # 3. rewards (Eq. 4 + bonus): both attempts are rewarded; attempt 2 gets the shaping bonus.
        if cfg.single_turn:  # the ablation: plain RL on attempt 1, no second turn at all
            task_rewards = episodes.rewards
        else:
            task_rewards = torch.stack(shaped_rewards(episodes.rewards[0], episodes.rewards[1], cfg.alpha))
        # 4. reference log-probs, 5. KL, 6. loss, backward, step: the same update as Stage I (reinforce.py)
        stats = reinforce_update(policy, reference, optimizer, episodes, task_rewards, kl_coefs, cfg,
                                 bf16, average_gradients=gradient_sync)
        # 7. log (rank 0, for every rank's episodes; support/training_log.py)
        log_step(step, episodes, stats, {"rollout": t1 - t0, "update": time.time() - t1}, log_path,
                 samples_path, cfg.sample_every, my_problems)
        # 8. checkpoint: keep the one with the highest training reward (as the paper does), and the latest to resume
        # from. The reward is the whole batch's r1 + r2 (r1 alone with --single_turn), same on every rank.
        window.append(sum(all_gather(episodes.rewards.sum(0).mean().item())) / world_size)
        if step % cfg.save_every == 0 or step == cfg.steps:
            score, window = sum(window) / len(window), []
            weights = gathered_weights(policy)  # every rank takes part when the policy is sharded
            if rank == 0 and score > best:
                save_checkpoint(policy, tokenizer, {**run_config, "step": step, "train_reward": score}, ckpt,
                                weights=weights)
                print(f"step {step}: training reward r1 + r2 = {score:.3f}, best so far: saved")
            best = max(best, score)
            state = training_state(step, policy, optimizer, rng, cfg.device, best=best)  # every rank's RNG states
            if rank == 0:
                save_checkpoint(policy, tokenizer, {**run_config, "step": step}, last, state, weights)
    if rank == 0:
        print(f"saved {ckpt} (training reward {best:.3f})")


if __name__ == "__main__":
    try:
        main(parse_config(Config, presets("stage2")))
        barrier()  # every rank leaves together (support/distributed.py, barrier)
    except UsageError as e:
        sys.exit(f"error: {e}")
