"""support/sampler.py and the numerics around it: the sampler gives the plain path's greedy tokens and records
the model's own log-probs; its copy follows the policy after an optimizer step; the reference's KL is
exactly 0 at step 0; the truncated importance weights; no field of a model's generation_config reaches
sampling or evaluation; the grouped-query decode attention equals the stock one."""

import copy
from types import SimpleNamespace

import pytest
import torch

from model import UsageError, cpu_has_native_bf16, load_policy_and_reference, token_logprobs, use_bf16
from reinforce import reinforce_update, truncated_importance_weights
from rollout import run_episodes
from support.checkpoints import save_checkpoint
from support.sampler import Sampler, decode_attention
from support.tasks import get_task, load_problems
from support.tiny import build_tiny_model


def gqa_model(seed=0, vocab=300, init=0.2):
    """A tiny Qwen2 with grouped-query attention (4 query heads, 2 KV heads) and weights large enough
    that greedy decoding wanders over the vocabulary instead of repeating one token."""
    from transformers import AutoConfig, AutoModelForCausalLM
    config = AutoConfig.for_model("qwen2", hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
                                  num_key_value_heads=2, intermediate_size=128, vocab_size=vocab,
                                  max_position_embeddings=512, initializer_range=init, tie_word_embeddings=True)
    torch.manual_seed(seed)
    return AutoModelForCausalLM.from_config(config).eval()


SLIDING = {  # the architectures whose attention looks back over a window only
    "mistral": dict(sliding_window=8),  # Mistral-7B-v0.1: every layer sliding
    "phi3": dict(sliding_window=8),  # Phi-3-mini-4k: every layer sliding (window 2047)
    # Gemma-2: sliding and global layers alternate; attention and final logits are soft-capped (50 and 30
    # in the real model; small here so that the caps bite on tiny random weights). Untied head: a tied one
    # (Gemma scales the embeddings by sqrt(hidden)) makes a random Gemma repeat its last input token.
    "gemma2": dict(sliding_window=8, attn_logit_softcapping=2.0, final_logit_softcapping=3.0, head_dim=16,
                   query_pre_attn_scalar=16, tie_word_embeddings=False),
}


def sliding_model(kind, seed=0, **overrides):
    """A tiny model of a sliding-window architecture (window 8), GQA like gqa_model."""
    from transformers import AutoConfig, AutoModelForCausalLM
    settings = dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                    intermediate_size=128, vocab_size=300, max_position_embeddings=512, initializer_range=0.2,
                    tie_word_embeddings=True, pad_token_id=0, bos_token_id=1, eos_token_id=2)
    config = AutoConfig.for_model(kind, **{**settings, **SLIDING[kind], **overrides})
    torch.manual_seed(seed)
    return AutoModelForCausalLM.from_config(config).eval()


def full_forward_greedy(model, prompt, n):
    """Greedy decoding the plainest way: the whole sequence through the model at every step, no cache."""
    ids = torch.tensor([prompt])
    with torch.no_grad():
        for _ in range(n):
            ids = torch.cat([ids, model(input_ids=ids, use_cache=False).logits[:, -1:].argmax(-1)], 1)
    return ids[0, len(prompt):].tolist()


