"""
The GPU check: every GPU path of the project once, in about 8 minutes on one H100/H200, offline.

    bash .ci/gpu.sh          # on the GPU machine (installs carried wheels, then runs this file)
    bash .ci/gpu.sh --cpu    # the same checks at toy size on the CPU (tests/test_gpu_check.py)
    bash .ci/gpu.sh --only=sampler,compile   # some of them (names below)

Each check prints one line, `PASS name: figure`, `FAIL name: reason` or `SKIP name: reason`, in this
order; the lines also go to $OUT/gpu_check.txt ($OUT set) or out/gpu_check.txt, the commands' output
to gpu_check.log beside it. The exit status is 1 if any check failed. Each check has a time budget
(SCALES), and the GPU run stops starting checks at TOTAL_BUDGET_S, so it ends within 8 minutes.

 1. sampler       support.sampler.Sampler decodes with bf16 weights and a bf16 KV cache, and a left-padded row
                  gets what the same prompt gets alone
 2. update        reinforce.reinforce_update: fused Adam, KL exactly 0 at step 0, finite gradients, and
                  the sampler's copy equal to the stepped policy cast to bf16 at the next rollout
 3. resume        support/checkpoints.py's checkpoint restores Adam's state and the CUDA RNG state
 4. compile       Sampler(compile=True) against eager: greedy tokens, graphs, recompiles, speed
 5. memory        peak memory of a Qwen2.5-1.5B update at 64 full-length episodes
 6. tiny          stage1/stage2/evaluate --preset tiny on the device, and stage1 under torchrun (NCCL)
 7. bench         bench.py at reduced length
 8. smol          two Stage I steps of --preset smol on the SmolLM2 GGUF ($SCORE_GGUF or .gguf/)

Scale: the GPU checks use Qwen2.5-1.5B's architecture with random weights (built from a config: no
download); the CPU checks a tiny Qwen2 with the same grouped-query layout. Random weights are enough:
every check compares two paths over the same weights, or measures time and memory, which do not
depend on the weights' values. Only the smol check needs real weights, the GGUF.

Greedy decoding compared across two numerically different paths (padded vs alone, compiled vs eager)
agrees until the first near-tie, where a last-bit difference can pick the other token; after that
the two continuations are different texts. So tokens are compared up to and including the first
step where they differ, and there the two log-probs must still agree: both are the log-prob of the
top token of (nearly) the same distribution.
"""

import copy
import glob
import hashlib
import json
import math
import os
import random
import re
import resource
import shutil
import signal
import subprocess
import sys
import time
from types import SimpleNamespace

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)  # the project's flat scripts are its modules

import torch  # noqa: E402

TOTAL_BUDGET_S = 470  # the whole GPU run, setup included: 8 minutes with a margin
SMOL_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
SMOL_GGUF_SHA256 = "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"  # the joined file

# Qwen2.5-1.5B's architecture (its config.json), so sizes, kernels and memory are the real run's.
QWEN_1_5B = dict(hidden_size=1536, num_hidden_layers=28, num_attention_heads=12, num_key_value_heads=2,
                 intermediate_size=8960, vocab_size=151936, tie_word_embeddings=True, rope_theta=1e6,
                 rms_norm_eps=1e-6, max_position_embeddings=32768)
# The CPU's toy: the same grouped-query layout (2 query heads per KV head), and weights 10x the usual
# init, so that greedy decoding wanders over the vocabulary instead of repeating the last token (at
# init 0.02 a 2-layer model's output is its input embedding, which ties to its own logit).
QWEN_TOY = dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                intermediate_size=128, vocab_size=300, tie_word_embeddings=True, rope_theta=1e6,
                max_position_embeddings=512, initializer_range=0.2)

# Sizes per mode. GPU: the real run's shapes where they matter (memory: 64 episodes of 512 + 512 + 80
# + 512 tokens, micro-batches of 16, gradient checkpointing); CPU: the smallest that exercises each path.
SCALES = {
    "cuda": dict(model=QWEN_1_5B, pad_prompts=[5, 17, 33, 64, 9, 48, 24, 12], pad_new=32,
                 update_problems=2, k=4, update_new=24, glue=8, micro_batch=16, lr=1e-4,
                 compile_rows=64, compile_prompt=(32, 128), compile_new=128,
                 memory_episodes=64, memory_lengths=(512, 512, 80, 512), memory_micro_batch=16,
                 budgets=dict(sampler=40, update=40, resume=25, compile=170, memory=50, tiny=100, bench=90,
                              smol=100)),
    "cpu": dict(model=QWEN_TOY, pad_prompts=[3, 9, 5, 12], pad_new=8,
                update_problems=2, k=2, update_new=6, glue=4, micro_batch=4, lr=1e-3,
                compile_rows=3, compile_prompt=(3, 12), compile_new=8,
                memory_episodes=8, memory_lengths=(16, 8, 4, 8), memory_micro_batch=4,
                # On the CPU the budgets only stop a hang: generous, since a machine shared with other
                # jobs runs these several times slower (sampler and update took over 60 s each at load 4).
                budgets=dict(sampler=300, update=300, resume=300, compile=600, memory=300, tiny=900, bench=600,
                             smol=900)),
}


