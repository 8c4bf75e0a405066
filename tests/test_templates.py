"""Chat templates of seven model families, against our token assembly (model.py, "chat formatting").

Each template below is a compact hand-written string with the structure of that family's real
chat_template (tokenizer_config.json on the hub): headers, end tokens, trim, default system prompts,
the date line, <think> handling. The tokenizer is one token per character plus the family's special
tokens, built in-process: no download. What each test pins down is whether
    chat_prompt_ids(user) + answer ids + [turn_end_id] + turn_glue_ids(instruction)
is the template's own rendering of [user, assistant(answer), user(instruction)], and, where it can't be,
that load-time checking stops with one line naming the template feature.
"""

import pytest
from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers
from transformers import PreTrainedTokenizerFast

from support.chat_template import (CHAT_DATE, chat_prompt_ids, check_chat_template, end_of_turn_ids, render_chat,
                                   turn_end_id, turn_glue_ids)
from support.settings import UsageError
from support.tiny import build_tiny_model

CHATML = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
LLAMA3 = ["<|begin_of_text|>", "<|end_of_text|>", "<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>"]
GEMMA = ["<bos>", "<eos>", "<start_of_turn>", "<end_of_turn>"]
PHI3 = ["<s>", "<|endoftext|>", "<|user|>", "<|assistant|>", "<|end|>"]

# Qwen2.5: ChatML with a default system prompt when none is given.
QWEN25 = ("{%- if messages[0].role != 'system' %}{{- '<|im_start|>system\\nYou are Qwen, created by Alibaba Cloud. "
          "You are a helpful assistant.<|im_end|>\\n' }}{%- endif %}{%- for m in messages %}"
          "{{- '<|im_start|>' + m.role + '\\n' + m.content + '<|im_end|>\\n' }}{%- endfor %}"
          "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}{%- endif %}")
# SmolLM2: the same, its own system prompt.
SMOLLM2 = QWEN25.replace("You are Qwen, created by Alibaba Cloud. You are a helpful assistant.",
                         "You are a helpful AI assistant named SmolLM, trained by Hugging Face")
# Qwen3: ChatML; an assistant turn before the last user message loses everything up to </think>.
QWEN3 = ("{%- for m in messages %}{%- set content = m.content %}"
         "{%- if m.role == 'assistant' and '</think>' in content %}"
         "{%- set content = content.split('</think>')[-1].lstrip('\\n') %}{%- endif %}"
         "{{- '<|im_start|>' + m.role + '\\n' + content + '<|im_end|>\\n' }}{%- endfor %}"
         "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}{%- if enable_thinking is defined and "
         "enable_thinking is false %}{{- '<think>\\n\\n</think>\\n\\n' }}{%- endif %}{%- endif %}")
# Llama 3.1 / 3.2: a system block with today's date (3.2 asks strftime_now unless date_string is given),
# every message trimmed, <|eot_id|> after each.
LLAMA32 = ("{{- bos_token }}{%- if not date_string is defined %}{%- if strftime_now is defined %}"
           "{%- set date_string = strftime_now('%d %b %Y') %}{%- else %}{%- set date_string = '26 Jul 2024' %}"
           "{%- endif %}{%- endif %}{{- '<|start_header_id|>system<|end_header_id|>\\n\\nCutting Knowledge Date: "
           "December 2023\\nToday Date: ' + date_string + '\\n\\n<|eot_id|>' }}{%- for m in messages %}"
           "{{- '<|start_header_id|>' + m.role + '<|end_header_id|>\\n\\n' + m.content | trim + '<|eot_id|>' }}"
           "{%- endfor %}{%- if add_generation_prompt %}{{- '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}"
           "{%- endif %}")
# Gemma-2: role "model", content trimmed, turns end with <end_of_turn> while the EOS is <eos>.
GEMMA2 = ("{{ bos_token }}{% for m in messages %}{% set role = 'model' if m.role == 'assistant' else m.role %}"
          "{{ '<start_of_turn>' + role + '\\n' + m.content | trim + '<end_of_turn>\\n' }}{% endfor %}"
          "{% if add_generation_prompt %}{{ '<start_of_turn>model\\n' }}{% endif %}")
