"""
How bench.py measures: time, peak memory, and the hardware's own limits, measured in the same run.

    PeakMemory            the CPU's stand-in for torch.cuda.max_memory_allocated (a dispatch mode)
    measure(fn, device)   (fastest seconds of `repeats` calls, peak bytes beyond the start, fn's result)
    logprob_memory        peak bytes of one micro-batch's log-prob work in the update
    print_logprob_memory  the table of it at two micro-batch sizes, ours against a full log-softmax
    print_hardware_rates  tokens/s, decode steps/s, % of the bandwidth roofline and MFU of each phase
    device_bandwidth      bytes/s of a large copy: the decode roofline's denominator
    device_matmul_rate    FLOP/s of large matmuls in the compute dtype: the MFU denominator
    forward_flops, decode_bytes   what a forward pass must compute, what a decode step must read
    build_config, build_models    random-weight policy and reference of an architecture (ARCHITECTURES)

The definitions behind bench.py's columns:
  roofline %  (bytes a decode step must read: every matmul weight once + the KV cache of the real
              tokens, summed over the steps) / measured bandwidth / measured time. Prefill is inside
              the time but not the bytes, so the percentage is a lower bound.
  MFU         model FLOPs / time / measured matmul rate. Model FLOPs per real token: 2 per weight of
              every matmul (lm head included) + causal attention 2 x 2 x position x d per layer;
              backward = 2 x forward. Padding and recomputation (gradient checkpointing, the chunked
              log-prob's second head pass) do not count: MFU, not hardware utilization.
  peak MB     the largest amount of memory a phase allocated beyond what existed when it began
              (weights and Adam state existed). GPU: torch.cuda.max_memory_allocated. CPU: there is no
              allocator counter, so a second, untimed call runs under PeakMemory, which adds up the
              storage of every tensor an aten op returns and subtracts it when freed.
The denominators use the same thread count as the benchmark.
"""

import functools
import gc
import math
import time
import weakref

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves

from model import autocast
from support.settings import UsageError


# ----------------------------------------------------------------------------- random-weight models

# Architectures built in-process with random weights, so the benchmark needs no download.
ARCHITECTURES = {
    "qwen2.5-1.5b": dict(model_type="qwen2", hidden_size=1536, num_hidden_layers=28, num_attention_heads=12,
                         num_key_value_heads=2, intermediate_size=8960, vocab_size=151936, tie_word_embeddings=True,
                         rope_theta=1e6, rms_norm_eps=1e-6, max_position_embeddings=32768),
    # Qwen's vocabulary on a tiny body: the lm head dominates, as it does for log-prob memory.
    "tiny": dict(model_type="qwen2", hidden_size=64, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                 intermediate_size=256, vocab_size=151936, tie_word_embeddings=True, rope_theta=1e6,
                 max_position_embeddings=4096),
    # A wider, deeper body for the CPU (use with a small --vocab_size): activations, not logits, dominate,
    # which is where gradient checkpointing and micro-batching act.
    "small": dict(model_type="qwen2", hidden_size=256, num_hidden_layers=8, num_attention_heads=4,
                  num_key_value_heads=2, intermediate_size=1024, vocab_size=151936, tie_word_embeddings=True,
                  rope_theta=1e6, max_position_embeddings=4096),
}


def build_config(name, vocab_size=0):
    from transformers import AutoConfig
    if name in ARCHITECTURES:
        kwargs = dict(ARCHITECTURES[name])
        config = AutoConfig.for_model(kwargs.pop("model_type"), **kwargs)
    else:
        try:
            config = AutoConfig.from_pretrained(name)
        except OSError as e:
            raise UsageError(f"no config for {name!r} ({str(e).splitlines()[0]}); try qwen2.5-1.5b or tiny") from None
    if vocab_size:
        config.vocab_size = vocab_size
    return config


def build_models(config, device, gradient_checkpointing, seed=0):
    """Policy and frozen reference as model.load_policy_and_reference makes them: both float32
    (bf16 autocast on a GPU), the reference with the policy's weights, as at the start of Stage I."""
    from transformers import AutoModelForCausalLM
    torch.manual_seed(seed)
    with torch.device(device):  # initialize in place: 1.5B random weights on a CPU take a while
        policy = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
        reference = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    reference.load_state_dict(policy.state_dict())
    policy.train()
    reference.eval().requires_grad_(False)
    if gradient_checkpointing:
        policy.gradient_checkpointing_enable()
    return policy, reference


# ----------------------------------------------------------------------------- measuring

