"""model.py: log-probs equal the naive version and the model's own loss; chat glue; sampling."""

import pytest
import torch

from model import load_model, load_tokenizer, token_logprobs
from support.chat_template import chat_prompt_ids, end_of_turn_ids, turn_glue_ids
from support.checkpoints import find_checkpoint, save_checkpoint
from support.sampler import Sampler
from support.settings import UsageError
from support.tiny import build_tiny_model


@pytest.fixture(scope="module")
def tiny():
    model, tokenizer = build_tiny_model(seed=0)
    return model.eval(), tokenizer


def random_batch(vocab, B=3, T=17, seed=0):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(4, vocab, (B, T), generator=g)
    attn = torch.ones(B, T, dtype=torch.long)
    attn[1, :5] = 0  # one left-padded row
    attn[2, -4:] = 0  # one right-padded row
    return ids, attn


def naive_logprobs(model, ids, attn):
    position_ids = (attn.cumsum(-1) - 1).clamp(min=0)
    logits = model(input_ids=ids, attention_mask=attn, position_ids=position_ids).logits  # (B, T, V)
    return logits[:, :-1].float().log_softmax(-1).gather(-1, ids[:, 1:, None]).squeeze(-1)


@pytest.mark.parametrize("chunk_tokens", [1, 7, 1024])
def test_token_logprobs_equals_naive_log_softmax(tiny, chunk_tokens):
    model, _ = tiny
    ids, attn = random_batch(model.config.vocab_size, seed=chunk_tokens)
    with torch.no_grad():
        fast = token_logprobs(model, ids, attn, chunk_tokens=chunk_tokens)
        naive = naive_logprobs(model, ids, attn)
    assert fast.shape == (3, 16)
    torch.testing.assert_close(fast, naive, rtol=1e-5, atol=1e-5)


def test_token_logprobs_gradient_equals_naive(tiny):
    model, _ = tiny
    ids, attn = random_batch(model.config.vocab_size, seed=3)
    weights = torch.randn(3, 16)
    grads = []
    for fn in (lambda: token_logprobs(model, ids, attn, chunk_tokens=5), lambda: naive_logprobs(model, ids, attn)):
        model.zero_grad()
        (fn() * weights).sum().backward()
        grads.append(torch.cat([p.grad.flatten() for p in model.parameters()]))
    torch.testing.assert_close(grads[0], grads[1], rtol=1e-4, atol=1e-6)


def test_logprobs_of_the_actions_only_equal_the_full_ones_there(tiny):
    """only=mask: the same values and gradient on the masked positions, 0 elsewhere, none at all too."""
    model, _ = tiny
    ids, attn = random_batch(model.config.vocab_size, seed=4)
    only = torch.rand(3, 16, generator=torch.Generator().manual_seed(1)) < 0.3
    weights = torch.randn(3, 16) * only
    values, grads = [], []
    for kwargs in (dict(only=only, chunk_tokens=3), dict()):
        model.zero_grad()
        logp = token_logprobs(model, ids, attn, **kwargs)
        (logp * weights).sum().backward()
        values.append(logp.detach())
        grads.append(torch.cat([p.grad.flatten() for p in model.parameters()]))
    torch.testing.assert_close(values[0], values[1] * only, rtol=1e-5, atol=1e-6)
    assert torch.equal(values[0][~only], torch.zeros((~only).sum()))
    torch.testing.assert_close(grads[0], grads[1], rtol=1e-4, atol=1e-6)
    with torch.no_grad():
        assert torch.equal(token_logprobs(model, ids, attn, only=torch.zeros_like(only)), torch.zeros(3, 16))


def test_training_forwards_build_no_kv_cache(tiny):
    """token_logprobs (and bench.py's naive variant) run forwards nobody decodes from: without
    use_cache=False the model builds a KV cache of the whole batch, every layer's K and V."""
    import bench
    model, _ = tiny
    ids, attn = random_batch(model.config.vocab_size, seed=4)
    caches = []
    hook = model.model.register_forward_hook(lambda module, args, output: caches.append(output.past_key_values))
    try:
        with torch.no_grad():
            token_logprobs(model, ids, attn)
            bench.naive_logprobs(model, ids, attn)
            model(input_ids=ids, attention_mask=attn)  # the control: a plain forward does build one
    finally:
        hook.remove()
    assert caches[:2] == [None, None] and caches[2] is not None


