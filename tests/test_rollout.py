"""rollout.py: the episode's token layout and its action masks."""

import pytest
import torch

from rollout import MATH_PROMPT, SELF_CORRECTION_INSTRUCTION, run_episodes
from support.tasks import get_task, load_problems
from support.tiny import build_tiny_model


@pytest.fixture(scope="module")
def episodes():
    model, tokenizer = build_tiny_model(seed=0)
    task = get_task("arithmetic")
    problems = load_problems("arithmetic", "train", limit=3, max_operand=4)
    torch.manual_seed(0)
    eps = run_episodes(model, tokenizer, task, problems, samples_per_problem=2, temperature=1.0,
                       max_new_tokens=5, n_turns=3)
    return eps, tokenizer, task


def test_shapes_and_groups(episodes):
    eps, _, _ = episodes
    n_turns, N, T = eps.action_masks.shape
    assert (n_turns, N) == (3, 6) and eps.input_ids.shape == (N, T)
    assert eps.rewards.shape == eps.truncated.shape == (3, 6)
    assert eps.problem_index.tolist() == [0, 0, 1, 1, 2, 2]


def test_masks_select_exactly_each_attempt_with_its_end_token(episodes):
    eps, tokenizer, _ = episodes
    for t in range(3):
        for i in range(6):
            tokens = eps.input_ids[i][eps.action_masks[t, i]].tolist()
            assert tokenizer.decode(tokens, skip_special_tokens=True) == eps.responses[t][i]
            ends_with_eos = tokens[-1] == tokenizer.eos_token_id
            assert ends_with_eos != bool(eps.truncated[t, i])  # the end token is an action, when emitted


def test_masks_are_disjoint_and_exclude_prompt_glue_and_padding(episodes):
    eps, tokenizer, task = episodes
    assert eps.action_masks.sum(0).max() <= 1  # no token belongs to two attempts
    assert not (eps.action_masks.any(0) & (eps.attention_mask == 0)).any()  # never on padding
    for i in range(6):
        between = eps.input_ids[i][~eps.action_masks[:, i].any(0) & (eps.attention_mask[i] == 1)]
        text = tokenizer.decode(between.tolist())
        assert text.count(task.instruction) == 2  # the glue after attempts 1 and 2, unmasked
        assert "What is" in text  # the problem, unmasked


def test_attempts_follow_each_other_in_order(episodes):
    eps, _, _ = episodes
    for i in range(6):
        starts = [eps.action_masks[t, i].nonzero()[0].item() for t in range(3)]
        assert starts == sorted(starts)


def test_prompt_longer_than_context_is_a_clear_error():
    from support.settings import UsageError
    model, tokenizer = build_tiny_model(seed=0)
    problems = load_problems("arithmetic", "train", limit=1)
    with pytest.raises(UsageError, match="positions but the model has"):
        run_episodes(model, tokenizer, get_task("arithmetic"), problems, samples_per_problem=1,
                     temperature=1.0, max_new_tokens=10_000)


def test_paper_prompts_are_verbatim():
    assert MATH_PROMPT.startswith("You are a math expert. When you respond, respond only with the Solution")
    assert SELF_CORRECTION_INSTRUCTION.startswith("There might be an error in the solution above because of "
                                                  "lack of understanding of the question.")
    assert SELF_CORRECTION_INSTRUCTION.endswith('"Final Answer: The final answer is $answer$. I hope it is correct."')
