"""
The CPU tutorial's model: a tiny Llama and a character tokenizer built in-process (no download), and
the supervised warm-up that makes it a base model worth training (right about half the time).

    build_tiny_model(seed)                     the model and its ChatML tokenizer, random weights
    warm_up_tiny_base(model, tokenizer, ...)   a few seconds of SFT on two-turn conversations

stage1.py --preset tiny builds, warms up and saves it as {out_dir}/base, the reference pi_ref.
"""

import random

import torch

from model import token_logprobs
from rollout import episode_row, pad_rows
from support.chat_template import chat_prompt_ids, end_of_turn_ids, turn_end_id, turn_glue_ids

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


def warm_up_tiny_base(model, tokenizer, task, problems, steps=200, p_correct=0.5, seed=0):
    """Supervised warm-up of the tiny model on two-turn conversations whose answers are right with
    probability p_correct and otherwise a random wrong number, independently per attempt. The result
    answers in the right format and is right about p_correct of the time at temperature 1: a base
    model with room to improve and no habit of self-correcting."""
    rng = random.Random(seed)
    end_ids = end_of_turn_ids(model, tokenizer)
    glue = turn_glue_ids(tokenizer, end_ids, task.instruction)
    end = turn_end_id(tokenizer)  # the template's end of turn, as rollout.py closes attempts
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)

    token_cache = {}  # 25 distinct problems and a few dozen answers: tokenize each once, not every step

    def tokens(key, make):
        if key not in token_cache:
            token_cache[key] = make()
        return token_cache[key]

    def answer_ids(p):
        value = p.answer if rng.random() < p_correct else str(int(p.answer) + rng.choice([-2, -1, 1, 2, 3]))
        return tokens(("answer", value), lambda: tokenizer(value, add_special_tokens=False).input_ids + [end])

    for _ in range(steps):
        rows, spans = [], []
        for p in rng.sample(problems, min(32, len(problems))):
            prompt = tokens(("prompt", p.id), lambda: chat_prompt_ids(tokenizer, task.first_prompt(p)))
            y1, y2 = answer_ids(p), answer_ids(p)
            row, row_spans = episode_row(prompt, [y1, y2], glue, end)  # [x1, y1, glue with p, y2]
            rows.append(row)
            spans.append(row_spans)
        ids, attn, action_masks, _ = pad_rows(rows, spans, tokenizer.pad_token_id)
        mask = action_masks.any(0)[:, 1:].float()  # both answers; position j predicts token j+1
        loss = -(token_logprobs(model, ids, attn) * mask).sum() / mask.sum()
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    return model