# Mistral-7B-Instruct v0.1/v0.2: no generation prompt at all, the answer straight after [/INST], then </s>.
MISTRAL_V01 = ("{{ bos_token }}{% for m in messages %}{% if m.role == 'user' %}{{ '[INST] ' + m.content + ' [/INST]' }}"
               "{% else %}{{ m.content + eos_token }}{% endif %}{% endfor %}")
# Mistral-7B-Instruct v0.3: control tokens [INST] [/INST], and ' ' + trimmed content before </s>.
MISTRAL_V03 = ("{{ bos_token }}{% for m in messages %}{% if m.role == 'user' %}{{ '[INST] ' + m.content + '[/INST]' }}"
               "{% else %}{{ ' ' + m.content | trim + eos_token }}{% endif %}{% endfor %}")
# Phi-3-mini: <|end|> ends a turn, the EOS is <|endoftext|> (written only without a generation prompt).
PHI3_MINI = ("{% for m in messages %}{{ '<|' + m.role + '|>\\n' + m.content + '<|end|>\\n' }}{% endfor %}"
             "{% if add_generation_prompt %}{{ '<|assistant|>\\n' }}{% else %}{{ eos_token }}{% endif %}")

FAMILIES = {  # name: (template, special tokens, bos, eos, the end-of-turn token the template uses)
    "qwen2.5": (QWEN25, CHATML, None, "<|im_end|>", "<|im_end|>"),
    "smollm2": (SMOLLM2, CHATML, "<|im_start|>", "<|im_end|>", "<|im_end|>"),
    "llama3.2": (LLAMA32, LLAMA3, "<|begin_of_text|>", "<|eot_id|>", "<|eot_id|>"),
    "gemma2": (GEMMA2, GEMMA, "<bos>", "<eos>", "<end_of_turn>"),
    "mistral-v0.1": (MISTRAL_V01, ["<s>", "</s>"], "<s>", "</s>", "</s>"),
    "mistral-v0.3": (MISTRAL_V03, ["<s>", "</s>", "[INST]", "[/INST]"], "<s>", "</s>", "</s>"),
    "phi3": (PHI3_MINI, PHI3, "<s>", "<|endoftext|>", "<|end|>"),
}


def char_tokenizer(template, specials, bos=None, eos=None, split=r"[\s\S]", extra=()):
    """One token per character plus the given special tokens, as build_tiny_model makes its own
    (`split` and `extra` make some longer tokens)."""
    chars = [chr(i) for i in range(32, 127)] + ["\n"]
    vocab = {t: i for i, t in enumerate(["<pad>", "<unk>"] + specials + chars + list(extra))}
    backend = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.Split(Regex(split), behavior="isolated")
    backend.decoder = decoders.Fuse()
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=backend, pad_token="<pad>", unk_token="<unk>",
                                        bos_token=bos, eos_token=eos,
                                        additional_special_tokens=[s for s in specials if s not in (bos, eos)])
    tokenizer.chat_template = template
    return tokenizer


def family(name):
    template, specials, bos, eos, end = FAMILIES[name]
    return char_tokenizer(template, specials, bos, eos), end


def assembled_and_rendered(tokenizer, answer, instruction="Try again."):
    """(our token assembly, the template's own rendering) of [user, assistant(answer), user(instruction)]."""
    end = turn_end_id(tokenizer)
    ours = (chat_prompt_ids(tokenizer, "What is 2+2?") + tokenizer(answer, add_special_tokens=False).input_ids
            + [end] + turn_glue_ids(tokenizer, [end], instruction))
    chat = [{"role": "user", "content": "What is 2+2?"}, {"role": "assistant", "content": answer},
            {"role": "user", "content": instruction}]
    return ours, tokenizer(render_chat(tokenizer, chat, add_generation_prompt=True), add_special_tokens=False).input_ids