class PeakMemory(TorchDispatchMode):
    """The CPU's stand-in for torch.cuda.max_memory_allocated: peak bytes of tensor storage created
    while active and still alive. Every aten op's outputs pass through here (forward, backward and
    checkpoint recomputation alike); a storage is counted once, when first returned, and released
    when Python frees it (storages keep one Python object for life, so a weakref callback fires
    exactly then). Storages made before entering (weights, Adam state) are not counted, nor is a
    kernel's private scratch space."""

    def __init__(self):
        super().__init__()
        self.live, self.peak, self.known = 0, 0, {}

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        inputs = {id(t.untyped_storage()) for t in tree_leaves((args, kwargs)) if isinstance(t, torch.Tensor)}
        out = func(*args, **(kwargs or {}))
        for t in tree_leaves(out):
            if not isinstance(t, torch.Tensor) or t.device.type == "meta":
                continue
            storage = t.untyped_storage()
            key = id(storage)
            if key in self.known:
                continue
            # A view or in-place result of a tensor we have never seen shares storage made before we
            # started (a weight): remember it with 0 bytes so it is never counted.
            nbytes = 0 if key in inputs else storage.nbytes()
            self.known[key] = weakref.ref(storage, functools.partial(self._free, key, nbytes))
            self.live += nbytes
            self.peak = max(self.peak, self.live)
        return out

    def _free(self, key, nbytes, _ref):
        self.live -= nbytes
        self.known.pop(key, None)


def measure(fn, device, warmup=0, timed=True, repeats=1):
    """(seconds, peak bytes beyond what was allocated at the start, fn's result): the fastest of
    `repeats` calls. A GPU out-of-memory error becomes (nan, nan, None): a row saying OOM, not a crash."""
    gc.collect()
    if device.type == "cuda":
        try:
            for _ in range(warmup):
                fn()
            torch.cuda.empty_cache()
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            start, seconds = torch.cuda.memory_allocated(), math.inf
            for _ in range(repeats):
                t0 = time.perf_counter()
                out = fn()
                torch.cuda.synchronize()
                seconds = min(seconds, time.perf_counter() - t0)
            return seconds, torch.cuda.max_memory_allocated() - start, out
        except torch.OutOfMemoryError:
            gc.collect()
            torch.cuda.empty_cache()
            return math.nan, math.nan, None
    for _ in range(warmup):
        fn()
    seconds, out = (math.inf, None) if timed else (math.nan, None)
    for _ in range(repeats if timed else 0):
        t0 = time.perf_counter()
        out = fn()
        seconds = min(seconds, time.perf_counter() - t0)
        gc.collect()
    with PeakMemory() as memory:  # a second call: tracking every op would distort the timing
        tracked = fn()
    return seconds, memory.peak, out if timed else tracked


def logprob_memory(logprobs, policy, reference, input_ids, attention_mask):
    """Peak bytes of one micro-batch's log-prob work in the update: the reference's log-probs (no
    graph), the policy's (with graph), the k1 KL between them, and backward through a loss of both.
    The claim to check: this grows with batch x tokens, not batch x tokens x vocabulary."""
    device = input_ids.device

    def run():
        with torch.no_grad(), autocast(device):
            ref_logp = logprobs(reference, input_ids, attention_mask)  # (b, T-1)
        with autocast(device):
            logp = logprobs(policy, input_ids, attention_mask)  # (b, T-1), with graph
        kl = logp.detach() - ref_logp  # (b, T-1): the KL never needs more than a number per token
        try:
            (-(logp * (1 - 0.01 * kl))).sum().backward()
        finally:
            policy.zero_grad(set_to_none=True)

    return measure(run, device, timed=False)[1]


def print_logprob_memory(ours, naive, policy, reference, episodes, sizes):
    """bench.py's log-prob memory table: logprob_memory of the first n rows of `episodes` for each n in
    `sizes`, with `ours` and `naive` as the log-prob function, and the growth per extra token between
    the two sizes against one vocabulary row of floats."""
    V = policy.config.vocab_size
    scaling = []
    for n_rows in sizes:
        ids, mask = episodes.input_ids[:n_rows], episodes.attention_mask[:n_rows]
        n_tokens = ids.shape[0] * (ids.shape[1] - 1)
        scaling.append((n_tokens, logprob_memory(ours, policy, reference, ids, mask),
                        logprob_memory(naive, policy, reference, ids, mask)))
    print(f"\nlog-prob memory (reference + policy + KL + backward) vs tokens in a micro-batch, vocab {V:,}")
    for n_tokens, m_ours, m_naive in scaling:
        print(f"{n_tokens:>7,} tokens | ours {mb(m_ours):>6} MB | full log-softmax {mb(m_naive):>6} MB | "
              f"one (B, T, V) float32 tensor {n_tokens * V * 4 / 2 ** 20:,.0f} MB")
    if len(scaling) == 2 and not any(math.isnan(x) for row in scaling for x in row):
        (n0, o0, f0), (n1, o1, f1) = scaling
        print(f"growth per extra token: ours {(o1 - o0) / (n1 - n0) / 1024:,.1f} KiB, full log-softmax "
              f"{(f1 - f0) / (n1 - n0) / 1024:,.1f} KiB; V x 4 bytes = {V * 4 / 1024:,.1f} KiB", flush=True)


