"""
The model side of SCoRe, shared by every script: load a policy and its frozen reference, turn chat
messages into tokens, and compute per-token log-probabilities.

    load_model / load_tokenizer   hub id, local folder, or a .gguf file
    build_tiny_model              a tiny Llama + character tokenizer made in-process (CPU tutorial)
    check_chat_template           run at load: our token assembly reproduces the model's own template
    chat_prompt_ids / turn_glue_ids / turn_end_id   the chat-template tokens around each assistant turn
    token_logprobs                THE per-token log-prob function: policy, reference and evaluation
    (sampling lives in support/sampler.py; what the scripts share besides the model, in support/)

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
    5.23) or silently drops it (5.17), and the sampler's decode_attention, SDPA underneath, cannot apply it."""
    return bool(getattr(config.get_text_config(decoder=True), "attn_logit_softcapping", None))


def load_model(name, device, dtype=torch.float32, trainable=True):
    """A causal LM from a hub id, a local folder or a .gguf file.
    The policy keeps float32 weights: Adam's 5e-6 steps are below bf16's resolution (a bf16 weight
    of 1.0 can't move by less than 0.0078), so they would vanish. Speed comes from bf16 autocast.
    The frozen reference is loaded the same way (stage1.load_policy_and_reference), so that its
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


def end_of_turn_ids(model, tokenizer):
    """Token ids that end an assistant turn, so sampling stops on any of them: the chat template's own
    end-of-turn token (turn_end_id), the tokenizer's EOS, and any the generation config adds (Qwen2.5
    ends turns with <|im_end|> but also stops on <|endoftext|>; Gemma's EOS is <eos>, not <end_of_turn>)."""
    ids = {tokenizer.eos_token_id, turn_end_id(tokenizer)}
    extra = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
    ids.update(extra if isinstance(extra, list) else [extra])
    return sorted(i for i in ids if i is not None)


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


# ----------------------------------------------------------------------------- the tiny model

CHATML_TEMPLATE = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def build_tiny_model(seed=0, hidden_size=64, num_layers=2):
    """A tiny Llama and a character-level ChatML tokenizer, made in-process: no download, runs on a
    CPU in seconds. One token per printable ASCII character keeps the tokenizer obvious."""
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast
    specials = ["<|pad|>", "<|unk|>", "<|im_start|>", "<|im_end|>"]
    chars = [chr(i) for i in range(32, 127)] + ["\n"]
    vocab = {token: i for i, token in enumerate(specials + chars)}
    backend = Tokenizer(models.WordLevel(vocab, unk_token="<|unk|>"))
    backend.pre_tokenizer = pre_tokenizers.Split(Regex(r"[\s\S]"), behavior="isolated")  # every char
    backend.decoder = decoders.Fuse()  # join characters back without spaces
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=backend, pad_token="<|pad|>", unk_token="<|unk|>",
                                        eos_token="<|im_end|>", additional_special_tokens=["<|im_start|>"])
    tokenizer.chat_template = CHATML_TEMPLATE
    config = LlamaConfig(vocab_size=len(vocab), hidden_size=hidden_size, intermediate_size=4 * hidden_size,
                         num_hidden_layers=num_layers, num_attention_heads=4, num_key_value_heads=4,
                         max_position_embeddings=4096, tie_word_embeddings=True,
                         pad_token_id=vocab["<|pad|>"], eos_token_id=vocab["<|im_end|>"], bos_token_id=None)
    torch.manual_seed(seed)
    model = LlamaForCausalLM(config)
    model.generation_config.eos_token_id = vocab["<|im_end|>"]
    return model, tokenizer


