"""
How fast one SCoRe Stage I step runs, how much memory each phase takes, and how close that is to
what the hardware allows: the project's own code ("ours") and a plain baseline, side by side in
one run, so every speed-up is a ratio measured on the same device at the same moment. nanoGPT keeps
a `bench.py` next to `train.py` for the same reason: a benchmark is a recipe you read and run. It runs
the real code paths (support/sampler.py's Sampler, model.token_logprobs, reinforce.reinforce_update,
rollout.episode_row); the baseline's parts are passed to them as arguments.

Run:    python bench.py                       # one GPU: Qwen2.5-1.5B architecture, batch 64, 512 + 512 tokens
        python bench.py --compile_decode true # the same, the decode step compiled + CUDA graphs (unmeasured)
        python bench.py --preset cpu          # CPU, offline, 1-4 min: a tiny body on Qwen's 151,936 vocab,
                                              # every new path eagerly (the bf16 sampler copy included)
        python bench.py --preset cpu --model small --vocab_size 8192   # CPU: a body-heavy model, where
                                              # gradient checkpointing and micro-batches act (~30 s)
        python bench.py --preset cpu --model SmolLM2-135M-Instruct.Q4_1.gguf --pretrained true \
            --emulate_bf16 true --techniques false   # CPU: step-0 KL and mismatch with real weights
        python bench.py --preset smol_cpu --model SmolLM2-135M-Instruct.Q4_1.gguf   # 2 CPU cores, ~10 min:
                                              # stage1.py --preset smol_cpu's step, bf16 where it pays vs fp32

The models get random weights (built from a config: offline, and speed does not depend on the
weights' values; --pretrained loads real ones, whose numerics do differ). They never emit the end
token (its id is past the vocabulary), so every attempt runs the full --new_tokens: the worst case a
real rollout approaches, the same work in every run.

What the tables mean (roofline %, MFU and peak MB are defined in support/measure.py):
  numerics   at step 0: the KL between policy and reference (ours: the reference with the policy's
             numerics, exactly 0; plain: a bf16 reference), and the sampler/trainer mismatch, mean
             |log pi_theta - log pi_sampler| per sampled token and the share of ratios outside [0.5, 2],
             before the correction and after it (mean max(0, log ratio - log C): what min(ratio, C) leaves).
  rollout    y1 ~ pi(.|x1), then y2 ~ pi(.|x1, y1, p); tok/s counts sampled tokens, steps/s decode steps.
  reference  the frozen pi_ref's per-token log-probs over every episode (no graph).
  update     reinforce.reinforce_update: reference + policy forward/backward + Adam, micro-batched.
  ratio      baseline time / ours time (> 1: ours is faster); for memory, baseline / ours.
  log-prob memory   the update's log-prob work at two micro-batch sizes: growth per token << V floats.
  techniques each one switched off alone, against ours as it runs, in the same run. Where the trainer runs
             under bf16 autocast (--bf16: a GPU, or a CPU that multiplies bf16 natively), one row is the
             same reference pass and update in fp32: what the bf16 matmuls buy on this hardware.
Each table is printed as soon as it is measured, so a run that dies late keeps what it measured.

The baseline is what a plain implementation writes: model.generate with its default settings
(which sample with top-k 50) on prompts in the order given, and log-probs from a full
logits.log_softmax(-1), which needs batch x tokens x vocabulary floats; its micro-batch is its
own (--baseline_micro_batch) because that tensor would not fit at ours'. Ours samples with the
Sampler (a bf16 copy of the policy on a GPU, a static KV cache, its own decode loop) and its update
applies the truncated importance weights; both share the reference, loaded as the stages load it
(fp32, the policy's numerics), and one Adam (fused on a GPU), so neither is charged for those.

Where this departs from a real Stage I step:
1. Token ids are random and nothing is decoded or scored: the verifier is CPU work outside the model.
2. The two attempts are sampled with the Sampler and put together with rollout.episode_row, as
   rollout.run_episodes does, but here, not through it, because run_episodes needs a tokenizer and a task.
3. Reusing the reference forward pass is not a row: reinforce_update already runs the reference once
   per episode per step, the least that one update per batch allows.
4. --compile_decode (torch.compile, CUDA graphs on a GPU, grouped-query attention without K/V copies)
   is off by default: it has not been measured on a GPU yet. Ours always decodes from a static cache.
"""

