"""
The tasks SCoRe trains and evaluates on: where their problems come from, how the first prompt x1
reads, which self-correction instruction p follows attempt 1, and which verifier scores attempts.

    arithmetic  a synthetic "what is a + b?" task, made in-process: the CPU tutorial's task, and a
                cheap one for checking a real small model (any answer is an integer)
    math        MATH (the paper's data): train on the 12,000-problem Lightman split, test on MATH500
    code        MBPP (3-shot) for training, HumanEval for testing, scored by running the tests

Data is downloaded once from its public home and cached under ~/.cache/score (or $SCORE_CACHE), or
read from a local JSONL file (--train_data / --test_data). stage1.py, stage2.py, evaluate.py and
baselines.py all get their problems here, which is why this is a file of its own. The prompts and the
instructions p are the paper's (rollout.py); the verifiers are reward.py's.
"""

import json
import os
import random
import urllib.request
import zlib
from dataclasses import dataclass
from typing import Callable

from reward import arithmetic_reward, math_reward
from rollout import CODE_SELF_CORRECTION_INSTRUCTION, MATH_PROMPT, SELF_CORRECTION_INSTRUCTION
from support.settings import UsageError

DOWNLOADS = {  # (task, split) -> public home of the data
    # prm800k keeps its splits in Git LFS: raw.githubusercontent.com would serve a pointer file.
    ("math", "train"): "https://media.githubusercontent.com/media/openai/prm800k/main/prm800k/math_splits/train.jsonl",
    ("math", "test"): "https://media.githubusercontent.com/media/openai/prm800k/main/prm800k/math_splits/test.jsonl",
    ("code", "train"): "https://raw.githubusercontent.com/google-research/google-research/master/mbpp/mbpp.jsonl",
    ("code", "test"): "https://raw.githubusercontent.com/openai/human-eval/master/data/HumanEval.jsonl.gz",
}

ARITHMETIC_INSTRUCTION = "There might be an error in the answer above. Answer again with just the number."


@dataclass
class Problem:
    id: str
    question: str  # what the model is asked (the problem statement, or for code the task text)
    answer: str    # the gold answer y*; for code, the test source run after the program
    tests_shown: str = ""  # code only: the example tests MBPP's prompt shows (HumanEval shows none)


@dataclass
class Task:
    name: str
    instruction: str                       # p, the self-correction instruction between attempts
    first_prompt: Callable[[Problem], str]  # x1, the first user message
    score: Callable[[list, list], list]    # (responses, problems) -> rewards r(y, y*) in {0, 1}


def get_task(name):
    if name == "arithmetic":
        return Task(name, ARITHMETIC_INSTRUCTION,
                    first_prompt=lambda p: f"What is {p.question}? Answer with just the number.",
                    score=lambda ys, ps: [arithmetic_reward(y, p.answer) for y, p in zip(ys, ps)])
    if name == "math":  # zero-shot: the paper's instruction, then the problem
        return Task(name, SELF_CORRECTION_INSTRUCTION,
                    first_prompt=lambda p: f"{MATH_PROMPT}\n\nProblem:\n{p.question}",
                    score=lambda ys, ps: [math_reward(y, p.answer) for y, p in zip(ys, ps)])
    if name == "code":
        from reward import code_rewards
        return Task(name, CODE_SELF_CORRECTION_INSTRUCTION, first_prompt=code_prompt,
                    score=lambda ys, ps: code_rewards(ys, [p.answer for p in ps]))
    raise UsageError(f"unknown task {name!r}; choose arithmetic, math or code")


def load_problems(task, split, path="", limit=0, seed=0, max_operand=9, mix=""):
    """The problems of a task's split ("train" or "test"), from `path` if given.
    Arithmetic: `mix` (e.g. "+:99:9,*:9:9") chooses the kinds of problem; empty is a + b with both
    operands in 0..max_operand."""
    if task == "arithmetic":
        problems = arithmetic_problems(limit or 1000, mix or f"+:{max_operand}:{max_operand}", seed, split)
    else:
        rows = read_jsonl(path or download(task, split))
        parse = {"math": math_problem, "code": mbpp_problem if split == "train" else humaneval_problem}[task]
        problems = [parse(row, f"{path or task}:{i + 1}") for i, row in enumerate(rows)]
        if task == "code" and split == "train":  # tasks 1-10 are MBPP's few-shot pool, never trained on
            problems = [p for p in problems if not (p.id.isdigit() and int(p.id) <= 10)]
    return problems[:limit] if limit else problems


