"""The policy-gradient pieces: RLOO, shaping, and proof that the reward reaches the gradient."""

import copy
from types import SimpleNamespace

import pytest
import torch

from model import token_logprobs
from reinforce import policy_gradient_loss, reinforce_update, rloo_advantages
from rollout import Episodes
from stage2 import shaped_rewards
from support.tiny import build_tiny_model


def test_rloo_subtracts_the_mean_of_the_other_samples():
    rewards = torch.tensor([1.0, 0.0, 0.0, 1.0, 5.0, 5.0])  # two problems, k = 3
    adv = rloo_advantages(rewards, k=3)
    expected = torch.tensor([1 - 0.0, 0 - 0.5, 0 - 0.5, 1 - 5.0, 5 - 3.0, 5 - 3.0])
    torch.testing.assert_close(adv, expected)
    # Per turn, too: (turns, N) keeps the turns apart.
    torch.testing.assert_close(rloo_advantages(torch.stack([rewards, -rewards]), 3), torch.stack([expected, -expected]))


def test_all_equal_rewards_give_zero_advantage():
    assert rloo_advantages(torch.ones(8), k=4).abs().max() == 0


@pytest.mark.parametrize("r1, r2, expected_r2", [(0, 1, 11.0), (1, 0, -10.0), (1, 1, 1.0), (0, 0, 0.0)])
def test_shaped_rewards_bonus(r1, r2, expected_r2):
    out1, out2 = shaped_rewards(torch.tensor([float(r1)]), torch.tensor([float(r2)]), alpha=10.0)
    assert out1.item() == r1  # attempt 1 keeps its own reward (gamma = 0)
    assert out2.item() == expected_r2  # wrong->right +alpha, right->wrong -alpha


def test_policy_gradient_loss_weights_logprobs_by_advantage():
    logp = torch.randn(2, 5, requires_grad=True)
    masks = torch.zeros(2, 2, 5)
    masks[0, :, :2] = 1  # turn 1: tokens 0-1
    masks[1, :, 2:4] = 1  # turn 2: tokens 2-3; token 4 is padding
    advantages = torch.tensor([[1.0, -2.0], [3.0, 0.5]])
    policy_gradient_loss(logp, masks, advantages, n_episodes=2).backward()
    expected = -torch.tensor([[1, 1, 3, 3, 0], [-2, -2, 0.5, 0.5, 0]]) / 2
    torch.testing.assert_close(logp.grad, expected)


def test_gradient_free_reward_is_rejected():
    logp = torch.randn(1, 3, requires_grad=True)
    with pytest.raises(AssertionError):
        policy_gradient_loss(logp, torch.ones(1, 1, 3), logp.sum(-1)[None], 1)


def make_episodes(model, tokenizer, answers, k):
    """Episodes whose attempt 2 is a fixed answer, for a direct check of the update's direction."""
    prompt = tokenizer("Q:1+1 A:", add_special_tokens=False).input_ids
    rows = [prompt + tokenizer(a, add_special_tokens=False).input_ids + [tokenizer.eos_token_id] for a in answers]
    width = max(map(len, rows))
    ids = torch.tensor([r + [0] * (width - len(r)) for r in rows])
    attn = torch.tensor([[1] * len(r) + [0] * (width - len(r)) for r in rows])
    masks = torch.zeros(2, len(rows), width, dtype=torch.bool)
    for i, r in enumerate(rows):
        masks[1, i, len(prompt):len(r)] = True
    return Episodes(input_ids=ids, attention_mask=attn, action_masks=masks, rewards=torch.zeros(2, len(rows)),
                    truncated=torch.zeros(2, len(rows), dtype=torch.bool),
                    problem_index=torch.arange(len(rows)) // k, responses=[answers, answers], samples_per_problem=k)


@pytest.mark.parametrize("baseline", ["rloo", "none"])
def test_update_raises_the_logprob_of_the_rewarded_answer(baseline):
    """The bug `-reward.mean() + beta * KL` gives no gradient from the reward: here one update with
    the reward on answer "2" must make "2" more likely and the unrewarded "3" less likely."""
    torch.manual_seed(0)
    policy, tokenizer = build_tiny_model(seed=0)
    reference = copy.deepcopy(policy).requires_grad_(False)
    episodes = make_episodes(policy, tokenizer, ["2", "3", "2", "3"], k=4)
    task_rewards = torch.tensor([[0.0] * 4, [1.0, 0.0, 1.0, 0.0]])
    cfg = SimpleNamespace(micro_batch=4, baseline=baseline, grad_clip=1.0)
    optimizer = torch.optim.SGD(policy.parameters(), lr=0.5)

    def answer_logprob():
        with torch.no_grad():
            lp = token_logprobs(policy, episodes.input_ids, episodes.attention_mask)
        return (lp * episodes.action_masks[1, :, 1:]).sum(-1)

    before = answer_logprob()
    stats = reinforce_update(policy, reference, optimizer, episodes, task_rewards, torch.tensor([0.1, 0.01]), cfg)
    after = answer_logprob()
    assert after[0] > before[0] and after[2] > before[2]  # rewarded answer: more likely
    if baseline == "rloo":
        assert after[1] < before[1]  # unrewarded answer: less likely (negative advantage)
    assert stats["kl"][1] == pytest.approx(0.0, abs=1e-5)  # policy == reference before the step


def test_equal_rewards_and_zero_kl_leave_the_policy_unchanged():
    """With RLOO, a batch where every sample earns the same has nothing to learn from."""
    policy, tokenizer = build_tiny_model(seed=0)
    reference = copy.deepcopy(policy).requires_grad_(False)
    episodes = make_episodes(policy, tokenizer, ["2", "3", "4", "5"], k=4)
    before = [p.detach().clone() for p in policy.parameters()]
    reinforce_update(policy, reference, torch.optim.SGD(policy.parameters(), lr=1.0), episodes,
                     torch.ones(2, 4), torch.tensor([0.1, 0.01]), SimpleNamespace(micro_batch=4, baseline="rloo",
                                                                                  grad_clip=1.0))
    assert all(torch.equal(a, b) for a, b in zip(before, policy.parameters()))


def test_micro_batches_give_the_same_gradient_as_one_batch():
    torch.manual_seed(0)
    base, tokenizer = build_tiny_model(seed=0)
    reference = copy.deepcopy(base).requires_grad_(False)
    with torch.no_grad():  # make policy != reference so the KL term is non-zero
        for p in reference.parameters():
            p.add_(0.01 * torch.randn_like(p))
    episodes = make_episodes(base, tokenizer, ["2", "3", "22", "3", "4", "5", "6", "2"], k=4)
    rewards = torch.tensor([[0, 1, 0, 1, 1, 1, 0, 0], [1, 0, 1, 1, 0, 0, 1, 0]], dtype=torch.float)
    grads = []
    for micro_batch in (8, 4):
        policy = copy.deepcopy(base)
        optimizer = torch.optim.SGD(policy.parameters(), lr=0.0)  # keep weights; read the gradient
        optimizer.zero_grad = lambda set_to_none=True: None
        reinforce_update(policy, reference, optimizer, episodes, rewards, torch.tensor([0.1, 0.01]),
                         SimpleNamespace(micro_batch=micro_batch, baseline="rloo", grad_clip=1e9),
                         bf16=False)  # fp32 on every CPU: under bf16 autocast batch shapes round differently
        grads.append(torch.cat([p.grad.flatten() for p in policy.parameters()]))
    torch.testing.assert_close(grads[0], grads[1], rtol=1e-4, atol=1e-7)