def print_hardware_rates(results, policy, attention_mask, first_lengths, new_tokens, instruction_tokens, gen_batch,
                         value_bytes, bandwidth, matmul_rate):
    """bench.py's table against the hardware: tokens/s, decode steps/s, % of the bandwidth roofline and
    MFU of each side's phases. results: {name: {"rollout": (s, bytes), "reference": ..., "update": ...}};
    attention_mask: ours' episodes (the real tokens); first_lengths: the prompts' lengths."""
    N = len(first_lengths)
    tokens, sampled = int(attention_mask.sum()), N * 2 * new_tokens
    second = [n + new_tokens + 1 + instruction_tokens for n in first_lengths]  # + y1 + end token + glue
    need = sum(decode_bytes(policy, lengths, new_tokens, gen_batch, value_bytes)
               for lengths in (first_lengths, second))
    steps = 2 * math.ceil(N / gen_batch) * new_tokens
    flops = forward_flops(policy, attention_mask)
    rate_names = ["rollout: sampled tokens/s", "rollout: decode steps/s", "rollout: % of bandwidth roofline",
                  "reference: tokens/s", "reference: % MFU", "update: tokens/s", "update: % MFU",
                  "step split %: rollout/reference/update"]
    print(f"\n{need / steps / 2 ** 20:,.1f} MiB to read per decode step ({value_bytes}-byte values) at "
          f"{bandwidth / 1e9:,.1f} GB/s; matmul {matmul_rate / 1e12:.2f} TFLOP/s")
    print(f"{'rate':<40}| {'ours':>9} | {'baseline':>9}")
    rates = {}
    for name, r in results.items():
        (t_roll, _), (t_ref, _), (t_upd, _) = r["rollout"], r["reference"], r["update"]
        rates[name] = [f"{sampled / t_roll:,.0f}", f"{steps / t_roll:,.1f}", f"{100 * need / bandwidth / t_roll:.1f}",
                       f"{tokens / t_ref:,.0f}", f"{100 * flops / t_ref / matmul_rate:.1f}", f"{tokens / t_upd:,.0f}",
                       f"{100 * 4 * flops / t_upd / matmul_rate:.1f}",  # reference forward + policy forward/backward
                       "/".join(f"{100 * t / (t_roll + t_upd):.0f}" for t in (t_roll, t_ref, t_upd - t_ref))]
    for i, name in enumerate(rate_names):
        print(f"{name:<40}| {rates['ours'][i]:>9} | {rates['baseline'][i]:>9}", flush=True)


def device_bandwidth(device, nbytes):
    """Bytes per second of a large copy (it reads and writes every byte): the decode roofline's denominator."""
    src = torch.ones(nbytes // 4, device=device)
    dst = torch.empty_like(src)
    best = math.inf
    for _ in range(5):
        if device.type == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        dst.copy_(src)
        if device.type == "cuda":
            torch.cuda.synchronize()
        best = min(best, time.perf_counter() - t0)
    return 2 * nbytes / best


def device_matmul_rate(device, n, bf16):
    """FLOP/s of the best of a few n x n matmuls, in bf16 where the model computes under bf16 autocast
    (model.use_bf16), else fp32: the MFU denominator, in the dtype the model's matmuls run in."""
    dtype = torch.bfloat16 if bf16 else torch.float32
    a, b = torch.randn(n, n, device=device, dtype=dtype), torch.randn(n, n, device=device, dtype=dtype)
    best = math.inf
    for _ in range(5):
        if device.type == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        a @ b
        if device.type == "cuda":
            torch.cuda.synchronize()
        best = min(best, time.perf_counter() - t0)
    return 2 * n ** 3 / best


def matmul_weights(model):
    """Weights every token multiplies by: all Linear layers, the (tied) lm head included."""
    return sum(m.weight.numel() for m in model.modules() if isinstance(m, torch.nn.Linear))


def forward_flops(model, attention_mask):
    """Model FLOPs of one forward pass over the real tokens (see the module docstring)."""
    c = model.config
    d = c.num_attention_heads * (getattr(c, "head_dim", None) or c.hidden_size // c.num_attention_heads)
    lengths = attention_mask.sum(-1).double()  # (N,)
    return float(2 * matmul_weights(model) * lengths.sum() + 2 * c.num_hidden_layers * d * (lengths ** 2).sum())


def decode_bytes(model, context_lengths, new_tokens, batch_size, value_bytes):
    """Bytes one attempt's decode steps must read at least: every matmul weight once per step of
    each generate call, plus the KV cache of each row's real tokens at each step."""
    c = model.config
    head_dim = getattr(c, "head_dim", None) or c.hidden_size // c.num_attention_heads
    kv_per_token = 2 * c.num_hidden_layers * c.num_key_value_heads * head_dim * value_bytes  # K and V
    calls = math.ceil(len(context_lengths) / batch_size)
    weights = calls * new_tokens * matmul_weights(model) * value_bytes
    cache = sum(new_tokens * n + new_tokens * (new_tokens - 1) / 2 for n in context_lengths) * kv_per_token
    return weights + cache


def mb(nbytes):
    return "OOM" if math.isnan(nbytes) else f"{nbytes / 2 ** 20:,.0f}"


def sec(seconds):
    return "OOM" if math.isnan(seconds) else f"{seconds:.3f}"


def ratio(a, b):
    return "-" if math.isnan(a) or math.isnan(b) or b <= 0 else f"{a / b:.2f}x"