ARITHMETIC_OPS = {"+": lambda a, b: a + b, "-": lambda a, b: a - b, "*": lambda a, b: a * b}


def parse_mix(mix):
    """"+:99:9,*:9:9" -> [("+", 99, 9), ("*", 9, 9)]: a + b with a in 0..99 and b in 0..9, and a * b
    with both in 0..9. Each problem picks one kind uniformly, then its operands uniformly."""
    kinds = []
    for part in filter(None, (p.strip() for p in mix.split(","))):
        fields = part.split(":")
        if len(fields) != 3 or fields[0] not in ARITHMETIC_OPS or not all(f.isdigit() for f in fields[1:]):
            raise UsageError(f"arithmetic mix {part!r} is not OP:MAX_A:MAX_B (OP one of + - *), e.g. '+:99:9,*:9:9'")
        kinds.append((fields[0], int(fields[1]), int(fields[2])))
    if not kinds:
        raise UsageError(f"arithmetic mix {mix!r} names no problems; e.g. '+:99:9,*:9:9'")
    return kinds


def is_test_problem(problem_id):
    """A fixed fifth of all problems, by a hash of the problem's text: never trained on."""
    return zlib.crc32(problem_id.encode()) % 5 == 0


def arithmetic_problems(n, mix, seed, split):
    """n problems drawn with replacement. When each kind has at least 100 distinct problems, train and
    test are disjoint (is_test_problem), so a score on test is not memorisation. Smaller spaces (the
    tiny preset's 25 sums) cannot spare a fifth: there train and test are draws from the same set,
    made with different seeds, and the toy measures learning on memorisable problems."""
    kinds = parse_mix(mix)
    rng = random.Random(seed + (0 if split == "train" else 10_000))
    disjoint = all((a + 1) * (b + 1) >= 100 for _, a, b in kinds)
    problems = []
    while len(problems) < n:
        op, max_a, max_b = kinds[rng.randrange(len(kinds))] if len(kinds) > 1 else kinds[0]
        a, b = rng.randint(0, max_a), rng.randint(0, max_b)
        question = f"{a}{op}{b}"
        if disjoint and is_test_problem(question) != (split == "test"):
            continue
        problems.append(Problem(id=question, question=question, answer=str(ARITHMETIC_OPS[op](a, b))))
    return problems


def math_problem(row, where):
    """MATH / MATH500 rows: {problem, answer, unique_id}; GSM8K's {question, answer "... #### N"} too."""
    if "problem" in row and "answer" in row:
        return Problem(id=str(row.get("unique_id", where)), question=row["problem"], answer=str(row["answer"]))
    if "question" in row and "####" in str(row.get("answer", "")):
        return Problem(id=where, question=row["question"], answer=row["answer"].split("####")[-1].strip())
    raise UsageError(f"{where}: a math row needs 'problem' and 'answer' fields (got {sorted(row)})")


# ----------------------------------------------------------------------------- code

MBPP_FEW_SHOT_IDS = (2, 3, 4)  # the 3-shot prompt of the MBPP paper (Austin et al., 2021)


def mbpp_problem(row, where):
    if not {"task_id", "text", "test_list"} <= set(row):
        raise UsageError(f"{where}: an MBPP row needs 'task_id', 'text' and 'test_list' (got {sorted(row)})")
    tests = "\n".join(row["test_list"])
    setup = row.get("test_setup_code", "")
    return Problem(id=str(row["task_id"]), question=row["text"], answer=f"{setup}\n{tests}".strip(),
                   tests_shown=tests)