import copy
import dataclasses
import functools
import math
import sys
from dataclasses import dataclass
from types import SimpleNamespace

import torch

from model import autocast, load_model, token_logprobs, use_bf16
from reinforce import make_optimizer, reinforce_update
from rollout import Episodes, episode_row, pad_rows
from support.measure import (build_config, build_models, device_bandwidth, device_matmul_rate,
                             mb, measure, print_hardware_rates, print_logprob_memory, ratio, sec)
from support.sampler import Sampler
from support.settings import UsageError, parse_config, require_device


@dataclass
class Config:
    model: str = "qwen2.5-1.5b"
    """qwen2.5-1.5b, tiny or small (built in-process), or a hub id / folder whose config.json is used; random weights"""
    vocab_size: int = 0
    """0: the architecture's own (Qwen2.5: 151,936)"""
    device: str = "cuda"
    """cuda or cpu"""
    batch: int = 64
    """episodes per Stage I step, N (stage1.py: 16 problems x k = 4)"""
    samples_per_problem: int = 4
    """k: each prompt appears k times in a row, as in rollout.run_episodes"""
    prompt_tokens: int = 512
    """longest first prompt x1; prompt lengths are drawn uniformly from half of it to all of it"""
    new_tokens: int = 512
    """max_new_tokens of each attempt (stage1.py's default)"""
    instruction_tokens: int = 80
    """glue between attempts: chat-template tokens + the instruction p (MATH's p: ~60 words, estimated ~80 tokens)"""
    gen_batch: int = 64
    """rows per decoding batch: Sampler.sample's batch_size (rollout.run_episodes passes 64)"""
    micro_batch: int = 16
    """episodes per forward/backward in the update (stage1.py's --micro_batch)"""
    chunk_tokens: int = 1024
    """token_logprobs' chunk in ours (1024: model.py's default, what stage1.py runs)"""
    baseline_micro_batch: int = 4
    """the baseline's micro-batch: its full log-softmax needs micro x tokens x vocab x ~14 bytes"""
    gradient_checkpointing: bool = True
    """recompute the policy's activations in backward, for ours and the baseline (stage1.py's default)"""
    compile_decode: bool = False
    """ours compiles its decode step (CUDA graphs on a GPU; never measured yet) and adds an eager row"""
    bf16: str = "auto"
    """the trainer's numerics, as the stages' --bf16: auto (a GPU, or a CPU that multiplies bf16 natively), true, false"""
    sampler_dtype: str = "auto"
    """auto: bf16 copy of the policy on a GPU, the policy itself on a CPU; bf16 or fp32 to force one"""
    is_clip: float = 2.0
    """C of ours' truncated importance weights (stage1.py's --is_clip)"""
    pretrained: bool = False
    """load --model's real weights (hub id, folder or .gguf, as stage1.py loads them): real numerics at step 0"""
    emulate_bf16: bool = False
    """CPU: compute the step-0 numerics under bf16 autocast, as a GPU computes them (ours' sampler: bf16 copy)"""
    techniques: bool = True
    """also measure each technique on its own (the ablation rows)"""
    warmup: int = 1
    """untimed calls before each timed one (cuBLAS, allocator and compile warm-up)"""
    repeats: int = 1
    """timed calls per measurement, the fastest kept (a shared machine is noisy)"""
    threads: int = 1
    """CPU threads for torch (more than the free cores slows everything ~10x)"""
    seed: int = 0
    """seeds the weights, the prompts and sampling"""


# cpu: a few hundred tokens per micro-batch, so chunks of 128 show what 1024 does for a GPU's thousands.
# k = 2 with generate batches of 4 mixes problems of different lengths, so length sorting has work to do.
# smol_cpu: stage1.py --preset smol_cpu's step shapes (32 episodes, 16 new tokens, micro-batches of 8, no
# checkpointing) on --model's real weights. SmolLM2's arithmetic prompts are 43-45 tokens (here 22-44) and
# its glue 27; its attempts end early, these never do (16 tokens each).
PRESETS = {"cpu": dict(model="tiny", device="cpu", batch=8, samples_per_problem=2, prompt_tokens=32, new_tokens=24,
                       instruction_tokens=8, gen_batch=4, micro_batch=4, chunk_tokens=128, baseline_micro_batch=4,
                       warmup=0, sampler_dtype="bf16"),  # bf16: the GPU's sampler copy, so the mismatch is real
           "smol_cpu": dict(device="cpu", pretrained=True, batch=32, samples_per_problem=4, prompt_tokens=44,
                            new_tokens=16, instruction_tokens=27, gen_batch=64, micro_batch=8, chunk_tokens=1024,
                            baseline_micro_batch=8, gradient_checkpointing=False, threads=2)}

