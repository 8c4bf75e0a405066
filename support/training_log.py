"""
Step 7 of both stages, the training log (log_step): one printed line per step, the same as a JSONL
record in {out_dir}/logs/stage{1,2}.jsonl, and every --sample_every steps a few decoded (problem, y1,
y2, rewards) in stage{1,2}_samples.jsonl. Under torchrun rank 0 logs the whole batch once.

The printed line: reward per attempt; on the batch, delta, delta i->c and delta c->i (reward.py:
self_correction_metrics); KL per turn; the share of attempts cut off by max_new_tokens (cut-off answers
score 0, so a high rate means the run drifts on the KL alone); `mis`, the sampler/trainer mismatch;
sampled tokens per second; the step's seconds.
"""

from tqdm import tqdm

from reward import self_correction_metrics
from support.checkpoints import append_jsonl
from support.distributed import all_gather, rank_and_world_size


def log_step(step, episodes, stats, seconds, log_path, samples_path, sample_every, problems):
    """Step 7 of both stages: one printed line, the same as a JSONL record, and a few decoded episodes
    now and then. Works for one turn too (stage2.py --single_turn). Under torchrun each rank holds a share of the
    batch: the per-episode facts are gathered and rank 0 alone logs the whole batch, once."""
    turns = episodes.rewards.shape[0]
    mismatch_keys = [k for k in ("mismatch", "mismatch_outside", "is_clipped") if k in stats]
    shares = all_gather({"correct": episodes.rewards.bool().tolist(), "truncated": episodes.truncated.tolist(),
                         "tokens": int(episodes.action_masks.sum()), "kl": stats["kl"], "loss": stats["loss"],
                         **{k: stats[k] for k in mismatch_keys}})
    if rank_and_world_size()[0] != 0:
        return None
    correct = [sum((s["correct"][t] for s in shares), []) for t in range(turns)]
    truncated = [sum((s["truncated"][t] for s in shares), []) for t in range(turns)]
    kl = [sum(s["kl"][t] for s in shares) / len(shares) for t in range(turns)]  # equal shares: mean of means
    record = {"step": step}
    for t in range(turns):
        record.update({f"reward_t{t + 1}": sum(correct[t]) / len(correct[t]), f"kl_t{t + 1}": kl[t],
                       f"truncated_t{t + 1}": sum(truncated[t]) / len(truncated[t])})
    line = " ".join(f"r{t + 1} {record[f'reward_t{t + 1}']:.3f}" for t in range(turns))
    if turns > 1:  # the batch's self-correction flows, attempt 1 -> 2
        m = self_correction_metrics(correct[0], correct[1])
        record.update(delta=m["delta"], delta_i2c=m["delta_i2c"], delta_c2i=m["delta_c2i"])
        line += f" | delta {m['delta']:+.3f} i->c {m['delta_i2c']:.3f} c->i {m['delta_c2i']:.3f}"
    record.update({k: sum(s[k] for s in shares) / len(shares) for k in mismatch_keys})  # equal shares
    record.update(loss=sum(s["loss"] for s in shares), grad_norm=stats["grad_norm"],
                  sampled_tokens_per_s=sum(s["tokens"] for s in shares) / seconds["rollout"], **seconds)
    kls = " ".join(f"kl{t + 1} {kl[t]:.4f}" for t in range(turns))
    truncs = "/".join(f"{record[f'truncated_t{t + 1}']:.2f}" for t in range(turns))
    # mis: mean |log pi - log pi_sampler| per sampled token (the sampler vs token_logprobs; IS corrects it)
    mis = f"mis {record['mismatch']:.4f} | " if "mismatch" in record else ""
    tqdm.write(f"step {step:4d} | {line} | {kls} | trunc {truncs} | {mis}{record['sampled_tokens_per_s']:.0f} tok/s | "
               f"{sum(seconds.values()):.1f}s")
    append_jsonl(log_path, record)
    if step % sample_every == 0:  # a few of rank 0's own episodes: the first sample of a few problems
        k = episodes.samples_per_problem
        for i in range(0, min(3 * k, len(episodes.responses[0])), k):
            p = problems[i // k]
            append_jsonl(samples_path, {"step": step, "problem": p.question, "answer": p.answer,
                                        **{f"y{t + 1}": episodes.responses[t][i] for t in range(turns)},
                                        **{f"r{t + 1}": bool(episodes.rewards[t, i]) for t in range(turns)}})
    return record
