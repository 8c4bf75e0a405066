"""bench.py: its memory counter is right, log-prob memory grows with tokens and not with the
vocabulary, and the CPU preset runs every path (the bf16 sampler copy included) and prints its tables. Speed is reported by the benchmark,
never asserted here."""

import functools
import os
import subprocess
import sys

import pytest
import torch

import bench
from model import cpu_has_native_bf16, token_logprobs
from support.measure import PeakMemory, build_config, build_models, logprob_memory

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_peak_memory_counts_live_tensors_and_ignores_older_ones():
    weight = torch.ones(1000, 1000)  # made before tracking: its views must not count
    with PeakMemory() as memory:
        weight.t().contiguous()  # 4 MB, freed at once
        a = torch.empty(1000, 1000)  # 4 MB
        b = a + 1  # 4 MB more: 8 MB alive
        del a
        c = torch.empty(500, 1000)  # 2 MB: 6 MB alive, below the 8 MB peak
        view = weight[:10]  # shares weight's storage: nothing new
    assert memory.peak == 8_000_000
    assert memory.live == 6_000_000
    del b, c, view


@pytest.fixture(scope="module")
def qwen_vocab_tiny():
    """Qwen's 151,936-token vocabulary on a 2-layer, 64-wide body: the lm head is nearly everything."""
    torch.manual_seed(0)
    return build_models(build_config("tiny"), torch.device("cpu"), gradient_checkpointing=False)


def logprob_peaks(logprobs, policy, reference, rows, T=64):
    """(tokens, peak bytes) of the update's log-prob work at each number of rows."""
    g = torch.Generator().manual_seed(0)
    out = []
    for n in rows:
        ids = torch.randint(0, policy.config.vocab_size, (n, T), generator=g)
        out.append((n * (T - 1), logprob_memory(logprobs, policy, reference, ids, torch.ones_like(ids))))
    return out


def test_logprob_memory_grows_with_tokens_not_with_vocabulary(qwen_vocab_tiny):
    """token_logprobs (reference, policy with graph, the KL, backward): each extra token costs far less
    than one vocabulary row of floats, and 1,008 tokens stay far below the (B, T, V) float32 tensor a
    full log-softmax builds. The naive version, measured the same way, grows by several rows a token:
    the control that shows the measurement can fail."""
    policy, reference = qwen_vocab_tiny
    row = policy.config.vocab_size * 4  # bytes of one token's float32 log-softmax
    ours = functools.partial(token_logprobs, chunk_tokens=32)
    (n0, p0), (n1, p1) = logprob_peaks(ours, policy, reference, rows=(4, 16))
    assert (p1 - p0) / (n1 - n0) < 0.1 * row  # measured ~0.02 rows per token: activations, B x T x H
    assert p1 < 0.5 * n1 * row  # measured ~0.2 of the full tensor, most of it one chunk and the weights' grads
    (m0, q0), (m1, q1) = logprob_peaks(bench.naive_logprobs, policy, reference, rows=(1, 2))
    assert (q1 - q0) / (m1 - m0) > row  # measured ~3 rows per token: logits, log-softmax, their grads


def test_cpu_preset_runs_and_prints_its_tables():
    """The benchmark end to end in a subprocess, at the CPU preset with even smaller shapes."""
    native = cpu_has_native_bf16()  # there the trainer runs under bf16 autocast, and the fp32 row is measured
    cmd = [sys.executable, "bench.py", "--preset", "cpu", "--vocab_size", "32768", "--prompt_tokens", "16",
           "--new_tokens", "6", "--emulate_bf16", "true", "--bf16", "true" if native else "false"]
    out = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300,
                         env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert out.returncode == 0, out.stderr[-2000:]
    text = out.stdout
    for expected in ("Stage I step on the CPU", "rollout", "reference", "update", "step split",
                     "% of bandwidth roofline", "% MFU", "growth per extra token", "Sampler, not generate",
                     "chunked log-probs", "gradient checkpointing", "SDPA attention", "truncated IS weights",
                     "sampler in torch.bfloat16", "before correction"):
        assert expected in text, f"{expected!r} missing from:\n{text}"
    assert ("trainer in bf16 autocast" in text) == native and ("trainer in fp32" in text) != native
    assert ("bf16 autocast over fp32 weights, not fp32" in text) == native  # only where bf16 is what ours runs
    # The reference has the policy's numerics: under bf16 autocast, as on a GPU, the KL at step 0 is
    # printed as exactly zero, while the old bf16 reference's is not (the control).
    assert "numerics at step 0 under bf16 autocast" in text
    assert "KL(policy || reference) per token: ours 0.000000 " in text
    assert "plain 0.000000 " not in text