# ----------------------------------------------------------------------------- chat formatting
#
# The conversation is assembled from token ids, not re-rendered: attempt 2's context is
# prompt ids + the sampled y1 ids + [end-of-turn id] + glue ids, so the log-probs we train on belong to
# exactly the tokens the model sampled. That is only right if it is also what the model's own chat
# template renders for the same chat, and templates differ in ways that break it silently (Gemma ends a
# turn with <end_of_turn>, not its EOS; Llama 3.x writes today's date into the prompt; Qwen3 drops
# <think>...</think> from earlier turns). check_chat_template compares the two once, at load time, and
# either the code below handles what it finds or it stops with one line naming the template feature.

CHAT_DATE = "26 Jul 2024"  # the date Llama 3.x templates print; its own fallback, fixed so every day renders alike


def render_chat(tokenizer, messages, add_generation_prompt):
    """The chat template's text for `messages`. The date is pinned: a template that prints today's date
    would otherwise give a model trained on Monday a different prompt when it is evaluated on Friday."""
    from jinja2.exceptions import TemplateError
    try:
        return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=add_generation_prompt,
                                             date_string=CHAT_DATE)
    except TemplateError as e:
        raise UsageError(f"the chat template cannot render a user/assistant/user chat ({e})") from None


def chat_prompt_ids(tokenizer, user_message):
    """Token ids of a one-message chat, ending with the assistant header the model answers after."""
    text = render_chat(tokenizer, [{"role": "user", "content": user_message}], add_generation_prompt=True)
    return tokenizer(text, add_special_tokens=False).input_ids


def _answered_turn(tokenizer, instruction, answer="SCORE_ANSWER"):
    """Render [user, assistant(answer), user(instruction)] and cut it at the answer. Returns the rendered
    text, the template's end-of-turn token (text and id) and where it starts. Raises UsageError, naming the
    template feature, when the chat is not "prompt + answer + end token + glue"."""
    prompt = render_chat(tokenizer, [{"role": "user", "content": "x"}], add_generation_prompt=True)
    chat = render_chat(tokenizer, [{"role": "user", "content": "x"}, {"role": "assistant", "content": answer},
                                   {"role": "user", "content": instruction}], add_generation_prompt=True)
    if not chat.startswith(prompt):
        # DeepSeek-R1 distills open the answer with "<think>\n", Qwen3 with enable_thinking=False with an
        # empty think block; neither is kept once the turn is answered.
        same = os.path.commonprefix([prompt, chat])
        raise UsageError(f"the chat template's generation prompt ends with {prompt[len(same):]!r}, which it leaves "
                         f"out of answered turns; pass a template whose generation prompt is kept in the history")
    before, found, after = chat[len(prompt):].partition(answer)
    if not found:
        raise UsageError("the chat template rewrites the content of earlier assistant turns; SCoRe needs them verbatim")
    if before.strip():
        raise UsageError(f"the chat template puts {before.strip()!r} between the generation prompt and the answer; "
                         f"pass a template whose generation prompt ends where the answer starts")
    # The end-of-turn token is the special token right after the answer (whitespace the template puts
    # between them, like Llama-2's ' ' + eos, is allowed: see check_chat_template).
    gap = len(after) - len(after.lstrip())
    added = tokenizer.get_added_vocab()  # special-token text -> id
    end_text = max((t for t in added if after.startswith(t, gap)), key=len, default=None)
    if end_text is None:
        raise UsageError(f"the chat template ends an assistant turn with {after[:20]!r}, not with a special token; "
                         f"SCoRe needs an end-of-turn token that sampling can stop on")
    return chat, end_text, added[end_text], len(chat) - len(after) + gap


def turn_end_id(tokenizer):
    """The token that closes an assistant turn in the chat template: <|im_end|> (ChatML), <|eot_id|>
    (Llama 3), <end_of_turn> (Gemma), <|end|> (Phi-3), </s> (Mistral). Not always the tokenizer's EOS
    (Gemma's is <eos>), so a cut-off or given attempt is closed with this one: the one the glue follows."""
    return _answered_turn(tokenizer, "x")[2]


