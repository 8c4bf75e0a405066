"""
Rewards: the verifier r(y, y*) in {0, 1} that is SCoRe's only teacher, and the paper's metrics over
those scores.

SCoRe rewards an attempt with 1 when its final answer matches the gold answer (math) or its program
passes all the tests (code), and 0 otherwise: binary, no partial credit. A false positive rewards a
wrong answer and a false negative punishes a right one, so the MATH checker tries to agree with a
careful human grader, and is measured on hand-labelled pairs in tests/math_equiv_cases.jsonl
(tests/test_reward_math.py).

    math_reward(response, gold)        1.0 / 0.0 for a MATH solution; never raises
    is_equiv(pred, gold, timeout_s)    do two MATH answers state the same thing?
    arithmetic_reward(response, gold)  1.0 / 0.0 for the synthetic arithmetic task
    code_reward(s)(responses, tests)   1.0 / 0.0: the program passes its tests (support/sandbox.py runs it)
    self_correction_metrics(c1, c2)    Acc@t1, Acc@t2, delta, delta_i2c, delta_c2i (the columns of Table 2)

How is_equiv decides, cheapest step first (the rules themselves: support/math_answers.py):
1. normalize both strings (units, \\left, spacing, ...); `;` separates list items like `,`; an
   inequality (x <= 5, -2 <= x < 7, 0 < f(x) < 1, several joined by "or", or in |x|: 1 <= |z| <= 2)
   becomes its interval or union, open and closed ends kept;
2. read each answer's shape: matrix, union of intervals, tuple / interval (order and brackets
   matter), unordered list or set (order does not; a list of tuples is a set of solutions), or a
   single value; a label before it goes (AB = 4, |AB| = 1, V_1:V_2 = 11:21, BC = (matrix),
   \\angle A = 30, f^{-1}(x) = ..., P(A) = ...); a decimal comma (1000,99) matches a decimal gold;
   a choice with its option text, (D) 4(x+1)=4x, answers the gold choice D or (D);
   set-builder notation \\{x \\mid x > 2\\} is its interval (2, \\infty), like x > 2; a time of day
   keeps its am / pm (5\\text{am} is 5am, never 5pm);
3. compare single values: equal strings; words as text; plain numbers exactly (Fraction), except
   that a decimal of 4+ places matches a fraction with no finite decimal if it is that fraction
   rounded (0.0833 for 1/12); only what is left goes to sympy (identities such as sec^2 y =
   tan^2 y + 1, factors in another order);
4. sympy runs in a child process under a deadline (support/sympy_worker.py): a hostile answer like
   10^{10^{10}} costs timeout_s and a worker restart, never a hang.
"""

import os
import re
import sys
import time

if os.path.dirname(os.path.abspath(__file__)) not in map(os.path.abspath, sys.path):
    sys.path.append(os.path.dirname(os.path.abspath(__file__)))  # loaded by path: support/ is beside it
from support.math_answers import (answer_shape, decimal_comma, extract_answer, last_boxed,  # noqa: E402
                                  normalize_answer, same_shape)

# ---- MATH

def is_equiv(pred: str, gold: str, timeout_s: float = 2.0) -> bool:
    """Do `pred` and `gold` state the same MATH answer? Strings first, sympy only when needed;
    timeout_s bounds the sympy time of the whole check, and running out counts as "not equal"."""
    if pred is None or gold is None:
        return False
    if max(len(pred), len(gold)) > 2000:  # no MATH answer is this long: compare, don't parse
        return pred.strip() == gold.strip()
    if decimal_comma(pred, gold) or decimal_comma(gold, pred):
        return True
    deadline = time.monotonic() + timeout_s
    pred, gold = normalize_answer(pred), normalize_answer(gold)
    if pred == gold:
        return bool(gold)
    for chosen, letter in ((pred, gold), (gold, pred)):  # (D) 4(x+1)=4x answers the choice D or (D)
        choice = re.fullmatch(r"\(([A-Z])\)(?![,;])(?!.*\([A-Z]\)).+", chosen)  # one letter, not (A),(B)
        if choice and (letter_match := re.fullmatch(r"\(?([A-Z])\)?", letter)):
            return choice[1] == letter_match[1]
    return same_shape(answer_shape(pred), answer_shape(gold), deadline)


def math_reward(response: str, gold: str) -> float:
    """r̂(y, y*) for MATH: 1.0 if the response's final answer equals the gold answer, else 0.0."""
    try:
        answer = extract_answer(response)
        if answer is not None and is_equiv(answer, gold):
            return 1.0
        # MATH's own solutions sometimes box every root or both spellings while the gold is only
        # the last box ("the solutions are \boxed{-1} and \boxed{2}", gold 2). So the last box alone
        # also counts, as it did before glued boxes were read as a list; that pays nothing a
        # last-box grader would not pay, and a box that lists only some elements still scores 0.
        last = last_boxed(response) if answer is not None and answer != last_boxed(response) else None
        return 1.0 if last is not None and is_equiv(last, gold) else 0.0
    except Exception:  # a checker bug must cost one reward, never the training run
        return 0.0


# ---- arithmetic

def arithmetic_reward(response: str, gold: str) -> float:
    """1.0 iff the last integer in the response (sign and 1,234-style commas allowed) is int(gold)."""
    try:
        integers = re.findall(r"(?<!\d)-?\d+(?:,\d{3})*(?!\d)", response)
        return float(bool(integers) and int(integers[-1].replace(",", "")) == int(gold.replace(",", "")))
    except (ValueError, TypeError, AttributeError):
        return 0.0


# ---- code

def code_rewards(responses, tests, timeout_s=5.0):
    """1.0 for each response whose program passes all of its tests, else 0.0. The program is the
    response's last complete ```python block (or its raw text); `tests` run after it in the same
    namespace. Checks run in parallel, each in a separate process with limits (support/sandbox.py)."""
    from support.sandbox import extract_code, run_tests_batch
    passed = run_tests_batch([(extract_code(r), t) for r, t in zip(responses, tests)], timeout_s=timeout_s)
    return [float(ok) for ok in passed]


def code_reward(program, tests, timeout_s=5.0):
    """The reward of one response: see code_rewards."""
    return code_rewards([program], [tests], timeout_s)[0]


# ---- the metrics over those scores (the columns of the paper's Table 2)

def self_correction_metrics(correct_t1, correct_t2):
    """The paper's five self-correction numbers from per-problem correctness (lists of bools), each a
    fraction of all problems: Acc@t1, Acc@t2, delta = Acc@t2 - Acc@t1, delta_i2c (wrong at attempt 1,
    right at attempt 2) and delta_c2i (right, then wrong); delta = delta_i2c - delta_c2i."""
    n = len(correct_t1)
    if n == 0 or n != len(correct_t2):
        raise ValueError("need the same non-zero number of attempt-1 and attempt-2 results")
    acc_t1, acc_t2 = sum(correct_t1) / n, sum(correct_t2) / n
    return {"acc_t1": acc_t1, "acc_t2": acc_t2, "delta": acc_t2 - acc_t1,
            "delta_i2c": sum(not a and b for a, b in zip(correct_t1, correct_t2)) / n,
            "delta_c2i": sum(a and not b for a, b in zip(correct_t1, correct_t2)) / n}
