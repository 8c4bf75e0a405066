"""The code task: MBPP/HumanEval loading, the 3-shot prompt, the execution reward, and the scripts
running with --task code on the tiny model (offline, on small JSONL files written here)."""

import json
import os
import subprocess
import sys

import pytest

from reward import code_reward, code_rewards
from rollout import CODE_SELF_CORRECTION_INSTRUCTION
from support.tasks import get_task, load_problems

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

HUMANEVAL_ROWS = [  # written for these tests in HumanEval's format
    {"task_id": "Test/0", "entry_point": "add_one",
     "prompt": 'def add_one(xs: list) -> list:\n    """Add one to every element.\n    >>> add_one([1, 2])\n    [2, 3]\n    """\n',
     "canonical_solution": "    return [x + 1 for x in xs]\n",
     "test": "def check(candidate):\n    assert candidate([1, 2]) == [2, 3]\n    assert candidate([]) == []\n"},
    {"task_id": "Test/1", "entry_point": "is_palindrome",
     "prompt": 'def is_palindrome(s: str) -> bool:\n    """True if s reads the same backwards."""\n',
     "canonical_solution": "    return s == s[::-1]\n",
     "test": "def check(candidate):\n    assert candidate('aba')\n    assert not candidate('ab')\n    assert candidate('')\n"},
    {"task_id": "Test/2", "entry_point": "fib",
     "prompt": 'def fib(n: int) -> int:\n    """The n-th Fibonacci number, fib(0) = 0, fib(1) = 1."""\n',
     "canonical_solution": "    a, b = 0, 1\n    for _ in range(n):\n        a, b = b, a + b\n    return a\n",
     "test": "def check(candidate):\n    assert candidate(0) == 0\n    assert candidate(10) == 55\n"},
]

MBPP_ROWS = [  # MBPP's format; task ids > 10 so none is mistaken for the few-shot pool
    {"task_id": 11, "text": "Write a function to square a number.", "code": "def square(x):\n  return x * x",
     "test_list": ["assert square(3) == 9", "assert square(-2) == 4"], "test_setup_code": "", "challenge_test_list": []},
    {"task_id": 12, "text": "Write a function to reverse a string.", "code": "def rev(s):\n  return s[::-1]",
     "test_list": ["assert rev('ab') == 'ba'"], "test_setup_code": "", "challenge_test_list": []},
]


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


@pytest.fixture
def humaneval(tmp_path):
    return load_problems("code", "test", write_jsonl(tmp_path / "he.jsonl", HUMANEVAL_ROWS))


def fenced(code):
    return f"Here is the program:\n```python\n{code}\n```\nDone."


def test_canonical_solutions_pass_and_wrong_ones_fail(humaneval):
    right = [fenced(row["prompt"] + row["canonical_solution"]) for row in HUMANEVAL_ROWS]
    wrong = [fenced(row["prompt"] + "    return None\n") for row in HUMANEVAL_ROWS]
    assert code_rewards(right, [p.answer for p in humaneval]) == [1.0, 1.0, 1.0]
    assert code_rewards(wrong, [p.answer for p in humaneval]) == [0.0, 0.0, 0.0]


def test_humaneval_tests_are_never_in_the_prompt(humaneval):
    task = get_task("code")
    for problem in humaneval:
        prompt = task.first_prompt(problem)
        assert problem.question in prompt and "check(" not in prompt and "assert" not in prompt
    assert task.instruction == CODE_SELF_CORRECTION_INSTRUCTION


def test_mbpp_prompt_is_three_shot_with_the_tasks_tests(tmp_path):
    problems = load_problems("code", "train", write_jsonl(tmp_path / "mbpp.jsonl", MBPP_ROWS))
    prompt = get_task("code").first_prompt(problems[0])
    assert prompt.count("You are an expert Python programmer, and here is your task:") == 4
    assert prompt.rstrip().endswith("assert square(-2) == 4")
    assert code_reward(fenced(MBPP_ROWS[0]["code"]), problems[0].answer) == 1.0
    assert code_reward(fenced("def square(x):\n  return x + x"), problems[0].answer) == 0.0


def test_malformed_code_rows_are_named(tmp_path):
    from support.settings import UsageError
    with pytest.raises(UsageError, match="an MBPP row needs"):
        load_problems("code", "train", write_jsonl(tmp_path / "bad.jsonl", [{"task_id": 1}]))


def run(script, *args):
    return subprocess.run([sys.executable, os.path.join(ROOT, script), *args], capture_output=True, text=True,
                          timeout=900)


def test_scripts_run_the_code_task_on_the_tiny_model(tmp_path):
    mbpp, he, out = write_jsonl(tmp_path / "mbpp.jsonl", MBPP_ROWS), write_jsonl(tmp_path / "he.jsonl", HUMANEVAL_ROWS), str(tmp_path / "out")
    common = ["--preset", "tiny", "--out_dir", out, "--steps", "1", "--problems_per_step", "2",
              "--samples_per_problem", "2", "--max_new_tokens", "8"]
    # none asks for Table 5's value for the task (the tiny preset sets its own lr and beta2).
    stage1 = run("stage1.py", *common, "--task", "code", "--train_data", mbpp, "--lr", "none", "--beta2", "none")
    assert stage1.returncode == 0, stage1.stderr[-3000:]
    config = json.load(open(os.path.join(out, "stage1", "score_config.json")))
    assert config["task"] == "code" and config["beta2"] == 0.25 and config["lr"] == 1e-5  # MBPP's column
    stage2 = run("stage2.py", *common, "--save_every", "1")
    assert stage2.returncode == 0, stage2.stderr[-3000:]
    evaluation = run("evaluate.py", "--preset", "tiny", "--out_dir", out, "--task", "code", "--test_data", he,
                     "--max_new_tokens", "8", "--limit", "0")
    assert evaluation.returncode == 0, evaluation.stderr[-3000:]
    assert "code, 3 problems, greedy" in evaluation.stdout