@pytest.mark.parametrize("name", ["qwen2.5", "smollm2", "llama3.2", "gemma2", "mistral-v0.1", "phi3"])
def test_assembly_is_the_templates_own_rendering(name):
    tokenizer, end_token = family(name)
    check_chat_template(tokenizer)
    assert turn_end_id(tokenizer) == tokenizer.convert_tokens_to_ids(end_token)
    ours, rendered = assembled_and_rendered(tokenizer, "5")
    assert ours == rendered
    glue = turn_glue_ids(tokenizer, [turn_end_id(tokenizer)], "Try again.")
    assert glue[0] != turn_end_id(tokenizer)  # no second end token after the answer's own
    assert "Try again." in tokenizer.decode(glue)


def test_the_tiny_model_passes_its_own_check():
    model, tokenizer = build_tiny_model()
    check_chat_template(tokenizer)
    assert turn_end_id(tokenizer) == tokenizer.eos_token_id
    assert end_of_turn_ids(model, tokenizer) == [tokenizer.eos_token_id]


@pytest.mark.parametrize("name", ["gemma2", "phi3"])
def test_end_of_turn_is_the_templates_token_not_eos_and_sampling_stops_on_it(name):
    """Gemma ends turns with <end_of_turn>, Phi-3 with <|end|>; their EOS is another token. A cut-off or
    given attempt is closed with the template's token, and sampling must stop on it even when the
    generation config lists only the EOS."""
    tokenizer, end_token = family(name)
    end = tokenizer.convert_tokens_to_ids(end_token)
    assert turn_end_id(tokenizer) == end != tokenizer.eos_token_id

    class Model:  # end_of_turn_ids reads only generation_config
        class generation_config:
            eos_token_id = tokenizer.eos_token_id
    assert end in end_of_turn_ids(Model, tokenizer) and tokenizer.eos_token_id in end_of_turn_ids(Model, tokenizer)
    with pytest.raises(UsageError, match="sampling stops on"):
        turn_glue_ids(tokenizer, [tokenizer.eos_token_id], "Try again.")


def test_llama_date_is_pinned_whatever_the_day():
    """Llama 3.2 prints strftime_now() unless date_string is given: we always give the same one."""
    tokenizer, _ = family("llama3.2")
    prompt = tokenizer.decode(chat_prompt_ids(tokenizer, "hi"))
    assert f"Today Date: {CHAT_DATE}\n" in prompt
    # A template that calls strftime_now without reading date_string can't be pinned: refused.
    tokenizer.chat_template = LLAMA32.replace("{%- if not date_string is defined %}", "{%- if true %}")
    with pytest.raises(UsageError, match="today's date"):
        check_chat_template(tokenizer)


@pytest.mark.parametrize("name", ["llama3.2", "gemma2", "mistral-v0.3"])
def test_whitespace_the_template_trims_or_adds_is_accepted(name):
    """Llama 3 and Gemma trim the content, Mistral v0.3 writes ' ' + trimmed content. We keep what the model
    sampled, whitespace included; the template's rendering differs from ours by whitespace only."""
    tokenizer, _ = family(name)
    check_chat_template(tokenizer)
    ours, rendered = assembled_and_rendered(tokenizer, " 5\n")
    assert ours != rendered
    assert tokenizer.decode(ours).replace(" ", "").replace("\n", "") == \
        tokenizer.decode(rendered).replace(" ", "").replace("\n", "")


def test_llama2_space_before_eos_leaves_no_second_end_token():
    """Llama-2-chat renders ' ' + content.strip() + ' ' + eos: the glue starts after that eos."""
    template = ("{% for m in messages %}{% if m.role == 'user' %}{{ bos_token + '[INST] ' + m.content.strip() + "
                "' [/INST]' }}{% else %}{{ ' ' + m.content.strip() + ' ' + eos_token }}{% endif %}{% endfor %}")
    tokenizer = char_tokenizer(template, ["<s>", "</s>"], "<s>", "</s>")
    check_chat_template(tokenizer)
    glue = turn_glue_ids(tokenizer, [tokenizer.eos_token_id], "Try again.")
    assert tokenizer.decode(glue) == "<s>[INST] Try again. [/INST]"


