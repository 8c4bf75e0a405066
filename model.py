"""
The model side of SCoRe, shared by every script: load a policy and its frozen reference, choose their
numerics, and compute per-token log-probabilities.

    load_model / load_tokenizer   hub id, local folder, or a .gguf file
    load_policy_and_reference     the trainable policy and the frozen pi_ref, both as the stages need them
    use_bf16 / autocast           bf16 matmuls over fp32 weights, where the hardware has them
    token_logprobs                THE per-token log-prob function: policy, reference and evaluation
    (sampling lives in support/sampler.py; the chat template's turns in support/chat_template.py)

token_logprobs never builds the [batch, tokens, vocab] log-softmax of a whole batch: with Qwen's
151,936-token vocabulary that tensor alone is 20 GB for 64 x 512 tokens in bf16.
It projects hidden states to logits a chunk of tokens at a time and keeps only the chosen token's
log-prob; under autograd each chunk is checkpointed, so backward recomputes its logits instead of
storing them. Peak extra memory is chunk_tokens x vocab, whatever the batch.
"""

import functools
import os
import re
from contextlib import nullcontext

import torch
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint

from support.chat_template import check_chat_template
from support.settings import UsageError  # re-exported: `from model import UsageError` keeps working


# ----------------------------------------------------------------------------- loading

def _split_gguf(name):
    """'dir/model.gguf' -> ('dir', 'model.gguf'); anything else -> (name, None)."""
    if name.endswith(".gguf"):
        if not os.path.isfile(name):
            raise UsageError(f"GGUF file {name!r} does not exist; pass an existing .gguf path to --model")
        return os.path.dirname(os.path.abspath(name)), os.path.basename(name)
    return name, None


def _check_source(name):
    # A name that is neither an existing folder nor shaped like a hub id ("org/name") is a typo or
    # a missing earlier stage; say so now rather than after a long failed download attempt.
    if name.endswith(".gguf") or os.path.isdir(name):
        return
    if not re.fullmatch(r"[\w.-]+/[\w.-]+", name) or name.startswith("."):
        raise UsageError(f"model {name!r} is neither a local folder, a .gguf file, nor a hub id like "
                         f"'Qwen/Qwen2.5-1.5B-Instruct'")


def load_tokenizer(name):
    from transformers import AutoTokenizer
    _check_source(name)
    folder, gguf_file = _split_gguf(name)
    try:
        tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=gguf_file)
    except OSError as e:
        raise UsageError(f"could not load tokenizer {name!r} ({str(e).splitlines()[0]}); check the hub id or path") from None
    if tokenizer.pad_token_id is None:
        # Padding positions are always masked out, so any id works; EOS is the usual choice.
        tokenizer.pad_token = tokenizer.eos_token
    if tokenizer.chat_template is None:
        raise UsageError(f"{name!r} has no chat template: SCoRe's turns are chat messages, use an instruct model")
    check_chat_template(tokenizer)
    return tokenizer


def soft_caps_attention(config):
    """True for a model that soft-caps its attention scores, tanh before the softmax (Gemma-2:
    attn_logit_softcapping = 50). Only eager attention applies that cap: SDPA refuses it (transformers
    5.23) or silently drops it (5.17), and the sampler's decode_attention (support/sampler.py), SDPA
    underneath, cannot apply it."""
    return bool(getattr(config.get_text_config(decoder=True), "attn_logit_softcapping", None))


