"""
The SCoRe episode (the paper's two-attempt setup, with the prompts of its Appendix C): attempt 1,
the self-correction instruction, attempt 2.

    x1 = problem with the task prompt          y1 ~ pi(. | x1)
    x2 = [x1, y1, p]  (p = the instruction)    y2 ~ pi(. | x2)

With a chat model the turns are messages: user(x1), assistant(y1), user(p), assistant(y2).
`run_episodes` samples k episodes per problem and returns them as one `Episodes` batch whose
token rows hold the whole conversation, so one forward pass over a row gives the log-probs of
both attempts, each selected by its own action mask. The same code runs N attempts for the
paper's "more than two attempts" analysis (n_turns > 2 repeats the instruction).

    run_episodes   steps 1 and 2 of both stages: sample every attempt, score it (the task's verifier)
    episode_row    THE function that puts a conversation's token ids together, and where each attempt is
    pad_rows       rows of different lengths -> right-padded tensors and per-turn action masks

The prompts below are the paper's exact text (Appendix C).
"""

from dataclasses import dataclass

import torch

from support.chat_template import chat_prompt_ids, end_of_turn_ids, turn_end_id, turn_glue_ids
from support.sampler import Sampler
from support.settings import UsageError

MATH_PROMPT = (
    "You are a math expert. When you respond, respond only with the Solution of the final Problem, thinking "
    "step by step. At the end of the Solution, when you give your final answer, write it in the form "
    '"Final Answer: The final answer is $answer$. I hope it is correct."'
)

SELF_CORRECTION_INSTRUCTION = (
    "There might be an error in the solution above because of lack of understanding of the question. Please "
    "correct the error, if any, and rewrite the solution. Only output the final solution! At the end of the "
    'Solution, when you give your final answer, write it in the form "Final Answer: The final answer is '
    '$answer$. I hope it is correct."'
)

CODE_SELF_CORRECTION_INSTRUCTION = (
    "There might be an error in the code above because of lack of understanding of the question. Please "
    "correct the error, if any, and rewrite the solution. Only output the final correct Python program!"
)


@dataclass
class Episodes:
    """A batch of N = problems x k episodes of n_turns attempts each.

    Row i of input_ids is the whole conversation [x1, y1, glue, y2, pad...]; "glue" is the
    chat-template tokens plus the instruction p between attempts. Masks are aligned with input_ids:
    action_masks[t, i, j] is True when token j of row i was sampled by the policy at attempt t.
    That includes the attempt's end-of-turn token (the model must learn to stop) and excludes
    prompts, glue and padding (the model did not choose them)."""
    input_ids: torch.Tensor       # (N, T) long, right padded
    attention_mask: torch.Tensor  # (N, T) long, 1 on real tokens
    action_masks: torch.Tensor    # (n_turns, N, T) bool
    rewards: torch.Tensor         # (n_turns, N) float: the verifier's r(y_t, y*), 0 or 1
    truncated: torch.Tensor       # (n_turns, N) bool: attempt t hit max_new_tokens (reward is then usually 0)
    problem_index: torch.Tensor   # (N,) long: rows 0..k-1 share problem 0, and so on
    responses: list               # [n_turns][N] decoded attempts
    samples_per_problem: int      # k
    # (N, T-1) float, aligned with token_logprobs' output (position j holds the log-prob of token j+1):
    # log pi_sampler of each sampled token as the sampler computed it while sampling, 0 outside the
    # action masks, NaN on a given (not sampled) attempt. None: no sampler record, no IS correction.
    sampler_logprobs: torch.Tensor | None = None


def episode_row(prompt, attempts, glue, end_id, next_turn=False):
    """One conversation as token ids, the one place a row is put together (rollout, the tiny warm-up,
    the SFT baselines and bench.py all use it): x1, then each attempt y_t, with the glue (chat-template
    tokens and the instruction p) between two attempts.

        [x1 | y1 (+ end) | glue | y2 (+ end) | glue | ... | y_last]

    The glue follows the template's end-of-turn token, so an attempt the glue follows that does not end
    with it gets one the model did not write (not an action): an attempt cut off by max_new_tokens, one
    that stopped on another stop id (Gemma's <eos>, Qwen's <|endoftext|>), or a given text.
    next_turn=True: the context for the next attempt, every attempt closed and the glue after the last.
    Returns (ids, spans): spans[t] = (first, stop), the positions of y_t's own tokens in ids, which is
    turn t's action mask (it includes the attempt's end token when the model wrote one)."""
    ids, spans = list(prompt), []
    for t, y in enumerate(attempts):
        if t > 0:
            ids += glue
        spans.append((len(ids), len(ids) + len(y)))
        ids += y
        if (next_turn or t < len(attempts) - 1) and y[-1:] != [end_id]:
            ids.append(end_id)
    if next_turn and attempts:
        ids += glue
    return ids, spans