def test_qwen3_dropping_think_from_history_is_refused():
    tokenizer = char_tokenizer(QWEN3, CHATML + ["<think>", "</think>"], None, "<|im_end|>")
    with pytest.raises(UsageError, match=r"drops <think>\.\.\.</think> from earlier assistant turns"):
        check_chat_template(tokenizer)


def test_generation_prompt_missing_from_history_is_refused():
    """DeepSeek-R1 distills open every answer with '<think>\\n' that answered turns don't show."""
    template = ("{{ bos_token }}{% for m in messages %}{% if m.role == 'user' %}{{ '<|User|>' + m.content }}"
                "{% else %}{{ '<|Assistant|>' + m.content + eos_token }}{% endif %}{% endfor %}"
                "{% if add_generation_prompt %}{{ '<|Assistant|><think>\\n' }}{% endif %}")
    tokenizer = char_tokenizer(template, ["<s>", "</s>", "<|User|>", "<|Assistant|>"], "<s>", "</s>")
    with pytest.raises(UsageError, match=r"generation prompt ends with '<think>\\n'"):
        check_chat_template(tokenizer)


def test_turn_that_ends_in_plain_text_is_refused():
    template = ("{% for m in messages %}{{ '### ' + m.role + ':\\n' + m.content + '\\n\\n' }}{% endfor %}"
                "{% if add_generation_prompt %}{{ '### assistant:\\n' }}{% endif %}")
    tokenizer = char_tokenizer(template, ["<s>", "</s>"], "<s>", "</s>")
    with pytest.raises(UsageError, match="not with a special token"):
        check_chat_template(tokenizer)


def test_rollout_closes_given_and_cut_off_attempts_with_the_templates_end_token():
    """A tiny Llama behind the Gemma-2 template: a given attempt 1 (evaluate.py --repair) and a sampled one
    cut off by max_new_tokens are both followed by <end_of_turn> + glue, never by <eos>."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM
    from rollout import run_episodes
    from support.tasks import get_task, load_problems
    tokenizer, _ = family("gemma2")
    torch.manual_seed(0)
    model = LlamaForCausalLM(LlamaConfig(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64,
                                         num_hidden_layers=1, num_attention_heads=2, num_key_value_heads=2,
                                         pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id))
    model.generation_config.eos_token_id = tokenizer.eos_token_id  # lists only <eos>, as a GGUF export may
    task, problems = get_task("arithmetic"), load_problems("arithmetic", "test", limit=2, max_operand=4)
    end = tokenizer.convert_tokens_to_ids("<end_of_turn>")
    glue = turn_glue_ids(tokenizer, [end], task.instruction)
    for first_attempts in (["17", "3"], None):
        eps = run_episodes(model, tokenizer, task, problems, samples_per_problem=1, temperature=1.0,
                           max_new_tokens=1, first_attempts=first_attempts)
        for i in range(2):
            row = eps.input_ids[i].tolist()
            after_y1 = int(eps.action_masks[0, i].nonzero().max()) + 1
            if row[after_y1 - 1] != end:  # y1 did not end with <end_of_turn> itself: it gets one, not an action
                assert row[after_y1] == end and not eps.action_masks[:, i, after_y1].any()
                after_y1 += 1
            assert row[after_y1 - 1] == end and row[after_y1:after_y1 + len(glue)] == glue


def test_prompt_that_tokenizes_differently_before_an_answer_is_refused():
    """A GPT-2 style pre-tokenizer keeps a trailing "\\n\\n" as one token but splits it in front of a word:
    under Llama 3's template the answer would then follow tokens the model never sampled after."""
    _, specials, bos, eos, _ = FAMILIES["llama3.2"]
    tokenizer = char_tokenizer(LLAMA32, specials, bos, eos, split=r"\s+(?!\S)|\s+|[\s\S]", extra=["\n\n"])
    with pytest.raises(UsageError, match="splits the chat prompt differently"):
        check_chat_template(tokenizer)
