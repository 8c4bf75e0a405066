"""
The model side of SCoRe, shared by every script: load a policy and its frozen reference, format
chat turns, sample responses, and compute per-token log-probabilities.

    load_model / load_tokenizer   hub id, local folder, or a .gguf file
    build_tiny_model              a tiny Llama + character tokenizer made in-process (CPU tutorial)
    chat_prompt_ids / turn_glue_ids   the chat-template tokens around each assistant turn
    (sampling)                    in engine.py: engine.Sampler, which records its own log-probs
    token_logprobs                THE per-token log-prob function: policy, reference and evaluation

token_logprobs never builds the [batch, tokens, vocab] log-softmax of a whole batch: with Qwen's
151,936-token vocabulary that tensor alone is 20 GB for 64 x 512 tokens in bf16 (PAPER.md, pitfalls).
It projects hidden states to logits a chunk of tokens at a time and keeps only the chosen token's
log-prob; under autograd each chunk is checkpointed, so backward recomputes its logits instead of
storing them. Peak extra memory is chunk_tokens x vocab, whatever the batch.

The bottom of the file holds the plumbing the scripts share (config parsing, atomic checkpoints,
JSONL logs), so that each script stays a flat recipe.
"""

import ast
import argparse
import dataclasses
import inspect
import json
import os
import re
import shutil
import sys
from contextlib import nullcontext

import torch
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint


class UsageError(Exception):
    """Bad input a user can fix (missing checkpoint, unknown model, malformed data line).
    The scripts print it as one line instead of a traceback."""


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
    return tokenizer


def load_model(name, device, dtype=torch.float32, trainable=True):
    """A causal LM from a hub id, a local folder or a .gguf file.
    The policy keeps float32 weights: Adam's 5e-6 steps are below bf16's resolution (a bf16 weight
    of 1.0 can't move by less than 0.0078), so they would vanish. Speed comes from bf16 autocast.
    The frozen reference is loaded the same way (stage1.load_policy_and_reference), so that its
    log-probs are computed with exactly the policy's numerics (engine.py samples from a bf16 copy)."""
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
    model.to(device)
    model.train(trainable)
    model.requires_grad_(trainable)
    return model


def end_of_turn_ids(model, tokenizer):
    """Token ids that end an assistant turn: the tokenizer's EOS plus any the generation config adds
    (Qwen2.5 ends turns with <|im_end|> but also stops on <|endoftext|>)."""
    ids = {tokenizer.eos_token_id}
    extra = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
    ids.update(extra if isinstance(extra, list) else [extra])
    return sorted(i for i in ids if i is not None)


def autocast(device):
    """bf16 matmuls over float32 weights on a GPU; plain float32 on the CPU."""
    device = torch.device(device)
    return torch.autocast("cuda", dtype=torch.bfloat16) if device.type == "cuda" else nullcontext()


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

def chat_prompt_ids(tokenizer, user_message):
    """Token ids of a one-message chat, ending with the assistant header the model answers after."""
    text = tokenizer.apply_chat_template([{"role": "user", "content": user_message}],
                                         tokenize=False, add_generation_prompt=True)
    return tokenizer(text, add_special_tokens=False).input_ids


def turn_glue_ids(tokenizer, end_ids, instruction):
    """The tokens that follow an assistant turn's end-of-turn token and lead into the next answer:
    for ChatML that is "\\n<|im_start|>user\\n{instruction}<|im_end|>\\n<|im_start|>assistant\\n".

    Why not re-render the whole chat for attempt 2? Decoding y1 and re-tokenizing it can give other
    tokens than the ones sampled, and then the log-probs we train on belong to a sequence the model
    never produced. Appending glue tokens to the sampled ids keeps attempt 1 exactly as sampled."""
    marker = "SCORE_RESPONSE_MARKER"
    text = tokenizer.apply_chat_template(
        [{"role": "user", "content": "x"}, {"role": "assistant", "content": marker},
         {"role": "user", "content": instruction}], tokenize=False, add_generation_prompt=True)
    rest = text[text.index(marker) + len(marker):]
    for end_text in (tokenizer.decode([i]) for i in end_ids):
        if end_text and rest.startswith(end_text):  # the sampled turn already ends with this token
            rest = rest[len(end_text):]
            break
    return tokenizer(rest, add_special_tokens=False).input_ids


# ----------------------------------------------------------------------------- sampling

# Sampling lives in engine.py (engine.Sampler): a decode loop of its own with a static KV cache, bf16
# weights on a GPU, and the log-prob of every token it draws. token_logprobs below stays THE log-prob
# function every update trusts; the sampler's own log-probs only measure and correct the gap to it.


# ----------------------------------------------------------------------------- log-probs