# ----------------------------------------------------------------------------- data

def make_prompts(n, k, longest, vocab, gen):
    """n prompts of random token ids, each problem's k copies adjacent (rows 0..k-1 share problem 0)."""
    lengths = torch.randint(longest // 2, longest + 1, (n // k,), generator=gen).repeat_interleave(k)
    return [torch.randint(0, vocab, (int(n_),), generator=gen).tolist() for n_ in lengths]


def two_turn_rollout(generate, prompts, glue, end_filler):
    """Attempt 1, the glue with the instruction p, attempt 2: rollout.run_episodes' token logic, the rows
    put together by rollout.episode_row. generate returns (responses, truncated, sampler log-probs or None).
    The end id is past the vocabulary here, so a real token (end_filler) closes a cut-off attempt 1.
    Returns the rows, each row's attempt spans, and the sampler's log-probs per turn (or None)."""
    y1, _, lp1 = generate(prompts)
    contexts = [episode_row(x, [y], glue, end_filler, next_turn=True)[0] for x, y in zip(prompts, y1)]
    y2, _, lp2 = generate(contexts)
    rows, spans = zip(*(episode_row(x, [a, b], glue, end_filler) for x, a, b in zip(prompts, y1, y2)))
    return rows, spans, (lp1, lp2) if lp1 is not None else None


def to_episodes(rows, spans, logps, k, device, gen):
    """The rows right-padded into Episodes (rollout.pad_rows), as rollout.run_episodes returns them;
    rewards are coin flips (their values change no timing)."""
    ids, attn, masks, sampler_logprobs = pad_rows(rows, spans, 0, n_turns=2, logprobs=logps)
    n = len(rows)
    return Episodes(input_ids=ids.to(device), attention_mask=attn.to(device), action_masks=masks.to(device),
                    rewards=torch.randint(0, 2, (2, n), generator=gen).float().to(device),
                    truncated=torch.ones(2, n, dtype=torch.bool, device=device),
                    problem_index=torch.arange(n // k, device=device).repeat_interleave(k),
                    responses=[[], []], samples_per_problem=k,
                    sampler_logprobs=None if sampler_logprobs is None else sampler_logprobs.to(device))


# ----------------------------------------------------------------------------- the two implementations

def plain_generate(model, prompts, *, max_new_tokens, end_ids, pad_id, batch_size, sort=False, **settings):
    """The baseline sampler: prompts in the order given, left-padded, and model.generate with whatever
    `settings` say (none: its defaults, which sample with top-k 50). sort=True and settings give
    the ablation variants (unsorted pure sampling, static cache)."""
    device = next(model.parameters()).device
    order = sorted(range(len(prompts)), key=lambda i: len(prompts[i])) if sort else list(range(len(prompts)))
    responses = [None] * len(prompts)
    was_training = model.training
    model.eval()
    for start in range(0, len(order), batch_size):
        idx = order[start:start + batch_size]
        width = max(len(prompts[i]) for i in idx)
        ids = torch.tensor([[pad_id] * (width - len(prompts[i])) + prompts[i] for i in idx], device=device)
        attn = torch.tensor([[0] * (width - len(prompts[i])) + [1] * len(prompts[i]) for i in idx], device=device)
        with torch.no_grad(), autocast(device):
            out = model.generate(input_ids=ids, attention_mask=attn, do_sample=True, max_new_tokens=max_new_tokens,
                                 eos_token_id=list(end_ids), pad_token_id=pad_id, **settings)
        for row, i in enumerate(idx):
            responses[i] = out[row, width:].tolist()  # the end id is unreachable: no cut needed
    model.train(was_training)
    return responses, [True] * len(prompts), None  # None: generate records no log-probs (without output_scores)


def ours_generate(sampler, prompts, **settings):
    """The Sampler at temperature 1, as rollout.run_episodes calls it in training."""
    return sampler.sample(prompts, temperature=1.0, **settings)


def naive_logprobs(model, input_ids, attention_mask, only=None):
    """The two-line version from token_logprobs' docstring: a (B, T-1, V) float32 log-softmax at every
    position (`only`, the actions that need one, is ignored: the naive path computes them all)."""
    position_ids = (attention_mask.long().cumsum(-1) - 1).clamp(min=0)
    logits = model(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids,
                   use_cache=False).logits  # (B, T, V); no KV cache: nothing reads one
    return logits[:, :-1].float().log_softmax(-1).gather(-1, input_ids[:, 1:, None]).squeeze(-1)


def reference_pass(logprobs, reference, episodes, micro_batch, bf16=None):
    """Step 4 of reinforce_update on its own: the reference's log-probs, micro-batch by micro-batch."""
    with torch.no_grad(), autocast(episodes.input_ids.device, bf16):
        for start in range(0, episodes.input_ids.shape[0], micro_batch):
            rows = slice(start, start + micro_batch)
            logprobs(reference, episodes.input_ids[rows], episodes.attention_mask[rows])


def update(logprobs, policy, reference, optimizer, episodes, micro_batch, is_clip=2.0, bf16=None):
    """reinforce.reinforce_update as Stage I calls it, with `logprobs` as its log-prob function (ours:
    token_logprobs at --chunk_tokens, which at 1024 is exactly what the stages run; the baseline:
    naive_logprobs), so nothing else differs."""
    task_rewards = torch.stack([torch.zeros_like(episodes.rewards[1]), episodes.rewards[1]])
    kl_coefs = torch.tensor([0.1, 0.01], device=episodes.input_ids.device)  # Table 5, MATH: beta2, beta1
    cfg = SimpleNamespace(micro_batch=micro_batch, baseline="rloo", grad_clip=1.0, is_clip=is_clip)
    try:
        return reinforce_update(policy, reference, optimizer, episodes, task_rewards, kl_coefs, cfg, bf16,
                                logprob_fn=logprobs)
    finally:
        optimizer.zero_grad(set_to_none=True)  # already done, unless a GPU ran out of memory half-way


# ----------------------------------------------------------------------------- the run

def numerics(sampler, policy, reference, episodes, is_clip, emulate_bf16=False, bf16=None):
    """Step 0, before any update: the KL between policy and reference (ours, and a plain bf16
    reference), and the sampler/trainer mismatch before and after the truncated importance weight.
    emulate_bf16: on a CPU, the trainer's side under bf16 autocast, as on a GPU (bf16 otherwise: --bf16's choice)."""
    device = episodes.input_ids.device
    ids, attn = episodes.input_ids, episodes.attention_mask
    sampled = episodes.action_masks[:, :, 1:].any(0)  # (N, T-1): tokens the sampler drew
    amp = torch.autocast("cpu", dtype=torch.bfloat16) if emulate_bf16 and device.type == "cpu" else autocast(device, bf16)
    with torch.no_grad(), amp:
        logp = token_logprobs(policy, ids, attn)
        ref_logp = token_logprobs(reference, ids, attn)
        ref_bf16 = copy.deepcopy(reference).to(torch.bfloat16)  # the plain implementation's reference
        bf16_logp = token_logprobs(ref_bf16, ids, attn)
    del ref_bf16
    mean = lambda x: (x * sampled).sum().item() / sampled.sum().item()  # over sampled tokens only
    log_ratio = logp - episodes.sampler_logprobs  # log pi_theta / pi_sampler
    return {"kl_ours": mean(logp - ref_logp), "kl_plain": mean(logp - bf16_logp),
            "mismatch": mean(log_ratio.abs()), "outside": mean((log_ratio.abs() > math.log(2)).float()),
            "after": mean((log_ratio - math.log(is_clip)).clamp(min=0)) if is_clip else mean(log_ratio.abs()),
            "clipped": mean((log_ratio > math.log(is_clip)).float()) if is_clip else 0.0}


def main(cfg):
    require_device(cfg.device, "bench.py")
    if cfg.batch % cfg.samples_per_problem:
        raise UsageError("--batch must be a multiple of --samples_per_problem")
    torch.set_num_threads(cfg.threads)
    device = torch.device(cfg.device)
    bf16 = use_bf16(device, cfg.bf16)  # the trainer's numerics, for ours and the baseline alike
    gen = torch.Generator().manual_seed(cfg.seed)
    if cfg.pretrained:  # the real weights, loaded as model.load_policy_and_reference loads them
        policy = load_model(cfg.model, device, torch.float32, trainable=True)
        reference = load_model(cfg.model, device, torch.float32, trainable=False)
        if cfg.gradient_checkpointing:
            policy.gradient_checkpointing_enable()
        config = policy.config
    else:
        config = build_config(cfg.model, cfg.vocab_size)
        policy, reference = build_models(config, device, cfg.gradient_checkpointing, cfg.seed)
    optimizer = make_optimizer(policy, 5e-6, device)
    dtype = {"auto": None, "bf16": torch.bfloat16, "fp32": torch.float32}[cfg.sampler_dtype]
    # The sampler as the stages make it: where the trainer runs under bf16 autocast, it does too (fp32 weights).
    sampler = Sampler(policy, dtype=dtype, compile=cfg.compile_decode, autocast=bf16)
    V, N, k = config.vocab_size, cfg.batch, cfg.samples_per_problem
    value_bytes = next(sampler.model.parameters()).element_size()  # what the decode step reads per value
    end_ids, pad_id, filler = [V], 0, 1  # an end id past the vocabulary: attempts always run full length
    glue = torch.randint(0, V, (cfg.instruction_tokens,), generator=gen).tolist()
    prompts = make_prompts(N, k, cfg.prompt_tokens, V, gen)
    print(f"bench: {cfg.model} ({sum(p.numel() for p in policy.parameters()) / 1e6:.1f}M parameters, vocab {V}) on "
          f"{torch.cuda.get_device_name(device) if device.type == 'cuda' else 'CPU'}, {cfg.threads} thread(s); "
          f"{N} episodes, prompts {cfg.prompt_tokens // 2}-{cfg.prompt_tokens} + {cfg.new_tokens} new tokens x 2 turns; "
          f"sampler in {next(sampler.model.parameters()).dtype}{' under bf16 autocast' if sampler.autocast else ''}"
          f"{', compiled' if cfg.compile_decode else ''}; "
          f"trainer in {'bf16 autocast' if bf16 else 'fp32'}", flush=True)
    print(dataclasses.asdict(cfg), flush=True)

    # 1. the denominators, measured now on this device
    bandwidth = device_bandwidth(device, 2 ** 30 if device.type == "cuda" else 2 ** 27)
    matmul_rate = device_matmul_rate(device, 8192 if device.type == "cuda" else 1024, bf16)
    print(f"device: copy bandwidth {bandwidth / 1e9:.1f} GB/s, matmul {matmul_rate / 1e12:.2f} TFLOP/s", flush=True)

    timed = functools.partial(measure, device=device, warmup=cfg.warmup, repeats=cfg.repeats)
    ours_logprobs = functools.partial(token_logprobs, chunk_tokens=cfg.chunk_tokens)
    settings = dict(max_new_tokens=cfg.new_tokens, end_ids=end_ids, pad_id=pad_id, batch_size=cfg.gen_batch)
    sample_ours = functools.partial(ours_generate, sampler, **settings)
    sample_plain = functools.partial(plain_generate, policy, **settings)
    rollout = functools.partial(two_turn_rollout, prompts=prompts, glue=glue, end_filler=filler)

    # 2. numerics at step 0 (policy == reference), on one generate batch of ours' rollout, before any update
    rows = prompts[:min(N, cfg.gen_batch)]
    first = to_episodes(*two_turn_rollout(sample_ours, rows, glue, filler), k, device, gen)
    num = numerics(sampler, policy, reference, first, cfg.is_clip, cfg.emulate_bf16, bf16)
    emulated = " under bf16 autocast (CPU emulation)" if cfg.emulate_bf16 and device.type == "cpu" else ""
    print(f"\nnumerics at step 0{emulated} ({len(rows)} episodes, {first.action_masks.sum().item():,} sampled tokens)\n"
          f"KL(policy || reference) per token: ours {num['kl_ours']:.6f} (reference with the policy's numerics), "
          f"plain {num['kl_plain']:.6f} (bf16 reference)\n"
          f"sampler/trainer mismatch, mean |log pi - log pi_sampler| per token: before correction "
          f"{num['mismatch']:.5f}, after (min(ratio, {cfg.is_clip:g})) {num['after']:.5f}; ratios outside [0.5, 2]: "
          f"{100 * num['outside']:.2f} %, clipped at C: {100 * num['clipped']:.2f} %", flush=True)

    # 3. warm up every code path once on k short rows (first-call costs; Adam's state exists from here on)
    warm = to_episodes(*two_turn_rollout(functools.partial(sample_ours, max_new_tokens=2), [prompts[0][:8]] * k,
                                         glue[:2], filler), k, device, gen)
    update(ours_logprobs, policy, reference, optimizer, warm, k, cfg.is_clip, bf16)
    update(naive_logprobs, policy, reference, optimizer, warm, k, 0, bf16)

    # 4. Stage I, ours and the baseline: rollout, reference log-probs, update (reference + policy + Adam)
    kind = "GPU" if device.type == "cuda" else "CPU"
    counter = "cuda.max_memory_allocated" if kind == "GPU" else "PeakMemory"
    results = {}
    for name, generate, logprobs, micro, clip in (
            ("ours", sample_ours, ours_logprobs, cfg.micro_batch, cfg.is_clip),
            ("baseline", sample_plain, naive_logprobs, cfg.baseline_micro_batch, 0)):
        t_roll, m_roll, out = timed(functools.partial(rollout, generate))
        if out is None:  # the baseline's rollout ran out of memory: update on ours' episodes
            out = rollout(sample_ours)
        episodes = to_episodes(*out, k, device, gen)
        t_ref, m_ref, _ = timed(functools.partial(reference_pass, logprobs, reference, episodes, micro, bf16))
        t_upd, m_upd, stats = timed(functools.partial(update, logprobs, policy, reference, optimizer, episodes,
                                                      micro, clip, bf16))
        results[name] = dict(rollout=(t_roll, m_roll), reference=(t_ref, m_ref), update=(t_upd, m_upd),
                             step=(t_roll + t_upd, max(m_roll, m_upd)))
        if name == "ours":
            ours_episodes, ours_stats = episodes, stats
    ours, base = results["ours"], results["baseline"]
    print(f"\nStage I step on the {kind}, ours vs the plain baseline. speed-up = base s / ours s, memory = base MB / "
          f"ours MB; MB = peak beyond weights and Adam state ({counter})")
    print(f"{'phase':<11}| {'ours s':>8} | {'base s':>8} | {'speed-up':>8} | {'ours MB':>8} | {'base MB':>8} | "
          f"{'memory':>7}")
    for phase in ("rollout", "reference", "update", "step"):
        (to, mo), (tb, mb_) = ours[phase], base[phase]
        print(f"{phase:<11}| {sec(to):>8} | {sec(tb):>8} | {ratio(tb, to):>8} | {mb(mo):>8} | {mb(mb_):>8} | "
              f"{ratio(mb_, mo):>7}")
    if ours_stats is not None and "mismatch" in ours_stats:
        print(f"ours' update (after warm-up steps): mismatch {ours_stats['mismatch']:.5f} per token, "
              f"{100 * ours_stats['mismatch_outside']:.2f} % outside [0.5, 2], {100 * ours_stats['is_clipped']:.2f} % "
              f"clipped", flush=True)

    # 5. against the hardware: tokens/s, decode steps/s, % of the bandwidth roofline, MFU. Both sides
    # sample the same number of tokens from the same prompts, so they share the denominators.
    print_hardware_rates(results, policy, ours_episodes.attention_mask, [len(p) for p in prompts], cfg.new_tokens,
                         cfg.instruction_tokens, cfg.gen_batch, value_bytes, bandwidth, matmul_rate)

    # 6. log-prob memory against micro-batch size: grows with tokens, or with tokens x vocabulary?
    print_logprob_memory(ours_logprobs, naive_logprobs, policy, reference, ours_episodes,
                         sorted({max(1, cfg.micro_batch // 2), cfg.micro_batch}))

    # 7. each technique on its own: (name, phase, measured without it, measured with it), same run,
    # each row printed as soon as it is measured.
    if not cfg.techniques:
        return
    print(f"\n{'technique (without it -> with it, as ours runs)':<48}| {'phase':<9}| {'without s':>9} | "
          f"{'with s':>8} | {'speed-up':>8} | {'without MB':>10} | {'with MB':>8}")

    def row(name, phase, without, with_):
        (t0, m0, *_), (t1, m1, *_) = without, with_
        print(f"{name:<48}| {phase:<9}| {sec(t0):>9} | {sec(t1):>8} | {ratio(t0, t1):>8} | {mb(m0):>10} | "
              f"{mb(m1):>8}", flush=True)

    ref_with = functools.partial(reference_pass, reference=reference, episodes=ours_episodes, bf16=bf16)
    upd_with = functools.partial(update, policy=policy, reference=reference, optimizer=optimizer,
                                 episodes=ours_episodes, bf16=bf16)
    pure_unsorted = timed(functools.partial(rollout, functools.partial(sample_plain, top_k=0, top_p=1.0)))
    row("pure sampling, not generate's default top-k 50", "rollout", base["rollout"], pure_unsorted)
    row("Sampler, not generate (pure, unsorted)", "rollout", pure_unsorted, ours["rollout"])
    if cfg.compile_decode:
        eager = Sampler(policy, dtype=dtype)
        row("compiled decode + CUDA graphs (flag)", "rollout",
            timed(functools.partial(rollout, functools.partial(ours_generate, eager, **settings))), ours["rollout"])
        del eager
    if bf16:  # the same episodes, the trainer in fp32: what bf16 autocast buys
        row("bf16 autocast over fp32 weights, not fp32", "reference",
            timed(functools.partial(ref_with, ours_logprobs, micro_batch=cfg.micro_batch, bf16=False)), ours["reference"])
        fp32_update = timed(functools.partial(upd_with, ours_logprobs, micro_batch=cfg.micro_batch, bf16=False))
        row("bf16 autocast over fp32 weights, not fp32", "update", fp32_update, ours["update"])
        if sampler.autocast:  # an fp32 sampler (a CPU) under bf16 autocast
            fp32_sampler = Sampler(policy, dtype=dtype)
            fp32_rollout = timed(functools.partial(rollout, functools.partial(ours_generate, fp32_sampler, **settings)))
            row("bf16 autocast over fp32 weights, not fp32", "rollout", fp32_rollout, ours["rollout"])
            # The whole step, as on a CPU without native bf16 (--bf16 false): what --bf16 auto buys here.
            row("bf16 where it pays (CPU), not fp32 throughout", "step",
                (fp32_rollout[0] + fp32_update[0], max(fp32_rollout[1], fp32_update[1])), ours["step"])
            del fp32_sampler
    row(f"truncated IS weights (C = {cfg.is_clip:g})", "update",
        timed(functools.partial(upd_with, ours_logprobs, micro_batch=cfg.micro_batch, is_clip=0)), ours["update"])
    full = timed(functools.partial(ref_with, naive_logprobs, micro_batch=cfg.micro_batch))
    row(f"chunked log-probs ({cfg.chunk_tokens} tokens)", "reference", full, ours["reference"])
    full = timed(functools.partial(upd_with, naive_logprobs, micro_batch=cfg.micro_batch))
    row(f"chunked log-probs ({cfg.chunk_tokens} tokens)", "update", full, ours["update"])
    one_pass = timed(functools.partial(upd_with, ours_logprobs, micro_batch=N))
    row(f"micro-batches of {cfg.micro_batch}, not all {N}", "update", one_pass, ours["update"])
    if cfg.gradient_checkpointing:
        policy.gradient_checkpointing_disable()
        no_ckpt = timed(functools.partial(upd_with, ours_logprobs, micro_batch=cfg.micro_batch))
        policy.gradient_checkpointing_enable()
        row("gradient checkpointing", "update", no_ckpt, ours["update"])
    if not cfg.compile_decode:  # the compiled sampler's attention is its own (support/sampler.py: decode_attention)
        for model in {id(m): m for m in (policy, sampler.model)}.values():
            model.set_attn_implementation("eager")
        eager_rollout = timed(functools.partial(rollout, sample_ours))
        eager_update = timed(functools.partial(upd_with, ours_logprobs, micro_batch=cfg.micro_batch))
        for model in {id(m): m for m in (policy, sampler.model)}.values():
            model.set_attn_implementation("sdpa")
        row("SDPA attention, not eager", "rollout", eager_rollout, ours["rollout"])
        row("SDPA attention, not eager", "update", eager_update, ours["update"])


if __name__ == "__main__":
    try:
        main(parse_config(Config, PRESETS))
    except UsageError as e:
        sys.exit(f"error: {e}")