def random_prompts(lengths, vocab=300, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [torch.randint(8, vocab, (n,), generator=g).tolist() for n in lengths]


def test_greedy_tokens_equal_generate_and_logprobs_equal_token_logprobs():
    model = gqa_model()
    prompts, end = random_prompts([3, 9, 5, 12]), [7]
    # batch_size 3: two batches, each left-padded to its own width
    ours, truncated, logps = Sampler(model).sample(prompts, max_new_tokens=12, temperature=0, end_ids=end, pad_id=0,
                                                   batch_size=3)
    for prompt, y, cut, lp in zip(prompts, ours, truncated, logps):
        plain = model.generate(torch.tensor([prompt]), do_sample=False, max_new_tokens=12, eos_token_id=end,
                               pad_token_id=0)[0, len(prompt):].tolist()
        assert y == plain[:len(y)] and len(y) == len(lp)
        assert cut == (y[-1] not in end)
        ids = torch.tensor([prompt + y])
        with torch.no_grad():
            trainer = token_logprobs(model, ids, torch.ones_like(ids))[0, len(prompt) - 1:]  # log p(y_j), j = 0..
        torch.testing.assert_close(torch.tensor(lp), trainer, rtol=0, atol=1e-4)
    assert len(set(t for y in ours for t in y)) > 10  # the check above compared real, varied decoding


@pytest.mark.parametrize("kind", sorted(SLIDING))
def test_sliding_window_models_decode_past_the_window(kind):
    """Prompts (9-13 tokens, left-padded together) and prompt + 10 new tokens longer than the window (8):
    the sampler's greedy tokens are those of a plain full forward, and its log-probs token_logprobs'.
    The cache's sliding layers hold only the window, so the mask must not be sized from them (it was:
    a size mismatch at window 8, and from the third new token on wrong tokens at window 12)."""
    model = sliding_model(kind)
    prompts = random_prompts([10, 13, 9], seed=5)
    ours, _, logps = Sampler(model).sample(prompts, max_new_tokens=10, temperature=0, end_ids=[-1], pad_id=0)
    for prompt, y, lp in zip(prompts, ours, logps):
        assert y == full_forward_greedy(model, prompt, 10)
        ids = torch.tensor([prompt + y])
        with torch.no_grad():
            trainer = token_logprobs(model, ids, torch.ones_like(ids))[0, len(prompt) - 1:]
        torch.testing.assert_close(torch.tensor(lp), trainer, rtol=0, atol=1e-4)  # fp32 both: measured <1e-5
    assert len(set(t for y in ours for t in y)) > 5  # varied decoding, not one repeated token


def test_sampler_stops_at_the_end_token_and_checks_rarely():
    """A response ends with its first end token even when the loop runs on past it (host checks
    every check_every steps); truncated marks rows without one."""
    model = gqa_model(seed=1)
    prompts = random_prompts([4, 6], seed=1)
    greedy, _, _ = Sampler(model).sample(prompts, max_new_tokens=8, temperature=0, end_ids=[299], pad_id=0)
    end = greedy[0][2]  # a token row 0 emits at its third step: make it the end token
    responses, truncated, logps = Sampler(model, check_every=3).sample(prompts, max_new_tokens=8, temperature=0,
                                                                       end_ids=[end], pad_id=0)
    first = greedy[0].index(end)
    assert responses[0] == greedy[0][:first + 1] and truncated[0] is False and len(logps[0]) == first + 1
    assert truncated[1] == (end not in greedy[1])


def test_bf16_copy_follows_the_policy_after_an_optimizer_step():
    """The GPU's path on a CPU: a bf16 decoding copy of an fp32 policy. After an update its log-probs
    must be the updated policy's (up to bf16 rounding), not the old ones: the refresh happened."""
    policy = gqa_model(seed=2, init=0.05).train()
    old = copy.deepcopy(policy)
    sampler = Sampler(policy, dtype=torch.bfloat16)
    assert sampler.model is not policy and next(sampler.model.parameters()).dtype == torch.bfloat16
    prompts = random_prompts([6, 6], seed=2)
    ids = torch.tensor(prompts)
    token_logprobs(policy, ids, torch.ones_like(ids)).sum().backward()
    torch.optim.SGD(policy.parameters(), lr=2.0).step()
    ys, _, lps = sampler.sample(prompts, max_new_tokens=6, temperature=0, end_ids=[-1], pad_id=0)
    ids = torch.tensor([p + y for p, y in zip(prompts, ys)])
    with torch.no_grad():
        new_logp, old_logp = (token_logprobs(m, ids, torch.ones_like(ids))[:, 5:] for m in (policy, old))
    assert (torch.tensor(lps) - new_logp).abs().mean() < 0.05  # measured 0.014: bf16 rounding
    assert (torch.tensor(lps) - old_logp).abs().mean() > 0.5  # a stale copy's numbers (measured ~3.6)


def test_autocast_sampler_computes_as_the_bf16_trainer():
    """autocast=True, the stages' choice on a CPU with native bf16: the fp32 model itself decodes under bf16
    autocast into a bf16 KV cache, so the log-probs it records are the bf16 trainer's (token_logprobs under
    autocast), not the fp32 ones."""
    model = gqa_model(seed=3)
    sampler = Sampler(model, autocast=True)
    assert sampler.model is model and sampler.autocast  # no copy: the policy's own fp32 weights
    cache, _ = sampler.new_cache(1, 16)
    with torch.no_grad(), sampler.numerics():
        model(input_ids=torch.tensor([[5, 6, 7]]), past_key_values=cache, use_cache=True)
    assert cache.layers[0].keys.dtype == cache.layers[0].values.dtype == torch.bfloat16
    prompts = random_prompts([6, 6, 6, 6], seed=3)
    ys, _, lps = sampler.sample(prompts, max_new_tokens=8, temperature=1.0, end_ids=[-1], pad_id=0)
    ids = torch.tensor([p + y for p, y in zip(prompts, ys)])
    with torch.no_grad():
        fp32 = token_logprobs(model, ids, torch.ones_like(ids))[:, 5:]
        with torch.autocast("cpu", dtype=torch.bfloat16):
            bf16 = token_logprobs(model, ids, torch.ones_like(ids))[:, 5:]
    to_bf16, to_fp32 = ((torch.tensor(lps) - x).abs().mean().item() for x in (bf16, fp32))
    assert to_bf16 < 1e-4 < to_fp32, (to_bf16, to_fp32)  # measured 3e-8 and 0.019
    # A bf16 model (the GPU's sampler copy) is in its compute dtype already: autocast changes nothing there.
    assert not Sampler(model, dtype=torch.bfloat16, autocast=True).autocast


def test_autocast_sampler_casts_each_weight_once_a_batch():
    """One autocast context spans a batch, so autocast's cache casts each fp32 weight to bf16 once, not at
    every decode step (a context per step spent half of a SmolLM2 rollout casting)."""
    from torch.utils._python_dispatch import TorchDispatchMode

    class CountWeightCasts(TorchDispatchMode):
        def __init__(self, weight):
            super().__init__()
            self.weight, self.casts = weight, 0

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            kwargs = kwargs or {}
            if func is torch.ops.aten._to_copy.default and kwargs.get("dtype") == torch.bfloat16 \
                    and args[0].data_ptr() == self.weight.data_ptr():
                self.casts += 1
            return func(*args, **kwargs)

    model = gqa_model(seed=3)
    counter = CountWeightCasts(model.model.layers[0].mlp.up_proj.weight)
    with counter:
        Sampler(model, autocast=True).sample(random_prompts([6, 6], seed=3), max_new_tokens=8, temperature=1.0,
                                             end_ids=[-1], pad_id=0)
    assert counter.casts == 1, counter.casts  # a context per step: 8 (the prefill and 7 decode steps)


@pytest.fixture(scope="module")
def tiny_checkpoint(tmp_path_factory):
    model, tokenizer = build_tiny_model(seed=0)
    path = str(tmp_path_factory.mktemp("tiny") / "base")
    save_checkpoint(model, tokenizer, {"stage": "base"}, path)
    return path, tokenizer


def tiny_episodes(policy, tokenizer, sampler=None, seed=0):
    torch.manual_seed(seed)
    return run_episodes(policy, tokenizer, get_task("arithmetic"),
                        load_problems("arithmetic", "train", limit=2, max_operand=4), samples_per_problem=2,
                        temperature=1.0, max_new_tokens=4, sampler=sampler)


def test_kl_at_step_zero_is_exactly_zero_under_bf16_autocast(tiny_checkpoint):
    """Policy and reference loaded as the stages load them, under bf16 autocast (what a GPU and a
    bf16-native CPU run, here on any CPU): the same numerics, so log pi - log pi_ref is exactly 0 before the first update. A
    bf16 reference, as the code had before, is the control: its KL is not 0."""
    path, _ = tiny_checkpoint
    cfg = SimpleNamespace(device="cpu", gradient_checkpointing=False, micro_batch=4, baseline="rloo",
                          grad_clip=1.0, is_clip=2.0)
    tokenizer, policy, reference = load_policy_and_reference(path, path, cfg.device, cfg.gradient_checkpointing)
    episodes = tiny_episodes(policy, tokenizer)
    rewards, kl_coefs = torch.tensor([[0.0, 1.0, 1.0, 0.0], [1.0, 0.0, 0.0, 1.0]]), torch.tensor([0.1, 0.01])
    bf16_reference = copy.deepcopy(reference).to(torch.bfloat16)
    control = reinforce_update(copy.deepcopy(policy), bf16_reference, torch.optim.SGD(policy.parameters(), lr=0.0),
                               episodes, rewards, kl_coefs, cfg, bf16=True)
    fp32 = reinforce_update(copy.deepcopy(policy), reference, torch.optim.SGD(policy.parameters(), lr=0.0),
                            episodes, rewards, kl_coefs, cfg, bf16=False)
    stats = reinforce_update(policy, reference, torch.optim.SGD(policy.parameters(), lr=0.0), episodes, rewards,
                             kl_coefs, cfg, bf16=True)
    assert stats["kl"] == [0.0, 0.0]
    assert stats["loss"] != fp32["loss"]  # bf16=True did compute under autocast
    assert any(abs(kl) > 1e-4 for kl in control["kl"])


def test_bf16_follows_the_cpu_and_the_setting(tmp_path):
    """--bf16 auto: on a GPU, and on a CPU only where it multiplies bf16 in hardware (emulated bf16
    is ~50x slower than fp32); true and false force it."""
    def cpuinfo(flags):
        path = tmp_path / f"cpuinfo_{len(flags)}"
        path.write_text(f"processor\t: 0\nflags\t\t: {flags}\n")
        return str(path)
    assert cpu_has_native_bf16(cpuinfo("fpu sse avx2 avx512f amx_bf16 amx_tile"))
    assert cpu_has_native_bf16(cpuinfo("fpu avx2 avx512f avx512_bf16"))
    assert not cpu_has_native_bf16(cpuinfo("fpu avx avx2"))
    assert not cpu_has_native_bf16(str(tmp_path / "missing"))
    assert use_bf16("cpu", "auto") == cpu_has_native_bf16()
    assert use_bf16("cuda:0", "auto") and use_bf16("cpu", "true") and not use_bf16("cuda", "false")
    with pytest.raises(UsageError, match="--bf16 must be auto, true or false"):
        use_bf16("cpu", "yes")


def test_importance_weights_are_one_with_identical_numerics_and_clipped_otherwise():
    logp = torch.tensor([[-1.0, -2.0, -0.5, -3.0]], requires_grad=True)
    w = truncated_importance_weights(logp, logp.detach().clone(), clip=2.0)
    assert torch.equal(w, torch.ones_like(w)) and not w.requires_grad
    sampler_logp = logp.detach() - torch.log(torch.tensor([[3.0, 0.25, 1.5, 1.0]]))  # ratios 3, 0.25, 1.5, 1
    sampler_logp[0, 3] = float("nan")  # a given, not sampled, token: weight 1
    torch.testing.assert_close(truncated_importance_weights(logp, sampler_logp, clip=2.0),
                               torch.tensor([[2.0, 0.25, 1.5, 1.0]]))


def test_update_with_identical_numerics_equals_the_uncorrected_update(tiny_checkpoint):
    """Sampler log-probs equal to the trainer's: every weight is exactly 1, so the gradient is bit for bit
    the one without the correction. Off-policy log-probs change it (the control)."""
    path, _ = tiny_checkpoint
    cfg = SimpleNamespace(device="cpu", gradient_checkpointing=False, micro_batch=2, baseline="rloo",
                          grad_clip=1e9, is_clip=2.0)
    tokenizer, base, reference = load_policy_and_reference(path, path, cfg.device, cfg.gradient_checkpointing)
    episodes = tiny_episodes(base, tokenizer)
    with torch.no_grad():
        trainer = token_logprobs(base, episodes.input_ids, episodes.attention_mask)
    rewards = torch.tensor([[0.0, 1.0, 1.0, 0.0], [1.0, 0.0, 0.0, 1.0]])
    grads = []
    for sampler_logprobs, is_clip in ((trainer, 2.0), (trainer, 0.0), (trainer - 0.3, 2.0)):
        policy = copy.deepcopy(base)
        optimizer = torch.optim.SGD(policy.parameters(), lr=0.0)
        optimizer.zero_grad = lambda set_to_none=True: None  # keep the gradient to read it
        eps = copy.copy(episodes)
        eps.sampler_logprobs = sampler_logprobs
        stats = reinforce_update(policy, reference, optimizer, eps, rewards, torch.tensor([0.1, 0.01]),
                                 SimpleNamespace(**{**vars(cfg), "is_clip": is_clip}),
                                 bf16=False)  # fp32 on every CPU: the sampler's log-probs above are fp32 ones
        grads.append(torch.cat([p.grad.flatten() for p in policy.parameters()]))
    assert stats["mismatch"] == pytest.approx(0.3, abs=1e-5)
    assert torch.equal(grads[0], grads[1])
    assert not torch.allclose(grads[0], grads[2])


def test_rollout_records_the_sampler_logprobs_on_sampled_tokens_only(tiny_checkpoint):
    path, _ = tiny_checkpoint
    cfg = SimpleNamespace(device="cpu", gradient_checkpointing=False)
    tokenizer, policy, _ = load_policy_and_reference(path, path, cfg.device, cfg.gradient_checkpointing)
    episodes = tiny_episodes(policy, tokenizer, sampler=Sampler(policy))
    sampled = episodes.action_masks[:, :, 1:].any(0)
    with torch.no_grad():
        trainer = token_logprobs(policy, episodes.input_ids, episodes.attention_mask)
    torch.testing.assert_close(episodes.sampler_logprobs[sampled], trainer[sampled], rtol=0, atol=1e-4)
    assert (episodes.sampler_logprobs[~sampled] == 0).all()


def test_generation_config_never_reaches_sampling_or_evaluation():
    """A model whose generation_config asks for no_repeat_ngram_size, min_p, top_k, top_p and a
    repetition penalty samples (same seed) and evaluates (greedy, through run_episodes) exactly as one
    without them."""
    model, tokenizer = build_tiny_model(seed=3)
    shipped = copy.deepcopy(model)
    shipped.generation_config.update(no_repeat_ngram_size=1, min_p=0.5, top_k=1, top_p=0.1, repetition_penalty=5.0,
                                     do_sample=True, temperature=0.3)
    prompts = random_prompts([5, 8, 3], vocab=100, seed=3)
    outputs = []
    for m in (model, shipped):
        torch.manual_seed(0)
        sampled = Sampler(m).sample(prompts, max_new_tokens=8, temperature=1.0, end_ids=[3], pad_id=0)
        torch.manual_seed(0)
        evaluated = run_episodes(m, tokenizer, get_task("arithmetic"),
                                 load_problems("arithmetic", "test", limit=3, max_operand=4), samples_per_problem=1,
                                 temperature=0.0, max_new_tokens=6)
        outputs.append((sampled, evaluated.input_ids.tolist()))
    assert outputs[0] == outputs[1]
    # The control: generate() itself would obey that config (greedy with no_repeat_ngram_size=1 here).
    ids = torch.tensor([prompts[1]])
    plain = model.generate(ids, do_sample=False, max_new_tokens=8, pad_token_id=0)
    obeyed = shipped.generate(ids, do_sample=False, max_new_tokens=8, pad_token_id=0)
    assert plain.tolist() != obeyed.tolist()


def test_decode_attention_equals_stock_sdpa():
    """Grouped-query attention without K/V copies gives the stock attention's output, padding mask and
    all; a multi-token query (prefill) goes to the stock function itself."""
    from transformers.integrations.sdpa_attention import sdpa_attention_forward
    g = torch.Generator().manual_seed(0)
    module = SimpleNamespace(num_key_value_groups=3, is_causal=True, training=False)
    B, n_heads, n_kv, L, D = 2, 6, 2, 9, 8
    key, value = torch.randn(B, n_kv, L, D, generator=g), torch.randn(B, n_kv, L, D, generator=g)
    mask = torch.ones(B, 1, 1, L, dtype=torch.bool)
    mask[0, ..., :3] = False  # a left-padded row
    query = torch.randn(B, n_heads, 1, D, generator=g)
    ours, _ = decode_attention(module, query, key, value, mask, scaling=D ** -0.5)
    stock, _ = sdpa_attention_forward(module, query, key, value, mask, scaling=D ** -0.5)
    assert ours.shape == stock.shape == (B, 1, n_heads, D)
    torch.testing.assert_close(ours, stock)
    # the control: ignoring the mask changes the padded row
    unmasked, _ = decode_attention(module, query, key, value, None, scaling=D ** -0.5)
    assert not torch.allclose(unmasked[0], stock[0])


@pytest.fixture
def compile_counter(monkeypatch):
    """Sampler(compile=True) with dynamo's CompileCounter as the backend: the graphs are traced and guarded
    exactly as for inductor, then run eagerly, so a test sees every (re)compile in seconds, not minutes."""
    from torch._dynamo.testing import CompileCounter
    counter, real_compile = CompileCounter(), torch.compile
    monkeypatch.setattr(torch, "compile", lambda fn, mode=None, dynamic=None: real_compile(fn, backend=counter,
                                                                                           dynamic=dynamic))
    torch._dynamo.reset()
    yield counter
    torch._dynamo.reset()


def test_compiled_decoding_keeps_gemma2_attention_soft_capping(compile_counter):
    """compile=True switches attention to decode_attention, SDPA underneath, which cannot soft-cap scores
    (transformers 5.23 raised "sdpa attention does not support softcap"; 5.17 dropped the cap silently). A
    soft-capped model keeps eager attention: the tokens of a plain full forward, token_logprobs' log-probs."""
    model = sliding_model("gemma2")
    prompts = random_prompts([10, 13, 9], seed=5)
    sampler = Sampler(model, compile=True)
    assert sampler.model.config._attn_implementation == "eager"
    ours, _, logps = sampler.sample(prompts, max_new_tokens=10, temperature=0, end_ids=[-1], pad_id=0)
    uncapped = copy.deepcopy(model)
    for layer in uncapped.model.layers:  # the control: what dropping the cap does to the numbers
        layer.self_attn.attn_logit_softcapping = None
    for prompt, y, lp in zip(prompts, ours, logps):
        assert y == full_forward_greedy(model, prompt, 10)
        ids = torch.tensor([prompt + y])
        with torch.no_grad():
            trainer, dropped = (token_logprobs(m, ids, torch.ones_like(ids))[0, len(prompt) - 1:] for m in (model, uncapped))
        torch.testing.assert_close(torch.tensor(lp), trainer, rtol=0, atol=1e-4)
        assert (dropped - trainer).abs().max() > 0.05  # the cap matters in this model (measured 0.24-0.42)
    assert compile_counter.frame_count >= 1  # the decode step did go through the compiler
    # decode_attention itself refuses a cap rather than ignore it
    q, kv = torch.randn(1, 4, 1, 8), torch.randn(1, 2, 5, 8)
    with pytest.raises(ValueError, match="soft-cap"):
        decode_attention(SimpleNamespace(num_key_value_groups=2, is_causal=True, training=False), q, kv, kv, None,
                         scaling=0.3, softcap=50.0)


def test_compiled_decoding_compiles_once_with_sliding_layers(compile_counter):
    """A sliding-window cache layer keeps its fill level as a Python int, which torch.compile guards on:
    it recompiled at every decode step (8 graphs for 10 tokens, then eager). The sampler's cache has
    full-length layers only, so one graph serves every step of both calls (the same padded length)."""
    model = sliding_model("mistral")
    sampler = Sampler(model, compile=True)
    for lengths in ([10, 13, 9], [12, 4, 11]):
        prompts = random_prompts(lengths, seed=len(lengths) + lengths[0])
        ours, _, _ = sampler.sample(prompts, max_new_tokens=10, temperature=0, end_ids=[-1], pad_id=0)
        assert ours == [full_forward_greedy(model, p, 10) for p in prompts]
    assert compile_counter.frame_count == 1


def test_compiled_decoding_keeps_one_cache_per_batch_size(compile_counter):
    """compile=True keeps its static caches between calls (compiled graphs see the same tensors), but not
    one per (batch, length) met: one per batch size, as long as the longest call, reused by shorter ones."""
    model = gqa_model(seed=5)
    sampler = Sampler(model, compile=True)
    eager = Sampler(model)
    calls = [(random_prompts([5, 9], seed=1), 4),  # 256 columns
             (random_prompts([250, 240], seed=2), 10),  # 260 positions: 512 columns, replaces the 256 one
             (random_prompts([6, 3], seed=3), 4),  # reuses the 512 one
             (random_prompts([7, 8, 4], seed=4), 4)]  # another batch size: a cache of its own
    for prompts, n in calls:
        settings = dict(max_new_tokens=n, temperature=0, end_ids=[-1], pad_id=0)
        ours, _, lp = sampler.sample(prompts, **settings)
        theirs, _, lp_eager = eager.sample(prompts, **settings)
        assert ours == theirs
        torch.testing.assert_close(torch.tensor(lp), torch.tensor(lp_eager), rtol=0, atol=1e-4)
    assert {batch: length for batch, (_, length) in sampler.caches.items()} == {2: 512, 3: 256}
    assert compile_counter.frame_count == 3  # shapes (2, 256), (2, 512), (3, 256): the reuse compiled nothing


@pytest.mark.slow
def test_compiled_decoding_gives_the_eager_tokens():
    """compile=True on a CPU: torch.compile (inductor, no CUDA graphs) and decode_attention. ~40 s to compile."""
    model = gqa_model(seed=4)
    prompts = random_prompts([3, 9, 5], seed=4)
    eager, _, lp_eager = Sampler(model).sample(prompts, max_new_tokens=10, temperature=0, end_ids=[7], pad_id=0)
    compiled = Sampler(model, compile=True)
    for _ in range(2):  # the second call reuses the cache and the compiled graph
        tokens, _, lp = compiled.sample(prompts, max_new_tokens=10, temperature=0, end_ids=[7], pad_id=0)
        assert tokens == eager
        torch.testing.assert_close(torch.tensor(sum(lp, [])), torch.tensor(sum(lp_eager, [])), rtol=0, atol=1e-4)
