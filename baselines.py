"""
The paper's supervised baselines: fine-tune on correction traces instead of running RL (the paper's
"Supervised fine-tuning on correction traces (STaR, Pair-SFT) also fails: it either mismatches the
model's own mistakes (distribution shift) or collapses to 'change nothing'").

    star       keep the model's own two-attempt episodes that went wrong -> right (r1 = 0, r2 = 1) and
               maximise log pi(y2 | x1, y1, p) on them (STaR-style filtering, Zelikman et al. 2022)
    pair_sft   pair a wrong attempt y_w with a right attempt y_c of the same problem, from any of its
               samples, and maximise log pi(y_c | x1, y_w, p) (Pair-SFT, Welleck et al. 2023)

Both minimise the NLL of the correction's tokens only: -sum_t log pi(y_t | y_<t, context) / #tokens.

Reads:  {out_dir}/stage1/score_config.json (the base model, task, training data and max_operand of
        the Stage I run), the starting model (--init; default the Stage I base model)
Writes: {out_dir}/baselines/{method}/ (save_pretrained folder + score_config.json, read by evaluate.py)
        {out_dir}/logs/baselines_{method}.jsonl (one line per epoch)
Run:    python baselines.py --method star        # one GPU, after python stage1.py
        python baselines.py --method pair_sft
        python baselines.py --preset tiny --method star   # CPU, after python stage1.py --preset tiny
        python evaluate.py --model out/baselines/star --name star

Where this departs from the paper:
1. One round: traces are sampled once from the starting model, then fine-tuned on. The paper's STaR
   iterates (sample, filter, fine-tune, sample again from the fine-tuned model).
2. Pair-SFT takes its pairs from the model's own attempts (both attempts of all k samples of a problem),
   every distinct (wrong, right) pair; nothing is paired across problems and nothing is capped.
3. The loss covers the correction only; x1, y_wrong and the instruction p are context. That is a
   choice made here: training on y1 as well would teach the wrong first answer.
4. Scale and optimiser (problems, k, epochs, Adam lr) are chosen here, not taken from the paper.
"""

import dataclasses
import os
import random
import sys
from dataclasses import dataclass

import torch

from model import autocast, load_model, load_tokenizer, token_logprobs
from rollout import episode_row, pad_rows, run_episodes
from support.chat_template import chat_prompt_ids, end_of_turn_ids, turn_end_id, turn_glue_ids
from support.checkpoints import append_jsonl, find_checkpoint, read_run_config, save_checkpoint
from support.distributed import all_gather, barrier, init_distributed, main_process_first
from support.settings import UsageError, parse_config, presets, require_device
from support.tasks import get_task, load_problems


@dataclass
class Config:
    method: str = "star"
    """star (the model's own wrong -> right episodes) or pair_sft (wrong attempt paired with a right one)"""
    init: str = ""
    """the starting model; empty: the Stage I run's base model (the paper's baselines start from the base)"""
    out_dir: str = "out"
    """where the Stage I checkpoint is; the baseline goes to {out_dir}/baselines/{method}"""
    task: str = ""
    """arithmetic, math or code; empty: the Stage I run's task"""
    train_data: str = ""
    """a local JSONL of training problems; empty: the Stage I run's"""
    problems: int = 512
    """training problems to sample episodes on"""
    samples_per_problem: int = 4
    """k, two-attempt episodes sampled per problem"""
    temperature: float = 1.0
    """sampling temperature of the traces (as in training, Table 5)"""
    max_new_tokens: int = 512
    """per attempt"""
    epochs: int = 2
    """passes over the SFT examples"""
    batch_size: int = 8
    """SFT examples per Adam step"""
    lr: float = 1e-5
    """Adam learning rate"""
    device: str = "cuda"
    """cuda or cpu"""
    seed: int = 0
    """seeds problem choice, sampling and the example order"""


# ----------------------------------------------------------------------------- the data

def star_examples(episodes):
    """Rows of the episodes that went wrong -> right (r1 = 0, r2 = 1): the successful corrections.
    right -> right is left out on purpose: it would teach "keep the answer", not "fix it"."""
    r1, r2 = episodes.rewards[0], episodes.rewards[1]  # (N,) each
    return torch.nonzero((r1 == 0) & (r2 == 1)).flatten().tolist()


def pair_sft_examples(responses_by_problem, correct_by_problem):
    """(wrong_text, right_text, problem_index) for every distinct pair of a wrong and a right attempt
    of the same problem. Always in that order: the model should learn wrong -> right, never the reverse.
    A problem with no right attempt, or no wrong one, gives no pairs."""
    pairs = []
    for i, (texts, correct) in enumerate(zip(responses_by_problem, correct_by_problem)):
        # dict.fromkeys: distinct texts in first-seen order, so the result is deterministic.
        wrong = list(dict.fromkeys(t for t, c in zip(texts, correct) if not c))
        right = list(dict.fromkeys(t for t, c in zip(texts, correct) if c))
        pairs += [(w, r, i) for w in wrong for r in right]
    return pairs


def sft_batch(examples, pad_id):
    """[(token ids, spans of the tokens to learn)] -> right-padded input_ids, attention_mask (B, T) and the
    loss mask (B, T-1), shifted by one because position j predicts token j+1 (token_logprobs)."""
    ids, attn, masks, _ = pad_rows([row for row, _ in examples], [spans for _, spans in examples], pad_id)
    return ids, attn, masks.any(0)[:, 1:].float()


# ----------------------------------------------------------------------------- the run