def humaneval_problem(row, where):
    if not {"task_id", "prompt", "test", "entry_point"} <= set(row):
        raise UsageError(f"{where}: a HumanEval row needs 'task_id', 'prompt', 'test', 'entry_point'")
    # The tests are never shown to the model (as in the paper); they run after its program.
    return Problem(id=row["task_id"], question=row["prompt"], answer=f"{row['test']}\ncheck({row['entry_point']})")


MBPP_FEW_SHOT = [  # tasks 2, 3, 4 of MBPP, written out so the prompt needs no download
    ("Write a function to find the similar elements from the given two tuple lists.",
     "assert similar_elements((3, 4, 5, 6),(5, 7, 4, 10)) == (4, 5)\nassert similar_elements((1, 2, 3, 4),(5, 4, 3, 7)) == (3, 4)\nassert similar_elements((11, 12, 14, 13),(17, 15, 14, 13)) == (13, 14)",
     "def similar_elements(test_tup1, test_tup2):\n  res = tuple(set(test_tup1) & set(test_tup2))\n  return (res) "),
    ("Write a python function to identify non-prime numbers.",
     "assert is_not_prime(2) == False\nassert is_not_prime(10) == True\nassert is_not_prime(35) == True",
     "import math\ndef is_not_prime(n):\n    result = False\n    for i in range(2,int(math.sqrt(n)) + 1):\n        if n % i == 0:\n            result = True\n    return result"),
    ("Write a function to find the largest integers from a given list of numbers using heap queue algorithm.",
     "assert heap_queue_largest( [25, 35, 22, 85, 14, 65, 75, 22, 58],3)==[85, 75, 65] \nassert heap_queue_largest( [25, 35, 22, 85, 14, 65, 75, 22, 58],2)==[85, 75] \nassert heap_queue_largest( [25, 35, 22, 85, 14, 65, 75, 22, 58],5)==[85, 75, 65, 58, 35]",
     "import heapq as hq\ndef heap_queue_largest(nums,n):\n  largest_nums = hq.nlargest(n, nums)\n  return largest_nums"),
]


def _mbpp_block(text, tests):
    return f"You are an expert Python programmer, and here is your task: {text} Your code should pass these tests:\n\n{tests}\n"


def code_prompt(p):
    """MBPP: the 3-shot prompt (examples, then the task with its example tests).
    HumanEval: zero-shot, the function signature and docstring to complete."""
    if not p.tests_shown:
        return f"Complete the following Python function. Write the whole function in a ```python block.\n\n{p.question}"
    shots = "".join(f"{_mbpp_block(t, tests)}```python\n{code}\n```\n\n" for t, tests, code in MBPP_FEW_SHOT)
    return f"{shots}{_mbpp_block(p.question, p.tests_shown)}"


# ----------------------------------------------------------------------------- files

def cache_dir():
    return os.environ.get("SCORE_CACHE", os.path.join(os.path.expanduser("~"), ".cache", "score"))


def download(task, split):
    """Fetch a split once into the cache (atomically: a half-downloaded file never looks done)."""
    url = DOWNLOADS[(task, split)]
    path = os.path.join(cache_dir(), f"{task}_{split}.jsonl")
    if not os.path.exists(path):
        os.makedirs(cache_dir(), exist_ok=True)
        try:
            data = urllib.request.urlopen(url, timeout=60).read()
        except OSError as e:
            raise UsageError(f"could not download {url} ({e}); pass a local JSONL with --{split}_data") from None
        if url.endswith(".gz"):
            import gzip
            data = gzip.decompress(data)
        if data.startswith(b"version https://git-lfs"):
            raise UsageError(f"{url} served a Git LFS pointer, not the data; pass a local JSONL with --{split}_data")
        with open(path + ".part", "wb") as f:
            f.write(data)
        os.replace(path + ".part", path)
    return path


def read_jsonl(path):
    if not os.path.isfile(path):
        raise UsageError(f"data file {path!r} does not exist")
    rows = []
    with open(path, encoding="utf-8") as f:
        for number, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError as e:
                raise UsageError(f"{path}:{number}: not a JSON object ({e.msg}); fix or remove that line") from None
    return rows
