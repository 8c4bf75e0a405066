"""
The policy-gradient update of SCoRe (the paper's Eq. 2), for both stages: REINFORCE with a KL
penalty against the fixed reference pi_ref, on every turn of a batch of two-attempt episodes.

    Eq. 2   max_theta  E[ r(y_t, y*) - beta_t * KL(pi(.|x_t) || pi_ref(.|x_t)) ]     for each turn t

    R_t = r_t - beta_t * KL_t     turn t's own reward and KL, nothing from the other turn (gamma = 0)
    A_t = R_t - baseline_t        leave-one-out over the k samples of a problem (RLOO), or 0
    loss = -1/N sum_i sum_t A_t,i * w * log pi(y_t,i)      w: the truncated importance weight below

The stages differ only in what they pass: Stage I (Eq. 3) rewards attempt 2 alone and pins attempt 1
with a strong beta2; Stage II (Eq. 4) rewards both, attempt 2 with the shaping bonus. This file imports
only torch and model.py, so it can be copied on its own; under torchrun the stages pass the gradient
averaging in (support/distributed.py: average_gradients).

    rloo_advantages               A = R - mean of the other k - 1 samples' R
    truncated_importance_weights  min(pi_theta / pi_sampler, C) per token, no gradient (Yao et al. 2025)
    policy_gradient_loss          the REINFORCE loss in a few lines
    reinforce_update              4. reference log-probs, 5. KL, 6. loss, backward, step (the stages' steps)
    make_optimizer                Adam (Table 5)
"""

import math

import torch

from model import autocast, token_logprobs


def rloo_advantages(rewards, k):
    """reward minus the mean reward of the other k - 1 samples of the same problem (RLOO).
    rewards: (..., N) with the k samples of each problem adjacent. An unbiased baseline: it does
    not depend on the sample it is subtracted from."""
    grouped = rewards.unflatten(-1, (-1, k))  # (..., N / k, k)
    others_mean = (grouped.sum(-1, keepdim=True) - grouped) / (k - 1)
    return (grouped - others_mean).flatten(-2)


def truncated_importance_weights(logp, sampler_logp, clip):
    """Token-level truncated importance sampling (Yao et al. 2025, "Your efficient RL framework
    secretly brings you off-policy RL training"; the correction verl and OpenRLHF adopt):
        w_t = min(pi_theta(y_t) / pi_sampler(y_t), C)      no gradient through w
    The sampler (support/sampler.py: bf16 weights, KV cache) and the trainer (token_logprobs: fp32 master
    weights under autocast, one full forward) compute slightly different numbers, so the tokens
    were drawn from pi_sampler, not from the pi_theta we differentiate. w reweights each token's
    policy-gradient term back to pi_theta; truncating at C bounds the variance (sequence-level
    ratios, products of hundreds of these, are unstable). With identical numerics w is exactly 1.
    logp, sampler_logp: (b, T-1); sampler_logp is NaN where nothing was sampled (a given attempt): w = 1."""
    ratio = torch.exp(logp.detach() - sampler_logp.nan_to_num(nan=0.0)).where(~sampler_logp.isnan(), 1.0)
    return ratio.clamp(max=clip)


def policy_gradient_loss(logp, masks, advantages, n_episodes, weights=None):
    """REINFORCE: -1/N sum_i sum_t A_t,i * log pi(y_t,i), where log pi(y) sums the turn's tokens.
    logp (B, T-1) carries the gradient; masks (turns, B, T-1); advantages (turns, B) must not.
    weights (B, T-1), optional: each token's importance weight (truncated_importance_weights).
    The reward reaches the gradient only here, as the weight of log pi: the popular bug
    `-reward.mean() + beta * KL` with a gradient-free reward trains on the KL alone."""
    assert not advantages.requires_grad, "advantages are weights: detach them"
    if weights is not None:
        assert not weights.requires_grad, "importance weights carry no gradient"
        logp = weights * logp
    return -(advantages.unsqueeze(-1) * logp.unsqueeze(0) * masks).sum() / n_episodes