def main(cfg):
    if cfg.method not in ("star", "pair_sft"):
        raise UsageError(f"--method must be star or pair_sft, not {cfg.method!r}")
    stage1_path = find_checkpoint(os.path.join(cfg.out_dir, "stage1"), "run stage1.py first (same --out_dir)")
    stage1 = read_run_config(stage1_path)
    cfg.task = cfg.task or stage1["task"]
    cfg.train_data = cfg.train_data or stage1["train_data"]
    cfg.init = cfg.init or stage1["base_model"]
    require_device(cfg.device, "baselines.py")
    rank, world_size, cfg.device = init_distributed(cfg.device)
    torch.manual_seed(cfg.seed + rank)
    rng = random.Random(cfg.seed)
    task = get_task(cfg.task)
    with main_process_first():
        problems = load_problems(cfg.task, "train", cfg.train_data, seed=stage1["seed"],
                                 max_operand=stage1["max_operand"], mix=stage1.get("mix", ""))
    # torchrun: every rank draws the same problems and samples traces for its share of them.
    problems = rng.sample(problems, min(cfg.problems, len(problems)))[rank::world_size]
    tokenizer = load_tokenizer(cfg.init)
    model = load_model(cfg.init, torch.device(cfg.device), torch.float32, trainable=True)

    # 1. traces: k two-attempt episodes per problem, sampled from the starting model itself.
    episodes = run_episodes(model, tokenizer, task, problems, samples_per_problem=cfg.samples_per_problem,
                            temperature=cfg.temperature, max_new_tokens=cfg.max_new_tokens)
    n, k = episodes.input_ids.shape[0], cfg.samples_per_problem
    print(f"sampled {n} episodes: r1 {episodes.rewards[0].mean():.3f}, r2 {episodes.rewards[1].mean():.3f}")

    # 2. SFT examples as (token ids, spans of the tokens to learn) pairs.
    examples = []
    if cfg.method == "star":
        for i in star_examples(episodes):
            length = int(episodes.attention_mask[i].sum())
            # The tokens exactly as sampled; the loss sits on attempt 2's tokens (its mask includes its
            # end-of-turn token, so the model also learns to stop).
            y2 = episodes.action_masks[1, i].nonzero().flatten()
            examples.append((episodes.input_ids[i, :length].tolist(), [(int(y2[0]), int(y2[-1]) + 1)]))
    else:
        # Every attempt of a problem's k samples, both turns; row j*k..j*k+k-1 belong to problem j.
        texts = [[episodes.responses[t][j * k + s] for t in range(2) for s in range(k)] for j in range(len(problems))]
        correct = [[bool(episodes.rewards[t, j * k + s]) for t in range(2) for s in range(k)]
                   for j in range(len(problems))]
        end_ids = end_of_turn_ids(model, tokenizer)
        glue = turn_glue_ids(tokenizer, end_ids, task.instruction)
        end = turn_end_id(tokenizer)  # the template's end-of-turn token (Gemma: <end_of_turn>, not its <eos>)
        for wrong, right, j in pair_sft_examples(texts, correct):
            # [x1, y_w, glue with p, y_c], the row rollout.py builds for an episode, so the tokens around
            # the turns match what the model sees at evaluation; the loss sits on y_c alone. The texts are
            # re-tokenized: fine for SFT, where (unlike RL) nothing needs the exact sampled ids.
            x1 = chat_prompt_ids(tokenizer, task.first_prompt(problems[j]))
            y_w = tokenizer(wrong, add_special_tokens=False).input_ids + [end]
            y_c = tokenizer(right, add_special_tokens=False).input_ids + [end]
            row, spans = episode_row(x1, [y_w, y_c], glue, end)
            examples.append((row, spans[1:]))
    # torchrun: the SFT itself takes seconds next to the sampling, so rank 0 trains on every rank's
    # examples and the others are done.
    examples = [e for share in all_gather(examples) for e in share]
    if rank != 0:
        return
    if not examples:
        wanted = "successful corrections" if cfg.method == "star" else "problems with both a wrong and a right attempt"
        raise UsageError(f"no {wanted} among {n * world_size} episodes: sample more (--problems, --samples_per_problem)")
    print(f"{cfg.method}: {len(examples)} SFT examples from {n * world_size} episodes")

    # 3. fine-tune: NLL of the masked tokens, averaged over those tokens (never over padding).
    optimizer = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    model.train()
    for epoch in range(1, cfg.epochs + 1):
        rng.shuffle(examples)
        losses = []
        for start in range(0, len(examples), cfg.batch_size):
            ids, attn, mask = (x.to(cfg.device) for x in sft_batch(examples[start:start + cfg.batch_size],
                                                                    tokenizer.pad_token_id))
            with autocast(cfg.device):
                logp = token_logprobs(model, ids, attn)  # (B, T-1)
            loss = -(logp * mask).sum() / mask.sum()
            loss.backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            losses.append(loss.item())
        print(f"epoch {epoch}: loss {sum(losses) / len(losses):.4f} over {len(losses)} steps")
        append_jsonl(os.path.join(cfg.out_dir, "logs", f"baselines_{cfg.method}.jsonl"),
                     {"epoch": epoch, "loss": sum(losses) / len(losses), "examples": len(examples)})

    # 4. checkpoint, with what evaluate.py reads (task, max_operand) in its score_config.json.
    path = os.path.join(cfg.out_dir, "baselines", cfg.method)
    save_checkpoint(model, tokenizer, {"stage": "sft", **dataclasses.asdict(cfg), "base_model": stage1["base_model"],
                                       "max_operand": stage1["max_operand"], "mix": stage1.get("mix", ""),
                                       "examples": len(examples)}, path)
    print(f"saved {path}")


if __name__ == "__main__":
    try:
        main(parse_config(Config, presets("baselines")))
        barrier()  # every rank leaves together (support/distributed.py, barrier)
    except UsageError as e:
        sys.exit(f"error: {e}")