def test_token_logprobs_equals_models_own_loss(tiny):
    model, _ = tiny
    ids, _ = random_batch(model.config.vocab_size, seed=1)
    attn = torch.ones_like(ids)
    with torch.no_grad():
        ours = -token_logprobs(model, ids, attn).mean()
        theirs = model(input_ids=ids, labels=ids).loss
    torch.testing.assert_close(ours, theirs, rtol=1e-5, atol=1e-5)


def test_left_padding_does_not_change_logprobs(tiny):
    """A row sampled with left padding must get the same log-probs when trained right-padded."""
    model, _ = tiny
    ids = torch.randint(4, model.config.vocab_size, (1, 12))
    padded = torch.cat([torch.zeros(1, 5, dtype=torch.long), ids], 1)
    attn = torch.cat([torch.zeros(1, 5, dtype=torch.long), torch.ones(1, 12, dtype=torch.long)], 1)
    with torch.no_grad():
        plain = token_logprobs(model, ids, torch.ones_like(ids))
        shifted = token_logprobs(model, padded, attn)[:, 5:]
    torch.testing.assert_close(plain, shifted, rtol=1e-4, atol=1e-4)


def test_glue_continues_the_chat_exactly(tiny):
    """prompt + y1 + end + glue must be the tokens of the chat template's own rendering."""
    model, tokenizer = tiny
    end_ids = end_of_turn_ids(model, tokenizer)
    prompt = chat_prompt_ids(tokenizer, "What is 2+2?")
    y1 = tokenizer("5", add_special_tokens=False).input_ids + [tokenizer.eos_token_id]
    glue = turn_glue_ids(tokenizer, end_ids, "Try again.")
    rendered = tokenizer.apply_chat_template(
        [{"role": "user", "content": "What is 2+2?"}, {"role": "assistant", "content": "5"},
         {"role": "user", "content": "Try again."}], tokenize=False, add_generation_prompt=True)
    assert prompt + y1 + glue == tokenizer(rendered, add_special_tokens=False).input_ids
    assert tokenizer.decode(glue).endswith("<|im_start|>assistant\n")


def test_sample_cuts_at_end_token_and_flags_truncation(tiny):
    model, tokenizer = tiny
    end_ids = end_of_turn_ids(model, tokenizer)
    prompts = [chat_prompt_ids(tokenizer, "hi"), chat_prompt_ids(tokenizer, "a longer prompt")]
    torch.manual_seed(0)
    responses, truncated, _ = Sampler(model).sample(prompts, max_new_tokens=6, temperature=1.0, end_ids=end_ids,
                                                    pad_id=tokenizer.pad_token_id)
    for response, cut in zip(responses, truncated):
        assert 1 <= len(response) <= 6
        assert cut == (response[-1] not in end_ids)
        assert not any(t in end_ids for t in response[:-1])  # nothing after the first end token


def test_greedy_sample_is_deterministic_and_batch_independent(tiny):
    model, tokenizer = tiny
    end_ids = end_of_turn_ids(model, tokenizer)
    a, b = chat_prompt_ids(tokenizer, "1+1"), chat_prompt_ids(tokenizer, "a much longer question here")
    sampler = Sampler(model)
    alone, _, _ = sampler.sample([a], max_new_tokens=5, temperature=0, end_ids=end_ids, pad_id=tokenizer.pad_token_id)
    together, _, _ = sampler.sample([b, a], max_new_tokens=5, temperature=0, end_ids=end_ids,
                                    pad_id=tokenizer.pad_token_id)
    assert together[1] == alone[0]  # left padding next to a longer prompt changes nothing