def turn_glue_ids(tokenizer, end_ids, instruction):
    """The tokens that follow an assistant turn's end-of-turn token and lead into the next answer:
    for ChatML that is "\\n<|im_start|>user\\n{instruction}<|im_end|>\\n<|im_start|>assistant\\n".

    Why not re-render the whole chat for attempt 2? Decoding y1 and re-tokenizing it can give other
    tokens than the ones sampled, and then the log-probs we train on belong to a sequence the model
    never produced. Appending glue tokens to the sampled ids keeps attempt 1 exactly as sampled.
    The glue is cut from the tokens of the whole rendered chat, so it is tokenized in context."""
    chat, end_text, end_id, end_at = _answered_turn(tokenizer, instruction)
    if end_id not in end_ids:
        raise UsageError(f"the chat template ends turns with {end_text!r}, but sampling stops on {list(end_ids)}")
    ids = tokenizer(chat, add_special_tokens=False).input_ids
    # A special token is always one token, so the n-th end token in the text is the n-th end id in ids.
    nth = chat[:end_at].count(end_text)
    at = [i for i, t in enumerate(ids) if t == end_id][nth]
    return ids[at + 1:]


def check_chat_template(tokenizer):
    """Run once at load: render [user, assistant, user] with the model's own template and compare it with
    our token assembly, prompt + answer + [turn_end_id] + glue. Raises UsageError naming the template
    feature where they differ in a way this project cannot follow.
    _answered_turn checks the text (prompt, then the answer, then the end token) and turn_glue_ids cuts the
    glue from the chat's own tokens, so the tokens left to compare here are the prompt's."""
    answer = "SCORE_ANSWER"
    chat = _answered_turn(tokenizer, "x", answer)[0]
    prompt, ids = chat_prompt_ids(tokenizer, "x"), tokenizer(chat, add_special_tokens=False).input_ids
    if ids[:len(prompt)] != prompt:
        raise UsageError("the tokenizer splits the chat prompt differently once an answer follows it; "
                         "the sampled answer would not continue the prompt it was sampled after")
    prompt_text = render_chat(tokenizer, [{"role": "user", "content": "x"}], add_generation_prompt=True)
    if "strftime_now" in tokenizer.chat_template and CHAT_DATE not in prompt_text:
        raise UsageError("the chat template writes today's date (strftime_now) into the prompt and ignores "
                         "date_string, so training and evaluation on different days see different prompts")
    # Reasoning templates (Qwen3, DeepSeek-R1) drop <think>...</think> from earlier assistant turns. Our
    # attempt 2 sees y1 as sampled, thoughts and all, so it would train on a conversation the model is
    # never shown at test time. Keeping both views would need a second forward pass per episode.
    thought = f"<think>\nSCORE_THOUGHT\n</think>\n\n{answer}"
    if thought not in render_chat(tokenizer, [{"role": "user", "content": "x"}, {"role": "assistant", "content": thought},
                                              {"role": "user", "content": "x"}], add_generation_prompt=True):
        raise UsageError("the chat template drops <think>...</think> from earlier assistant turns, so attempt 2 would "
                         "see a y1 the template never shows; use a non-thinking model (e.g. Qwen2.5-Instruct) or "
                         "remove that rule from its chat_template")
    # What we accept: whitespace the template adds around the answer or trims from it (Llama 3 and Gemma
    # `| trim`, Mistral's ' ' + content, Llama-2's ' ' + eos). Our rows keep the answer exactly as sampled,
    # whitespace included, because those are the tokens the model chose; a re-rendered history would differ
    # only by that whitespace, which a model trained on its own template rarely emits at a turn's ends.


# ----------------------------------------------------------------------------- sampling

# Sampling lives in support/sampler.py (Sampler): a decode loop of its own with a static KV cache, bf16
# weights on a GPU, and the log-prob of every token it draws. token_logprobs below stays THE log-prob
# function every update trusts; the sampler's own log-probs only measure and correct the gap to it.


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
    hidden = model.base_model(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids,
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
