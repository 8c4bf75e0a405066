"""
The chat template around SCoRe's turns: the tokens before an answer, after it, and between two attempts.

A reader of SCoRe needs only this: attempt 2's context is the token ids
    prompt ids (chat_prompt_ids) + y1 as sampled + [turn_end_id] + glue ids (turn_glue_ids, with p)
and sampling stops on end_of_turn_ids. The rest of this file makes sure that is what the model's own
chat template renders for the same chat, once, when the tokenizer is loaded (check_chat_template).

    render_chat, chat_prompt_ids      a chat's text, and the ids of the first prompt x1
    turn_end_id, end_of_turn_ids      the template's end-of-turn token; every id that ends a turn
    turn_glue_ids                     the ids between attempt t's end token and attempt t + 1
    check_chat_template               run at load: our token assembly reproduces the template, or a one-line error
"""

import os

from support.settings import UsageError

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


def end_of_turn_ids(model, tokenizer):
    """Token ids that end an assistant turn, so sampling stops on any of them: the chat template's own
    end-of-turn token (turn_end_id), the tokenizer's EOS, and any the generation config adds (Qwen2.5
    ends turns with <|im_end|> but also stops on <|endoftext|>; Gemma's EOS is <eos>, not <end_of_turn>)."""
    ids = {tokenizer.eos_token_id, turn_end_id(tokenizer)}
    extra = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
    ids.update(extra if isinstance(extra, list) else [extra])
    return sorted(i for i in ids if i is not None)

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