def test_checkpoint_roundtrip_and_clear_errors(tiny, tmp_path):
    model, tokenizer = tiny
    path = str(tmp_path / "ckpt")
    save_checkpoint(model, tokenizer, {"stage": 1}, path)
    save_checkpoint(model, tokenizer, {"stage": 1, "again": True}, path)  # replacing works too
    assert find_checkpoint(path, "hint") == path
    loaded = load_model(path, "cpu", trainable=False)
    assert load_tokenizer(path).chat_template == tokenizer.chat_template
    ids = torch.randint(4, 50, (1, 8))
    with torch.no_grad():
        torch.testing.assert_close(token_logprobs(loaded, ids, torch.ones_like(ids)),
                                   token_logprobs(model, ids, torch.ones_like(ids)))
    with pytest.raises(UsageError, match="no checkpoint"):
        find_checkpoint(str(tmp_path / "missing"), "run stage1.py first")
    with pytest.raises(UsageError, match="neither a local folder"):
        load_model(str(tmp_path / "nope" / "deeper"), "cpu")
    with pytest.raises(UsageError, match="GGUF file"):
        load_model(str(tmp_path / "x.gguf"), "cpu")


def test_soft_capped_models_load_with_eager_attention(tmp_path, monkeypatch):
    """Gemma-2 soft-caps its attention scores, which only eager attention applies. transformers 5.17 marks
    Gemma-2 as SDPA-capable and loads it with SDPA, which drops the cap silently; emulated here (5.23 marks
    it incapable and loads eager). load_model must load it eager whatever the version's default."""
    from transformers import AutoConfig, AutoModelForCausalLM
    from transformers.models.gemma2 import modeling_gemma2
    config = AutoConfig.for_model("gemma2", hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                                  num_key_value_heads=1, head_dim=16, intermediate_size=64, vocab_size=100,
                                  sliding_window=4, attn_logit_softcapping=2.0, final_logit_softcapping=3.0,
                                  initializer_range=0.5, pad_token_id=0, bos_token_id=1, eos_token_id=2)
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(config, attn_implementation="eager").eval()
    model.save_pretrained(tmp_path / "gemma2")
    monkeypatch.setattr(modeling_gemma2.Gemma2PreTrainedModel, "_supports_sdpa", True)  # as in 5.17
    assert AutoModelForCausalLM.from_pretrained(tmp_path / "gemma2").config._attn_implementation == "sdpa"  # control
    loaded = load_model(str(tmp_path / "gemma2"), "cpu", trainable=False)
    assert loaded.config._attn_implementation == "eager"
    ids = torch.randint(4, 100, (2, 9), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        torch.testing.assert_close(token_logprobs(loaded, ids, torch.ones_like(ids)),
                                   token_logprobs(model, ids, torch.ones_like(ids)))


def test_crash_between_renames_leaves_the_old_checkpoint(tiny, tmp_path):
    model, tokenizer = tiny
    path = str(tmp_path / "ckpt")
    save_checkpoint(model, tokenizer, {"stage": 1}, path)
    (tmp_path / "ckpt").rename(tmp_path / "ckpt.old")  # as if the process died mid-swap
    assert find_checkpoint(path, "hint") == path + ".old"


def test_sampling_draws_from_the_models_own_distribution():
    """On-policy RL trains on log pi(y), so samples must come from pi itself, whatever the model's
    generation_config asks for (Qwen ships top_k=20; here top_k=1 and a repetition penalty)."""
    model, tokenizer = build_tiny_model(seed=1)
    model.generation_config.top_k, model.generation_config.repetition_penalty = 1, 5.0
    prompt = chat_prompt_ids(tokenizer, "hello")
    torch.manual_seed(0)
    n = 20_000
    first, _, logps = Sampler(model).sample([prompt] * n, max_new_tokens=1, temperature=1.0,
                                            end_ids=end_of_turn_ids(model, tokenizer), pad_id=tokenizer.pad_token_id,
                                            batch_size=5000)
    empirical = torch.bincount(torch.tensor([r[0] for r in first]), minlength=model.config.vocab_size) / n
    with torch.no_grad():
        ids = torch.tensor([prompt + [0]])
        logits = model(input_ids=ids).logits[0, -2]
    total_variation = 0.5 * (empirical - logits.softmax(-1)).abs().sum()
    # The log-prob the sampler recorded for each draw is the model's own, exp(logp) = p(token).
    drawn = torch.tensor([r[0] for r in first])
    torch.testing.assert_close(torch.tensor([lp[0] for lp in logps]), logits.log_softmax(-1)[drawn], rtol=0, atol=1e-5)
    # Sampling noise at n = 20,000 is ~0.03 for this near-uniform 100-token distribution; obeying
    # top_k=1 would give ~0.98. (The penalty's effect here, 0.03, is too small for this test to see.)
    assert total_variation < 0.05