def reinforce_update(policy, reference, optimizer, episodes, task_rewards, kl_coefs, cfg, bf16=None,
                     logprob_fn=token_logprobs, average_gradients=None):
    """One update of Eq. 2 on every turn of a batch of episodes, with gamma = 0 credit:
        R_t = r_t - beta_t * KL_t     (turn t's own task reward and KL, nothing from other turns)
        A_t = R_t - baseline_t        (RLOO over the k samples of the problem, or 0)
    task_rewards (turns, N): what each stage rewards; kl_coefs (turns,): beta per turn. bf16: whether the
    policy and the reference both compute under bf16 autocast (model.use_bf16; None: its automatic choice).
    Each token's term is weighted by its truncated importance weight when the episodes carry the
    sampler's log-probs and cfg.is_clip > 0. Returns the loss, gradient norm, KL per turn and the
    sampler/trainer mismatch (mean |log pi_theta - log pi_sampler| per sampled token, the share of
    ratios outside [0.5, 2], the share clipped at C).
    logprob_fn: the per-token log-prob function (bench.py passes its naive variant to compare).
    average_gradients(policy), optional: called once after backward, before the step; under torchrun
    the stages pass support.distributed.average_gradients, so the update is that of the whole batch."""
    k, n = episodes.samples_per_problem, episodes.input_ids.shape[0]
    chunk = k * max(1, cfg.micro_batch // k)  # whole problems per micro-batch: RLOO needs all k together
    device = episodes.input_ids.device
    use_is = episodes.sampler_logprobs is not None and cfg.is_clip > 0
    # Problems ordered by their longest row, so each micro-batch holds rows of similar length and is
    # cut to its own longest row below: less padding to run through the model. Rows of a problem stay
    # together (RLOO); the order changes nothing else, since every sum below is over all episodes.
    lengths = episodes.attention_mask.sum(-1)  # (N,) real tokens; rows are right padded, so columns 0..length-1
    by_length = lengths.view(-1, k).max(-1).values.argsort()  # problems, shortest first
    order = (by_length[:, None] * k + torch.arange(k, device=device)).flatten()  # their rows, k at a time
    kl = torch.zeros_like(task_rewards)
    # sampler/trainer mismatch, summed over drawn tokens: |log ratio|, ratios outside [0.5, 2], clipped, tokens
    loss_sum, mismatch = 0.0, torch.zeros(4, device=device)
    for start in range(0, n, chunk):
        rows = order[start:start + chunk]
        width = int(lengths[rows].max())  # this micro-batch's longest row; the rest is padding
        ids, attn = episodes.input_ids[rows, :width], episodes.attention_mask[rows, :width]
        masks = episodes.action_masks[:, rows, 1:width].float()  # token j+1 is predicted at position j
        actions = episodes.action_masks[:, rows, 1:width].any(0)  # (b, T-1): log-probs needed only here
        # 4. reference log-probs: the frozen base model, no graph, with the policy's numerics (same
        # weight dtype, same autocast), so log pi - log pi_ref is exactly 0 before the first update.
        # An autocast context per forward, never one around the loop: autocast keeps a weight's bf16
        # cast until its outermost context exits, and under FSDP2 (--shard true) a cast kept from an
        # earlier micro-batch routes later gradients wrongly (tests/test_sharding.py, bf16).
        with torch.no_grad(), autocast(device, bf16):
            ref_logp = logprob_fn(reference, ids, attn, only=actions)  # (b, T-1), 0 off the actions
        with autocast(device, bf16):
            logp = logprob_fn(policy, ids, attn, only=actions)  # (b, T-1), with graph
        # 5. KL per turn: k1 = sum over the turn's sampled tokens of log pi - log pi_ref. Its
        # expectation under pi is exactly KL(pi || pi_ref) of the whole attempt; as a reward
        # (no gradient of its own) the REINFORCE update is an unbiased gradient of Eq. 2's KL term.
        kl[:, rows] = ((logp.detach() - ref_logp).unsqueeze(0) * masks).sum(-1)
        total = task_rewards[:, rows] - kl_coefs[:, None] * kl[:, rows]
        advantages = rloo_advantages(total, k) if cfg.baseline == "rloo" else total
        # 6. loss and backward, each token's term weighted by its truncated importance weight: the
        # sampler drew the tokens with other numerics (truncated_importance_weights). Micro-batch
        # losses add up to the loss of the whole batch.
        weights = None
        if episodes.sampler_logprobs is not None:
            sampler_logp = episodes.sampler_logprobs[rows, :width - 1]  # (b, T-1), NaN on a given attempt
            drawn = masks.amax(0) * ~sampler_logp.isnan()  # (b, T-1): 1 on the tokens the sampler drew
            log_ratio = (logp.detach() - sampler_logp.nan_to_num(nan=0.0)) * drawn  # log pi / pi_sampler, else 0
            clip = cfg.is_clip if use_is else math.inf
            mismatch += torch.stack([log_ratio.abs().sum(), (log_ratio.abs() > math.log(2)).sum(),
                                     (log_ratio > math.log(clip)).sum(), drawn.sum()])
            if use_is:
                weights = truncated_importance_weights(logp, sampler_logp, cfg.is_clip)
        loss = policy_gradient_loss(logp, masks, advantages, n, weights)
        loss.backward()
        loss_sum += loss.item()
    if average_gradients is not None:  # several processes (torchrun): the mean gradient of the whole batch
        average_gradients(policy)
    grad_norm = torch.nn.utils.clip_grad_norm_(policy.parameters(), cfg.grad_clip)
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    if hasattr(grad_norm, "full_tensor"):  # a sharded policy's norm is a DTensor (support/sharding.py)
        grad_norm = grad_norm.full_tensor()
    stats = {"loss": loss_sum, "grad_norm": grad_norm.item(), "kl": kl.mean(-1).tolist()}
    if episodes.sampler_logprobs is not None:  # the mismatch, measured before any correction
        total_abs, outside, clipped, tokens = mismatch.tolist()
        stats.update(mismatch=total_abs / max(tokens, 1), mismatch_outside=outside / max(tokens, 1),
                     is_clipped=clipped / max(tokens, 1))
    return stats


def make_optimizer(policy, lr, device):
    """Adam (Table 5) over the policy's fp32 weights; on a GPU the fused kernel, one launch for all
    parameters instead of several per parameter tensor (same math)."""
    return torch.optim.Adam(policy.parameters(), lr=lr, fused=torch.device(device).type == "cuda")