def load_model(name, device, dtype=torch.float32, trainable=True):
    """A causal LM from a hub id, a local folder or a .gguf file.
    The policy keeps float32 weights: Adam's 5e-6 steps are below bf16's resolution (a bf16 weight
    of 1.0 can't move by less than 0.0078), so they would vanish. Speed comes from bf16 autocast.
    The frozen reference is loaded the same way (load_policy_and_reference), so that its
    log-probs are computed with exactly the policy's numerics (support/sampler.py samples from a bf16 copy)."""
    from transformers import AutoModelForCausalLM
    _check_source(name)
    folder, gguf_file = _split_gguf(name)
    try:
        model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=gguf_file, dtype=dtype)
    except OSError as e:
        raise UsageError(f"could not load model {name!r} ({str(e).splitlines()[0]}); check the hub id or path") from None
    if gguf_file is not None:
        # transformers de-quantizes GGUF at load; clearing the quantizer lets save_pretrained work.
        model.hf_quantizer = None
        if hasattr(model.config, "quantization_config"):
            del model.config.quantization_config
    if soft_caps_attention(model.config):
        # Gemma-2: transformers 5.17 loads it with SDPA, which drops the attention soft-capping without a
        # word (5.23 loads it eager); every log-prob and sample would come from another model.
        model.set_attn_implementation("eager")
    model.to(device)
    model.train(trainable)
    model.requires_grad_(trainable)
    return model


def load_policy_and_reference(policy_path, reference_path, device, gradient_checkpointing=False):
    """The tokenizer, the trainable policy and the frozen reference pi_ref, as both stages load them.
    The reference as the policy: fp32 weights under the same autocast. A bf16 reference computes
    other numbers (~0.03 nats a token), so the KL would start from noise, not from exactly 0."""
    device = torch.device(device)
    tokenizer = load_tokenizer(policy_path)
    policy = load_model(policy_path, device, torch.float32, trainable=True)
    reference = load_model(reference_path, device, torch.float32, trainable=False)
    if gradient_checkpointing:  # transformers 5.23 renamed it; older 5.x only has the old name
        getattr(policy, "activation_checkpointing_enable", policy.gradient_checkpointing_enable)()
    return tokenizer, policy, reference


@functools.cache
def cpu_has_native_bf16(cpuinfo="/proc/cpuinfo"):
    """True when this CPU multiplies bf16 in hardware (Intel AMX or AVX512-BF16). There bf16 matmuls
    run ~3.8x faster than fp32 (868 against 230 GFLOP/s measured on a 2-core AMX Xeon). Without them
    PyTorch emulates bf16 and it is ~50x SLOWER than fp32 (0.9 against 47 GFLOP/s on a 2-core AVX2
    AMD EPYC), so the choice must follow the hardware. Linux reports the flags in /proc/cpuinfo;
    elsewhere we answer False and stay in fp32, the safe choice."""
    try:
        with open(cpuinfo) as f:
            flags = next((line for line in f if line.startswith("flags")), "").split()
    except OSError:
        return False
    return "amx_bf16" in flags or "avx512_bf16" in flags


def use_bf16(device, setting="auto"):
    """Whether the policy and reference compute under bf16 autocast on `device`. setting: 'auto' (a
    GPU: yes; a CPU: only if it multiplies bf16 natively, cpu_has_native_bf16), 'true' or 'false'."""
    if setting not in ("auto", "true", "false"):
        raise UsageError(f"--bf16 must be auto, true or false, not {setting!r}")
    if setting != "auto":
        return setting == "true"
    return torch.device(device).type == "cuda" or cpu_has_native_bf16()


def autocast(device, bf16=None):
    """bf16 matmuls over float32 weights (the master weights stay fp32: see load_model), or plain
    float32 when bf16 is False. bf16 None: use_bf16(device)'s automatic choice."""
    device = torch.device(device)
    if bf16 is None:
        bf16 = use_bf16(device)
    return torch.autocast(device.type, dtype=torch.bfloat16) if bf16 else nullcontext()


# ----------------------------------------------------------------------------- log-probs