class Skip(Exception):
    """The check cannot run here (no GGUF, a CUDA-only part on the CPU); the message says why."""


class OverBudget(Exception):
    pass


def check(condition, reason):
    if not condition:
        raise AssertionError(reason)


# ----------------------------------------------------------------------------- models and episodes

class Run:
    """What the checks share: the device, the sizes, and the 1.5B (or toy) policy, built once."""

    def __init__(self, cpu):
        self.cpu = cpu
        self.device = torch.device("cpu" if cpu else "cuda")
        self.scale = SCALES[self.device.type]
        self.work = os.path.join(ROOT, "out", "gpu_check")
        self.state = None
        self.bf16_gap = None  # check_sampler's bf16-vs-fp32 log-prob gap: the rounding scale of bf16 decoding
        self.check_deadline = math.inf  # when the running check's time budget ends

    def left(self):
        """Seconds left in the running check's budget: what a subprocess it starts may use."""
        return max(1.0, self.check_deadline - time.time())

    def release(self):
        """Free the shared models before the checks that start processes of their own."""
        import gc
        self.state = None
        gc.collect()
        if not self.cpu:
            torch.cuda.empty_cache()

    def build_model(self, seed=0):
        """A randomly initialised Qwen2 (1.5B's dims on the GPU), float32 master weights as
        model.load_policy_and_reference keeps them."""
        from transformers import AutoModelForCausalLM, Qwen2Config
        config = Qwen2Config(**self.scale["model"])
        torch.manual_seed(seed)
        with self.device:  # initialise in place: 1.5B random weights on the host take a while
            model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
        return model

    def policy_state(self):
        """The training loop's objects as stage1.main makes them: policy, reference (the same weights,
        frozen), Adam, and the sampler. On the CPU the sampler is forced to a bf16 copy, the GPU's path."""
        if self.state is None:
            from reinforce import make_optimizer
            from support.sampler import Sampler
            policy = self.build_model()
            getattr(policy, "activation_checkpointing_enable", policy.gradient_checkpointing_enable)()
            policy.train()
            reference = copy.deepcopy(policy).eval().requires_grad_(False)
            optimizer = make_optimizer(policy, self.scale["lr"], self.device)
            sampler = Sampler(policy, dtype=torch.bfloat16 if self.cpu else None)
            self.state = SimpleNamespace(policy=policy, reference=reference, optimizer=optimizer, sampler=sampler)
        return self.state

    def autocast(self):
        """The update's numerics: bf16 autocast, as model.autocast gives on a GPU; on the CPU the same
        autocast by hand (the scripts run plain fp32 there), as tests/test_sampler.py does."""
        from contextlib import nullcontext
        return torch.autocast("cpu", dtype=torch.bfloat16) if self.cpu else nullcontext()

    def vocab(self):
        return self.scale["model"]["vocab_size"]


def random_prompts(lengths, vocab, seed):
    g = torch.Generator().manual_seed(seed)
    return [torch.randint(8, vocab, (n,), generator=g).tolist() for n in lengths]