def _chunk_logprobs(hidden, targets, weight, softcap):
    logits = F.linear(hidden, weight).float()  # (n, V), only n tokens at a time
    if softcap:  # Gemma-2 style final-logit soft-capping, so log-probs match the model's own
        logits = softcap * torch.tanh(logits / softcap)
    return logits.gather(-1, targets[:, None]).squeeze(-1) - logits.logsumexp(-1)


def token_logprobs(model, input_ids, attention_mask, chunk_tokens=1024):
    """log pi(token_t | tokens_<t) for t = 1..T-1, shape (B, T-1), float32.

    The naive version is two lines, and builds a (B, T-1, V) tensor:
        logp = model(input_ids, attention_mask=attention_mask).logits[:, :-1].float().log_softmax(-1)
        return logp.gather(-1, input_ids[:, 1:, None]).squeeze(-1)
    This computes the same numbers with at most chunk_tokens x V logits alive at a time.
    Position ids come from the attention mask, as generate() makes them, so a left-padded row gets
    the same log-probs here as when it was sampled."""
    position_ids = (attention_mask.long().cumsum(-1) - 1).clamp(min=0)
    hidden = model.base_model(input_ids=input_ids, attention_mask=attention_mask,
                              position_ids=position_ids).last_hidden_state  # (B, T, H)
    B, T, H = hidden.shape
    hidden = hidden[:, :-1].reshape(-1, H)  # position t predicts token t+1
    targets = input_ids[:, 1:].reshape(-1)
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
    return torch.cat(pieces).view(B, T - 1)


# ----------------------------------------------------------------------------- script plumbing

def _field_docs(cls):
    """The string literal under each dataclass field, used as its --help text (cleanrl's style)."""
    docs, body = {}, ast.parse(inspect.getsource(cls)).body[0].body
    for node, following in zip(body, body[1:]):
        if isinstance(node, ast.AnnAssign) and isinstance(following, ast.Expr) \
                and isinstance(following.value, ast.Constant):
            docs[node.target.id] = following.value.value
    return docs


def parse_config(cls, presets, argv=None):
    """Fill a settings dataclass from the command line: defaults, then --preset NAME's overrides,
    then explicit flags. Every field becomes --field (booleans take true/false)."""
    docs, parser = _field_docs(cls), argparse.ArgumentParser(description=(sys.modules[cls.__module__].__doc__ or "").split("\n\n")[0])
    parser.add_argument("--preset", choices=sorted(presets), help="a named set of overrides, e.g. tiny for the CPU tutorial")
    for f in dataclasses.fields(cls):
        kind = {bool: lambda s: s.lower() in ("1", "true", "yes")}.get(f.type, f.type)
        help_text = f"{docs.get(f.name, '')} (default: {f.default})".replace("%", "%%")  # argparse %-formats help
        parser.add_argument(f"--{f.name}", type=kind, default=None, help=help_text)
    args = vars(parser.parse_args(argv))
    values = dict(presets.get(args.pop("preset"), {}) if args.get("preset") else {})
    values.update({k: v for k, v in args.items() if v is not None})
    return cls(**values)


def require_device(device, script):
    """The default run is a GPU run; without one, say so in a line instead of crawling on a CPU."""
    if torch.device(device).type == "cuda" and not torch.cuda.is_available():
        raise UsageError(f"no CUDA device found; try the CPU tutorial `python {script} --preset tiny`, "
                         f"or pass --device cpu to run this configuration on the CPU anyway")


def save_checkpoint(model, tokenizer, config, path):
    """Write a save_pretrained folder plus the run's config, atomically: everything goes to a
    temporary folder first and is renamed into place, so a crash mid-save leaves the last good
    checkpoint (at `path`, or at `path.old` if it struck between the two renames)."""
    tmp, old = f"{path}.tmp", f"{path}.old"
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)
    with open(os.path.join(tmp, "score_config.json"), "w") as f:
        json.dump(config, f, indent=2)
    if os.path.isdir(path):
        shutil.rmtree(old, ignore_errors=True)
        os.rename(path, old)
    os.rename(tmp, path)
    shutil.rmtree(old, ignore_errors=True)


def find_checkpoint(path, hint):
    """The checkpoint folder at `path` (or the `.old` copy a crash mid-save left), else a clear error."""
    for candidate in (path, f"{path}.old"):
        if os.path.isfile(os.path.join(candidate, "score_config.json")):
            return candidate
    raise UsageError(f"no checkpoint at {path!r}; {hint}")


def read_run_config(checkpoint_path):
    with open(os.path.join(checkpoint_path, "score_config.json")) as f:
        return json.load(f)


def append_jsonl(path, record):
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    with open(path, "a") as f:
        f.write(json.dumps(record) + "\n")