def pad_rows(rows, spans, pad_id, n_turns=None, logprobs=None):
    """Right-pad rows of token ids (episode_row's) into one batch:
        input_ids       (N, T) long, pad_id after each row
        attention_mask  (N, T) long, 1 on real tokens
        action_masks    (n_turns, N, T) bool, True on turn t's span of each row
        sampler_logprobs (N, T-1) float, or None without `logprobs` ([n_turns][N] lists, one log-prob per
                        token of the span): aligned with token_logprobs' output, position j holds token
                        j+1's, so token j's log-prob sits at j - 1; 0 elsewhere."""
    n_turns = n_turns if n_turns is not None else max(len(s) for s in spans)
    width = max(len(r) for r in rows)
    input_ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    attention_mask = torch.zeros((len(rows), width), dtype=torch.long)
    action_masks = torch.zeros((n_turns, len(rows), width), dtype=torch.bool)
    sampler_logprobs = torch.zeros((len(rows), width - 1)) if logprobs is not None else None
    for i, row in enumerate(rows):
        input_ids[i, :len(row)] = torch.tensor(row)
        attention_mask[i, :len(row)] = 1
        for turn, (first, stop) in enumerate(spans[i]):
            action_masks[turn, i, first:stop] = True
            if logprobs is not None:
                sampler_logprobs[i, first - 1:stop - 1] = torch.tensor(logprobs[turn][i])  # token j at j - 1
    return input_ids, attention_mask, action_masks, sampler_logprobs


def run_episodes(model, tokenizer, task, problems, *, samples_per_problem, temperature, max_new_tokens,
                 n_turns=2, batch_size=64, first_attempts: list[str] | None = None, sampler=None):
    """Sample k = samples_per_problem episodes for each problem and score every attempt.
    first_attempts (one text per problem) replaces sampling at attempt 1 with that given text, as in
    the paper's MBPP-R (offline repair of recorded wrong attempts, evaluate.py --repair).
    sampler: the support.sampler.Sampler of `model` that the training loop keeps (it holds a bf16 copy
    of the policy on a GPU); None makes one for this call (evaluation, baselines: no copy is kept)."""
    k, device = samples_per_problem, next(model.parameters()).device
    sampler = sampler or Sampler(model)
    if first_attempts is not None and len(first_attempts) != len(problems):
        raise UsageError(f"got {len(first_attempts)} first attempts for {len(problems)} problems")
    end_ids = end_of_turn_ids(model, tokenizer)
    end = turn_end_id(tokenizer)  # the template's end-of-turn token: the one the glue follows
    glue = turn_glue_ids(tokenizer, end_ids, task.instruction)
    max_len = getattr(model.config, "max_position_embeddings", None)
    problems_k = [p for p in problems for _ in range(k)]

    prompts = [chat_prompt_ids(tokenizer, task.first_prompt(p)) for p in problems_k]  # x1
    attempts = [[] for _ in prompts]  # the token ids of each episode's attempts so far
    responses, truncated, sampler_logps = [], [], []
    for turn in range(n_turns):
        # The conversation so far: x1, or [x1, y1, glue with p, ...] ready for attempt turn + 1.
        contexts = [episode_row(x, ys, glue, end, next_turn=True)[0] for x, ys in zip(prompts, attempts)]
        longest = max(len(c) for c in contexts) + max_new_tokens
        if max_len is not None and longest > max_len:
            raise UsageError(f"attempt {turn + 1} needs {longest} positions but the model has {max_len}; "
                             f"lower --max_new_tokens or use shorter problems")
        if turn == 0 and first_attempts is not None:
            # A given attempt 1: its text's tokens plus the end-of-turn token, as if the model had written
            # them. Everything after it (masks, glue, rewards) treats it like a sampled attempt.
            ys = [tokenizer(y, add_special_tokens=False).input_ids + [end] for y in first_attempts for _ in range(k)]
            cut_off = [False] * len(ys)
            lps = [[float("nan")] * len(y) for y in ys]  # nobody sampled them: no sampler log-prob
        else:
            # 1. (and 2.) an attempt: sample y_t given the conversation so far (support/sampler.py).
            ys, cut_off, lps = sampler.sample(contexts, max_new_tokens=max_new_tokens, temperature=temperature,
                                              end_ids=end_ids, pad_id=tokenizer.pad_token_id, batch_size=batch_size)
        for so_far, y in zip(attempts, ys):
            so_far.append(y)
        sampler_logps.append(lps)
        responses.append([tokenizer.decode(y, skip_special_tokens=True) for y in ys])
        truncated.append(cut_off)

    # The whole conversation, ending with the last attempt, and each attempt's span in it.
    rows, spans = zip(*(episode_row(x, ys, glue, end) for x, ys in zip(prompts, attempts)))
    input_ids, attention_mask, action_masks, sampler_logprobs = pad_rows(rows, spans, tokenizer.pad_token_id,
                                                                         n_turns, logprobs=sampler_logps)
    rewards = torch.tensor([task.score(responses[t], problems_k) for t in range(n_turns)], dtype=torch.float)
    return Episodes(input_ids=input_ids.to(device), attention_mask=attention_mask.to(device),
                    action_masks=action_masks.to(device), rewards=rewards.to(device),
                    truncated=torch.tensor(truncated, device=device),
                    problem_index=torch.arange(len(problems), device=device).repeat_interleave(k),
                    responses=responses, samples_per_problem=k, sampler_logprobs=sampler_logprobs.to(device))