def two_turn_episodes(prompts, y1, glue, y2, logps, k, device):
    """Episodes laid out as rollout.run_episodes lays them out ([x1, y1, glue, y2], right padded, one
    action mask per attempt, the sampler's log-probs at position j - 1), from token ids directly:
    the random-weight model has no tokenizer. Rewards are made up: half of every problem's samples
    right, so every problem carries a learning signal."""
    from rollout import Episodes, pad_rows
    contexts = [p + y + glue for p, y in zip(prompts, y1)]  # no end token: the random model never ends a turn
    rows = [c + y for c, y in zip(contexts, y2)]
    spans = [[(len(p), len(p) + len(a)), (len(c), len(c) + len(b))] for p, a, c, b in zip(prompts, y1, contexts, y2)]
    ids, attn, masks, sampler_logprobs = pad_rows(rows, spans, 0, n_turns=2, logprobs=logps)
    n = len(rows)
    # half of each problem's k samples right, a different half at each attempt
    reward = torch.tensor([[float((i % k < k // 2) == (turn == 0)) for i in range(n)] for turn in range(2)])
    return Episodes(input_ids=ids.to(device), attention_mask=attn.to(device), action_masks=masks.to(device),
                    rewards=reward.to(device), truncated=torch.zeros(2, n, dtype=torch.bool, device=device),
                    problem_index=torch.arange(n // k, device=device).repeat_interleave(k), responses=[[], []],
                    samples_per_problem=k,
                    sampler_logprobs=sampler_logprobs.to(device) if sampler_logprobs is not None else None)


def compare_greedy(tokens_a, logps_a, tokens_b, logps_b):
    """Two greedy decodings of the same prompts by numerically different paths. Returns (tokens
    compared, tokens equal, rows identical, max |log p_a - log p_b|) over each row's shared prefix and
    its first differing step (see the module docstring: a near-tie flips the token, not the log-prob)."""
    compared = equal = same_rows = 0
    worst = 0.0
    for ta, la, tb, lb in zip(tokens_a, logps_a, tokens_b, logps_b):
        n = min(len(ta), len(tb))
        first = next((j for j in range(n) if ta[j] != tb[j]), n)
        upto = min(first + 1, n)  # the first differing step is compared too
        compared += upto
        equal += first
        same_rows += ta == tb
        if upto:
            worst = max(worst, max(abs(a - b) for a, b in zip(la[:upto], lb[:upto])))
    return compared, equal, same_rows, worst


# ----------------------------------------------------------------------------- 1. sampler

def check_sampler(run):
    """bf16 decoding copy and bf16 static KV cache; each prompt decoded alone and left-padded in one
    batch with the others. The padded row must agree with the lone one as closely as bf16 decoding
    agrees with the fp32 policy on the same tokens (a padding bug, a wrong position or an unmasked pad,
    moves the log-probs far more than rounding does)."""
    from model import token_logprobs
    s, st = run.scale, run.policy_state()
    sampler, policy = st.sampler, st.policy
    check(sampler.model is not policy, "the sampler decodes with the fp32 policy itself, not a bf16 copy")
    dtypes = {p.dtype for p in sampler.model.parameters()}
    check(dtypes == {torch.bfloat16}, f"sampler weights are {dtypes}, not bf16")
    caches = []
    make_cache = sampler.new_cache
    sampler.new_cache = lambda batch, length: caches.append(make_cache(batch, length)) or caches[-1]
    prompts = random_prompts(s["pad_prompts"], run.vocab(), seed=1)
    settings = dict(max_new_tokens=s["pad_new"], temperature=0, end_ids=[-1], pad_id=0)  # no end: full length
    try:
        alone = [sampler.sample([p], **settings) for p in prompts]
        padded, _, padded_lp = sampler.sample(prompts, **settings, batch_size=len(prompts))
    finally:
        del sampler.new_cache  # back to the class's method
    layer = caches[-1][0].layers[0]  # new_cache returns (cache, length)
    kv_dtype = getattr(getattr(layer, "keys", None), "dtype", None)
    check(kv_dtype == torch.bfloat16, f"the KV cache holds {kv_dtype}, not bf16")
    alone_tokens, alone_lp = [a[0][0] for a in alone], [a[2][0] for a in alone]
    compared, equal, same_rows, worst = compare_greedy(alone_tokens, alone_lp, padded, padded_lp)
    # The noise floor: the lone rows' bf16 log-probs against the fp32 policy's on the same tokens.
    rounding = 0.0
    with torch.no_grad():
        for p, y, lp in zip(prompts, alone_tokens, alone_lp):
            ids = torch.tensor([p + y], device=run.device)
            fp32 = token_logprobs(policy, ids, torch.ones_like(ids))[0, len(p) - 1:].float().cpu()
            rounding = max(rounding, (torch.tensor(lp) - fp32).abs().max().item())
    run.bf16_gap = rounding
    tolerance = max(2 * rounding, 0.02)
    check(worst <= tolerance, f"a padded row's log-probs differ from the lone row's by {worst:.4f} nats, more than "
                              f"{tolerance:.4f} (2 x the bf16-vs-fp32 gap {rounding:.4f}): padding changes the result")
    return (f"bf16 weights, bf16 KV cache on {run.device}; {len(prompts)} rows padded to {max(s['pad_prompts'])} vs "
            f"alone: {same_rows}/{len(prompts)} rows identical, {equal}/{compared} greedy tokens equal before the "
            f"first near-tie, max |dlogp| {worst:.4f} <= {tolerance:.4f} nats (2 x bf16-vs-fp32 {rounding:.4f})")


# ----------------------------------------------------------------------------- 2. update

def check_update(run):
    """One reinforce.reinforce_update on episodes the sampler drew, as stage1.main runs it."""
    from reinforce import reinforce_update
    s, st = run.scale, run.policy_state()
    policy, sampler, optimizer = st.policy, st.sampler, st.optimizer
    fused = optimizer.defaults.get("fused")
    if not run.cpu:
        check(fused is True, f"Adam is not fused on {run.device} (fused={fused})")
    n, k, V = s["update_problems"] * s["k"], s["k"], run.vocab()
    lengths = [12 + 8 * i for i in range(s["update_problems"])]
    prompts = [p for p in random_prompts(lengths, V, seed=2) for _ in range(k)]  # each problem's k samples adjacent
    glue = random_prompts([s["glue"]], V, seed=3)[0]
    settings = dict(max_new_tokens=s["update_new"], temperature=1.0, end_ids=[-1], pad_id=0)
    torch.manual_seed(0)
    y1, _, lp1 = sampler.sample(prompts, **settings)
    y2, _, lp2 = sampler.sample([p + y + glue for p, y in zip(prompts, y1)], **settings)
    episodes = two_turn_episodes(prompts, y1, glue, y2, (lp1, lp2), k, run.device)
    cfg = SimpleNamespace(micro_batch=s["micro_batch"], baseline="rloo", grad_clip=1.0, is_clip=2.0)
    task_rewards = torch.stack([torch.zeros_like(episodes.rewards[1]), episodes.rewards[1]])  # Stage I's
    kl_coefs = torch.tensor([0.1, 0.01], device=run.device)
    with run.autocast():
        stats = reinforce_update(policy, st.reference, optimizer, episodes, task_rewards, kl_coefs, cfg)
    check(stats["kl"] == [0.0, 0.0], f"KL at step 0 is {stats['kl']}, not exactly 0: the reference's numerics differ")
    check(math.isfinite(stats["grad_norm"]) and stats["grad_norm"] > 0, f"gradient norm {stats['grad_norm']}")
    check(all(torch.isfinite(p).all() for p in policy.parameters()), "non-finite weights after the step")
    # The copy is stale until the next rollout refreshes it (the control: the step moved bf16 values) ...
    with torch.no_grad():
        stale = sum(int((d != p.to(torch.bfloat16)).sum()) for d, p in zip(sampler.model.parameters(),
                                                                          policy.parameters()))
    check(stale > 0, "the step changed no bf16 value, so the refresh below would prove nothing")
    sampler.sample(prompts[:1], **{**settings, "max_new_tokens": 1})  # ... and the next rollout refreshes it
    with torch.no_grad():
        after = sum(int((d != p.to(torch.bfloat16)).sum()) for d, p in zip(sampler.model.parameters(),
                                                                          policy.parameters()))
    check(after == 0, f"after the next rollout {after} sampler weights still differ from the policy cast to bf16")
    adam = "fused Adam" if fused else "Adam (fused is CUDA-only: SKIP on the CPU)"
    return (f"{adam}; {n} episodes, micro-batch {cfg.micro_batch}: KL at step 0 {stats['kl']} (exact), grad norm "
            f"{stats['grad_norm']:.3g}, mismatch {stats.get('mismatch', float('nan')):.4f}/token; sampler copy: "
            f"{stale:,} bf16 values stale after the step, 0 after the next rollout")


# ----------------------------------------------------------------------------- 3. resume

def check_resume(run):
    """A tiny model, two real updates so Adam has state, a checkpoint written and read back with
    support/checkpoints.py's helpers, restored into a fresh optimizer: Adam's tensors and the RNG streams match."""
    from reinforce import make_optimizer
    from support.checkpoints import load_training_state, restore_training_state, save_checkpoint, training_state
    from support.tiny import build_tiny_model
    model, tokenizer = build_tiny_model(seed=0, hidden_size=32)
    model.to(run.device)
    optimizer = make_optimizer(model, 1e-3, run.device)
    for _ in range(2):
        ids = torch.randint(4, 90, (4, 10), device=run.device)
        model(input_ids=ids, labels=ids).loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    rng = random.Random(0)
    rng.random()
    torch.manual_seed(123)
    if not run.cpu:
        torch.cuda.manual_seed(456)
    path = os.path.join(run.work, "resume_ckpt")
    state = training_state(7, model, optimizer, rng, run.device)
    save_checkpoint(model, tokenizer, {"stage": "gpu_check"}, path, state)
    expected = (rng.random(), torch.rand(3).tolist(), None if run.cpu else torch.rand(3, device=run.device).tolist())
    fresh = make_optimizer(model, 1e-3, run.device)
    rng2 = random.Random(99)
    torch.manual_seed(0)
    if not run.cpu:
        torch.rand(5, device=run.device)  # move the CUDA stream away from the saved state
    step = restore_training_state(load_training_state(path), model, fresh, rng2, run.device, [])
    got = (rng2.random(), torch.rand(3).tolist(), None if run.cpu else torch.rand(3, device=run.device).tolist())
    check(step == 7, f"restored step {step}, saved 7")
    saved, restored = optimizer.state_dict()["state"], fresh.state_dict()["state"]
    check(saved.keys() == restored.keys() and len(saved) > 0, "Adam's per-parameter state is missing after restore")
    n_tensors = 0
    for key in saved:
        for name, value in saved[key].items():
            other = restored[key][name]
            check(torch.equal(value.cpu(), other.cpu()), f"Adam's {name} of parameter {key} differs after restore")
            check(value.device == other.device, f"Adam's {name} came back on {other.device}, not {value.device}")
            n_tensors += 1
    check(got[0] == expected[0], "Python's RNG (problem order) is not restored")
    check(got[1] == expected[1], "torch's CPU RNG is not restored")
    check(got[2] == expected[2], "the CUDA RNG (sampling) is not restored")
    cuda = "CUDA RNG restored" if not run.cpu else "CUDA RNG: SKIP on the CPU (no CUDA state)"
    return (f"step 7, {n_tensors} Adam state tensors bit-equal ({'fused' if fresh.defaults.get('fused') else 'plain'}"
            f" Adam), Python and torch RNG restored, {cuda}")


# ----------------------------------------------------------------------------- 4. compile

def compile_counters():
    """Dynamo's own counts. Each compilation of a frame counts once in frames/total, so with one
    compiled function (the decode step) and no graph breaks, recompiles = frames - 1."""
    from torch._dynamo.utils import counters
    frames = counters["frames"].get("total", 0)
    return dict(graphs=counters["stats"].get("unique_graphs", 0), breaks=sum(counters["graph_break"].values()),
                recompiles=max(0, frames - 1), cudagraph_skips=counters["inductor"].get("cudagraph_skips", 0))


def check_compile(run):
    """Sampler(compile=True) and the eager sampler, greedy, on the same prompts: first compiled call
    (compile + capture), then two timed calls, the second with other prompt lengths that fall in the
    same cache-length bucket (support.sampler.Sampler.new_cache rounds to 256), so it should reuse the graph."""
    import torch._dynamo
    from support.sampler import Sampler
    s, st = run.scale, run.policy_state()
    torch._dynamo.reset()
    from torch._dynamo.utils import counters
    counters.clear()
    lo, hi = s["compile_prompt"]
    lengths = torch.linspace(lo, hi, s["compile_rows"]).round().int().tolist()
    prompts = random_prompts(lengths, run.vocab(), seed=4)
    shorter = [p[:max(1, len(p) - 3)] for p in prompts]
    settings = dict(max_new_tokens=s["compile_new"], temperature=0, end_ids=[-1], pad_id=0, batch_size=64)
    steps = s["compile_new"] * math.ceil(len(prompts) / 64)

    def sync():
        if not run.cpu:
            torch.cuda.synchronize()

    def timed(fn):
        sync()
        t = time.perf_counter()
        out = fn()
        sync()
        return time.perf_counter() - t, out

    eager = st.sampler if not run.cpu else Sampler(st.policy, dtype=None)  # CPU: fp32, as compile's copy is
    real_compile = torch.compile
    if run.cpu:
        # Inductor's C++ code generation takes ~2 minutes on 2 cores; dynamo's tracing, guards, graphs and
        # recompiles (what this check counts) are the same with its eager backend. Inductor itself runs on
        # the CPU in tests/test_sampler.py's slow tier.
        torch.compile = lambda fn, mode=None, **kwargs: real_compile(fn, backend="eager", **kwargs)
    try:
        compiled = Sampler(st.policy, dtype=None, compile=True)
    finally:
        torch.compile = real_compile
    try:
        eager.sample(prompts[:1], **{**settings, "max_new_tokens": 2})  # warm the eager path
        t_eager, (ref_tokens, _, ref_lp) = timed(lambda: eager.sample(prompts, **settings))
        t_first, _ = timed(lambda: compiled.sample(prompts, **settings))
        t_compiled, (tokens, _, lp) = timed(lambda: compiled.sample(prompts, **settings))
        graphs_before = compile_counters()["graphs"]
        timed(lambda: compiled.sample(shorter, **settings))
        c = compile_counters()
    finally:  # the compiled copy and its CUDA graphs' memory go before the memory check
        del compiled
        torch._dynamo.reset()
        if not run.cpu:
            torch.cuda.empty_cache()
    compared, equal, same_rows, worst = compare_greedy(ref_tokens, ref_lp, tokens, lp)
    # Compiled kernels round differently from eager ones: allowed the bf16 rounding scale, as padding is.
    tolerance = max(2 * run.bf16_gap, 0.02) if run.bf16_gap is not None else 0.1
    check(worst <= tolerance, f"compiled log-probs differ from eager by {worst:.4f} nats > {tolerance:.4f}")
    check(c["graphs"] == graphs_before, f"prompts in the same cache-length bucket compiled again "
                                        f"({graphs_before} -> {c['graphs']} graphs)")
    graphs = "inductor + CUDA graphs" if not run.cpu else "dynamo, eager backend (inductor, CUDA graphs: SKIP on the CPU)"
    return (f"{graphs}; {len(prompts)} rows x {s['compile_new']} new tokens: {same_rows}/{len(prompts)} rows identical "
            f"to eager, {equal}/{compared} tokens equal before the first near-tie, max |dlogp| {worst:.4f} <= "
            f"{tolerance:.4f}; "
            f"{c['graphs']} graph(s), {c['recompiles']} recompile(s), {c['breaks']} graph breaks, "
            f"{c['cudagraph_skips']} cudagraph skips; compile + capture {t_first - t_compiled:.1f} s; decode "
            f"{1000 * t_eager / steps:.1f} ms/step eager, {1000 * t_compiled / steps:.1f} ms/step compiled "
            f"({t_eager / t_compiled:.2f}x)")


# ----------------------------------------------------------------------------- 5. memory

def check_memory(run):
    """One update at 64 full-length episodes (x1 512, y1 512, glue 80, y2 512 tokens) with everything a
    Stage I step keeps alive (fp32 policy, Adam's two moments, fp32 reference, bf16 sampler copy),
    after a first update created Adam's state. GPU: torch.cuda.max_memory_allocated; CPU: the process's
    peak resident memory, the nearest equivalent (it includes Python and libraries)."""
    from reinforce import reinforce_update
    s, st = run.scale, run.policy_state()
    n, k = s["memory_episodes"], s["k"]
    x1, y, glue_len, y2 = s["memory_lengths"]
    V = run.vocab()
    g = torch.Generator().manual_seed(5)
    prompts = [torch.randint(8, V, (x1,), generator=g).tolist() for _ in range(n)]
    y1s = [torch.randint(8, V, (y,), generator=g).tolist() for _ in range(n)]
    y2s = [torch.randint(8, V, (y2,), generator=g).tolist() for _ in range(n)]
    glue = torch.randint(8, V, (glue_len,), generator=g).tolist()
    episodes = two_turn_episodes(prompts, y1s, glue, y2s, None, k, run.device)
    cfg = SimpleNamespace(micro_batch=s["memory_micro_batch"], baseline="rloo", grad_clip=1.0, is_clip=2.0)
    task_rewards = torch.stack([torch.zeros_like(episodes.rewards[1]), episodes.rewards[1]])
    kl_coefs = torch.tensor([0.1, 0.01], device=run.device)
    tokens = int(episodes.attention_mask.sum())
    if run.cpu:
        with run.autocast():
            t = time.perf_counter()
            reinforce_update(st.policy, st.reference, st.optimizer, episodes, task_rewards, kl_coefs, cfg)
            seconds = time.perf_counter() - t
        peak_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / 1e9  # Linux: KiB
        return (f"{n} episodes x {episodes.input_ids.shape[1]} tokens: update {seconds:.2f} s; process peak RSS "
                f"{peak_rss:.2f} GB (max_memory_allocated is CUDA-only: SKIP on the CPU)")
    if not st.optimizer.state:  # Adam's moments exist after a first step (check 2's, or this warm-up)
        reinforce_update(st.policy, st.reference, st.optimizer, episodes, task_rewards, kl_coefs, cfg)
    torch.cuda.synchronize()
    torch.cuda.empty_cache()
    at_rest = torch.cuda.memory_allocated()
    torch.cuda.reset_peak_memory_stats()
    t = time.perf_counter()
    reinforce_update(st.policy, st.reference, st.optimizer, episodes, task_rewards, kl_coefs, cfg)
    torch.cuda.synchronize()
    seconds = time.perf_counter() - t
    peak = torch.cuda.max_memory_allocated()
    card = torch.cuda.get_device_properties(run.device).total_memory
    params = sum(p.numel() for p in st.policy.parameters())
    state_bytes = params * (4 + 8 + 4 + 2)  # fp32 policy, Adam's 2 fp32 moments, fp32 reference, bf16 copy
    check(peak < 80e9, f"peak {peak / 1e9:.1f} GB does not fit an 80 GB card")
    return (f"Qwen2.5-1.5B, {n} episodes x {episodes.input_ids.shape[1]} tokens ({tokens:,} real), micro-batch "
            f"{cfg.micro_batch}, gradient checkpointing: peak {peak / 1e9:.1f} GB allocated, {(peak - at_rest) / 1e9:.1f} "
            f"GB above the {at_rest / 1e9:.1f} GB at rest (policy, Adam, reference and bf16 copy: "
            f"{state_bytes / 1e9:.1f} GB for {params / 1e9:.2f}B parameters); update {seconds:.1f} s "
            f"({tokens / seconds:,.0f} tokens/s); card {card / 1e9:.0f} GB")


# ----------------------------------------------------------------------------- the scripts, as subprocesses

def run_cli(args, log, timeout, env=None):
    """Run a project command in its own process group (torchrun's workers included), its output to
    `log`; on a timeout or an interruption the whole group is killed. Returns (returncode, output)."""
    with open(log, "a") as f:
        f.write(f"\n$ {' '.join(args)}\n")
    started = time.perf_counter()
    proc = subprocess.Popen(args, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env={**os.environ, **(env or {})}, start_new_session=True)
    try:
        out, _ = proc.communicate(timeout=timeout)
    except BaseException:
        # SIGTERM first: torchrun passes it on to its workers, which run in a session of their own.
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        raise
    with open(log, "a") as f:
        f.write(f"{out}[exit {proc.returncode} after {time.perf_counter() - started:.1f} s]\n")
    return proc.returncode, out


def last_error(output):
    lines = [line for line in output.splitlines() if line.strip()]
    errors = [line for line in lines if re.search(r"Error|error:|Exception", line)]
    return (errors or lines or ["no output"])[-1].strip()[:300]


def cli_ok(run, args, env=None):
    """Run `python ARGS` within what is left of the check's budget; its output, or a FAIL naming its error."""
    code, out = run_cli([sys.executable, *args], run.log, run.left(), env)
    check(code == 0, f"`{' '.join(args[:3])} ...` exited {code}: {last_error(out)}")
    return out


def read_log(path):
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


def check_tiny(run):
    """The tutorial pipeline on the device with few steps, then Stage I under torchrun with one
    process: NCCL on a GPU, gloo on the CPU (support.distributed.init_distributed chooses). On the CPU, Stage I
    starts from a tiny base saved here without the preset's 200-step supervised warm-up (minutes on a
    busy 2-core CPU; tests/test_learning.py runs it); on the GPU it is `--preset tiny` as the README
    has it. Under torchrun Stage I starts from the pipeline's saved base, the same code minus the warm-up."""
    run.release()
    dev = str(run.device)
    out, ddp = os.path.join(run.work, "tiny"), os.path.join(run.work, "tiny_torchrun")
    base = os.path.join(out, "base")
    few = ["--device", dev, "--out_dir", out, "--steps", "2", "--save_every", "2"]
    t = time.perf_counter()
    if run.cpu:
        from support.checkpoints import save_checkpoint
        from support.tiny import build_tiny_model
        model, tokenizer = build_tiny_model(seed=0)
        save_checkpoint(model, tokenizer, {"stage": "base", "base_model": "tiny"}, base)
        cli_ok(run, ["stage1.py", "--preset", "tiny", "--model", base, *few])
    else:
        cli_ok(run, ["stage1.py", "--preset", "tiny", *few])
    cli_ok(run, ["stage2.py", "--preset", "tiny", *few])
    table = cli_ok(run, ["evaluate.py", "--preset", "tiny", "--device", dev, "--out_dir", out, "--limit", "16"])
    check("| stage2 |" in table, "evaluate.py printed no stage2 row")
    steps = [r["step"] for r in read_log(os.path.join(out, "logs", "stage2.jsonl"))]
    check(steps == [1, 2], f"stage2 logged steps {steps}, not [1, 2]")
    t_pipeline = time.perf_counter() - t
    torchrun = ["-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "1", "stage1.py", "--preset", "tiny",
                "--model", base, "--device", dev, "--out_dir", ddp, "--steps", "1", "--save_every", "1"]
    cli_ok(run, torchrun)
    config = json.load(open(os.path.join(ddp, "stage1", "score_config.json")))
    check(config.get("world_size") == 1, f"torchrun's checkpoint says world_size {config.get('world_size')}")
    # One process makes no collective call in the stages (support/distributed.py skips them at world size 1), so
    # the process group's backend is checked by a probe: init_distributed, then an all-reduce.
    probed = cli_ok(run, ["-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "1", ".ci/gpu_check.py",
                          "--probe", dev])
    found = re.search(r"probe: backend (\w+), all_reduce (\w+)", probed)
    backend = found.group(1) if found else "?"
    check(found and found.group(2) == "ok", f"the torchrun probe failed: {last_error(probed)}")
    check(backend == ("gloo" if run.cpu else "nccl"), f"torchrun's process group uses {backend}")
    warm = "from a saved tiny base, no warm-up" if run.cpu else "with the preset's warm-up"
    return (f"stage1 ({warm}), stage2 (2 steps each) and evaluate (16 problems) on {dev} in {t_pipeline:.0f} s; "
            f"torchrun --nproc_per_node 1: stage1 wrote its checkpoint (world_size 1), an all-reduce over {backend} "
            f"through support.distributed.init_distributed")


def check_bench(run):
    """bench.py end to end at reduced length (the ablation rows left out)."""
    if run.cpu:
        args = ["bench.py", "--preset", "cpu", "--vocab_size", "4096", "--batch", "4", "--gen_batch", "2",
                "--micro_batch", "2", "--baseline_micro_batch", "2", "--prompt_tokens", "8", "--new_tokens", "4",
                "--instruction_tokens", "4", "--techniques", "false"]
    else:
        args = ["bench.py", "--prompt_tokens", "128", "--new_tokens", "64", "--instruction_tokens", "16",
                "--techniques", "false"]
    t = time.perf_counter()
    out = cli_ok(run, args)
    check("Stage I step on the" in out, "bench.py printed no Stage I table")

    def ours(label):
        m = re.search(rf"^{re.escape(label)}\s*\|\s*(\S+)", out, re.M)
        return m.group(1) if m else "?"
    kl = re.search(r"per token: ours (\S+)", out)
    return (f"`{' '.join(args)}` in {time.perf_counter() - t:.0f} s: ours {ours('rollout: sampled tokens/s')} sampled "
            f"tokens/s, {ours('rollout: % of bandwidth roofline')} % of the bandwidth roofline, update "
            f"{ours('update: % MFU')} % MFU; step-0 KL {kl.group(1) if kl else '?'}")


def find_gguf(run):
    """$SCORE_GGUF (a .gguf file, or a folder to look in), else .gguf/: a SmolLM2 .gguf file, or its
    parts *.part00, *.part01, ... joined into out/gpu_check/ and checked against the known sha256."""
    given = os.environ.get("SCORE_GGUF", "")
    if given.endswith(".gguf") and os.path.isfile(given):
        return given
    folder = given or os.path.join(ROOT, ".gguf")
    if not os.path.isdir(folder):
        raise Skip(f"no GGUF: {folder} does not exist (set SCORE_GGUF, or put {SMOL_GGUF} or its parts in .gguf/)")
    whole = sorted(glob.glob(os.path.join(folder, "*.gguf")))
    if whole:
        return whole[0]
    parts = sorted(glob.glob(os.path.join(folder, "*.gguf.part*")))
    if not parts:
        raise Skip(f"no *.gguf or *.gguf.partNN file in {folder}")
    names = [os.path.basename(p) for p in parts]
    if not names[0].endswith(".part00"):
        raise Skip(f"GGUF parts {names} start without part00: a part did not arrive")
    joined = os.path.join(run.work, os.path.basename(parts[0])[:-len(".part00")])
    digest = hashlib.sha256()
    with open(joined, "wb") as out:
        for part in parts:
            with open(part, "rb") as f:
                for block in iter(lambda: f.read(1 << 20), b""):
                    out.write(block)
                    digest.update(block)
    if os.path.basename(joined) == SMOL_GGUF and digest.hexdigest() != SMOL_GGUF_SHA256:
        raise Skip(f"{SMOL_GGUF} joined from {names} has the wrong sha256 ({digest.hexdigest()[:12]}...): "
                   f"a part is missing or damaged")
    return joined


def check_smol(run):
    """Two Stage I steps of --preset smol on the real SmolLM2 weights (CPU: 2 problems a step)."""
    gguf = find_gguf(run)
    out = os.path.join(run.work, "smol")
    args = ["stage1.py", "--preset", "smol", "--model", gguf, "--device", str(run.device), "--out_dir", out,
            "--steps", "2", "--save_every", "2"]
    if run.cpu:
        args += ["--problems_per_step", "2", "--micro_batch", "8"]
    t = time.perf_counter()
    cli_ok(run, args)
    log = read_log(os.path.join(out, "logs", "stage1.jsonl"))
    check([r["step"] for r in log] == [1, 2], f"logged steps {[r['step'] for r in log]}, not [1, 2]")
    check(all(math.isfinite(r["loss"]) and math.isfinite(r["grad_norm"]) for r in log), "a non-finite loss or grad norm")
    last = log[-1]
    return (f"{os.path.basename(gguf)}, 2 steps in {time.perf_counter() - t:.0f} s (load included): step 2 rewards "
            f"{last['reward_t1']:.2f}/{last['reward_t2']:.2f}, kl_t1 {last['kl_t1']:.4f}, mismatch "
            f"{last.get('mismatch', float('nan')):.4f}/token, rollout {last['rollout']:.1f} s, update "
            f"{last['update']:.1f} s")


CHECKS = [("sampler", check_sampler), ("update", check_update), ("resume", check_resume),
          ("compile", check_compile), ("memory", check_memory), ("tiny", check_tiny), ("bench", check_bench),
          ("smol", check_smol)]


def probe(device):
    """Run under torchrun by check_tiny: join the process group as the stages do, all-reduce a tensor."""
    import torch.distributed as dist
    from support.distributed import init_distributed
    rank, size, device = init_distributed(device)
    x = torch.full((4,), float(rank + 1), device=device)
    dist.all_reduce(x)
    ok = torch.equal(x.cpu(), torch.full((4,), float(size * (size + 1) // 2)))
    print(f"probe: backend {dist.get_backend()}, all_reduce {'ok' if ok else 'wrong'}, world size {size}", flush=True)
    dist.destroy_process_group()


# ----------------------------------------------------------------------------- the run

def main(argv):
    cpu = "--cpu" in argv
    only = next((a.split("=", 1)[1].split(",") for a in argv if a.startswith("--only=")), None)
    started = time.time()
    run = Run(cpu)
    if not cpu and not torch.cuda.is_available():
        sys.exit("error: no CUDA device; run `bash .ci/gpu.sh --cpu` for the CPU version of these checks")
    shutil.rmtree(run.work, ignore_errors=True)
    os.makedirs(run.work)
    results_dir = os.environ.get("OUT") or os.path.join(ROOT, "out")
    os.makedirs(results_dir, exist_ok=True)
    results = os.path.join(results_dir, "gpu_check.txt")
    run.log = os.path.join(results_dir, "gpu_check.log")  # every command's output, for a FAIL's details
    open(run.log, "w").close()
    total = TOTAL_BUDGET_S if not cpu else sum(run.scale["budgets"].values())
    deadline = started + total
    lines = []

    def report(line):
        print(line, flush=True)
        lines.append(line)
        with open(results, "w") as f:
            f.write("\n".join(lines) + "\n")

    device_name = torch.cuda.get_device_name(0) if not cpu else "CPU"
    import transformers
    report(f"gpu_check on {device_name}: torch {torch.__version__}, transformers {transformers.__version__}, "
           f"python {sys.version.split()[0]}")

    def on_alarm(signum, frame):
        raise OverBudget()
    signal.signal(signal.SIGALRM, on_alarm)
    failed = False
    for name, fn in CHECKS:
        if only and name not in only:
            continue
        budget = min(run.scale["budgets"][name], deadline - time.time())
        if budget < 5:
            report(f"FAIL {name}: not run, the {total} s budget of the whole check was spent")
            failed = True
            continue
        run.check_deadline = time.time() + budget
        signal.alarm(int(math.ceil(budget)))
        t = time.time()
        try:
            line = f"PASS {name}: {fn(run)}"
        except Skip as e:
            line = f"SKIP {name}: {e}"
        except OverBudget:
            line = f"FAIL {name}: over its time budget of {budget:.0f} s"
        except Exception as e:  # the check's own assertion, or anything the code under check raised
            reason = str(e).splitlines()[0] if str(e) else ""
            line = f"FAIL {name}: {type(e).__name__ if not isinstance(e, AssertionError) else ''}" \
                   f"{': ' if reason and not isinstance(e, AssertionError) else ''}{reason}"
        finally:
            signal.alarm(0)
        failed |= line.startswith("FAIL")
        report(f"{line} [{time.time() - t:.1f} s]")
    report(f"total {time.time() - started:.0f} s ({'CPU' if cpu else 'GPU'} budget {total} s); "
           f"{'FAILED' if failed else 'all passed or skipped'}; results in {results}, logs in {run.log}")
    return 1 if failed else 0


if __name__ == "__main__":
    if sys.argv[1:2] == ["--probe"]:
        probe(sys.argv[2])
    else:
        sys.exit(main(sys.argv[1:]))