def _chunk_logprobs(hidden, targets, weight, softcap):
    # Under bf16 autocast this head is a bf16 matmul, and its logits are bf16 numbers (SmolLM2's reach
    # |42|, where bf16 steps by 0.25): 0.033 nats/token from float32 log-probs, against 0.018 with the head
    # in float32 and 0.020 with bf16 inputs but a float32 output (SmolLM2-135M, 1,020 tokens, CPU). Kept in
    # bf16 all the same: a float32 matmul runs without tensor cores, ~15x slower on a GPU, and the head is
    # ~15 % of Qwen2.5-1.5B's matmul FLOPs, so an update would take ~3x as long (estimated, not measured).
    # Policy and reference share this head, so the KL at step 0 is exactly 0 either way.
    logits = F.linear(hidden, weight).float()  # (n, V), only n tokens at a time
    if softcap:  # Gemma-2 style final-logit soft-capping, so log-probs match the model's own
        logits = softcap * torch.tanh(logits / softcap)
    return logits.gather(-1, targets[:, None]).squeeze(-1) - logits.logsumexp(-1)


def token_logprobs(model, input_ids, attention_mask, chunk_tokens=1024, only=None):
    """log pi(token_t | tokens_<t) for t = 1..T-1, shape (B, T-1), float32.

    The naive version is two lines, and builds a (B, T-1, V) tensor:
        logp = model(input_ids, attention_mask=attention_mask).logits[:, :-1].float().log_softmax(-1)
        return logp.gather(-1, input_ids[:, 1:, None]).squeeze(-1)
    This computes the same numbers with at most chunk_tokens x V logits alive at a time.
    Position ids come from the attention mask, as generate() makes them, so a left-padded row gets
    the same log-probs here as when it was sampled.
    only (B, T-1) bool, optional: compute the log-prob only where it is True (the actions) and return 0
    elsewhere. The update needs no log-prob of a prompt token, and the vocabulary projection is a fifth
    of a small model's FLOPs (SmolLM2: 28M of 135M parameters), so it is skipped on the ~3/4 of a
    SmolLM2 arithmetic episode's tokens that are prompt (an estimate of the saving; not timed alone)."""
    position_ids = (attention_mask.long().cumsum(-1) - 1).clamp(min=0)
    # use_cache=False: a training forward reads no KV cache, so it must not build one (by default the
    # model keeps every layer's K/V of the whole batch, alive until the output is dropped).
    # A model sharded by --shard true runs its base model through FSDP2's hooks (support/sharding.py).
    base_model = getattr(model, "sharded_base_model", model.base_model)
    hidden = base_model(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids,
                        use_cache=False).last_hidden_state  # (B, T, H)
    B, T, H = hidden.shape
    hidden = hidden[:, :-1].reshape(-1, H)  # position t predicts token t+1
    targets = input_ids[:, 1:].reshape(-1)
    if only is not None:  # keep the wanted positions, then scatter their log-probs back into place
        keep = only.reshape(-1).nonzero().squeeze(-1)  # (n,)
        picked = token_logprobs_of_hidden(model, hidden[keep], targets[keep], chunk_tokens)
        return hidden.new_zeros(B * (T - 1), dtype=torch.float32).index_put((keep,), picked).view(B, T - 1)
    return token_logprobs_of_hidden(model, hidden, targets, chunk_tokens).view(B, T - 1)


def token_logprobs_of_hidden(model, hidden, targets, chunk_tokens=1024):
    """log pi(targets) from final hidden states (n, H): the vocabulary projection chunk by chunk."""
    weight = model.get_output_embeddings().weight
    softcap = getattr(model.config, "final_logit_softcapping", None)
    pieces = []
    for start in range(0, hidden.shape[0], chunk_tokens):
        h, t = hidden[start:start + chunk_tokens], targets[start:start + chunk_tokens]
        if torch.is_grad_enabled():
            # Recompute this chunk's logits in backward instead of keeping (chunk, V) per chunk.
            pieces.append(checkpoint(_chunk_logprobs, h, t, weight, softcap, use_reentrant=False))
        else:
            pieces.append(_chunk_logprobs(h, t, weight, softcap))
    return torch.cat(pieces) if pieces else hidden.new_zeros(0, dtype=torch.float32)
