"""Tests for support/sandbox.py: code extraction, honest pass/fail on small HumanEval- and MBPP-style
problems, hostile programs, attempts to fake success (exit codes, patched asserts, objects that
equal everything), programs that look for their tests (frames, gc, /proc) to copy the answer, what
crosses between the tests' process and the program's, and processes that try to outlive their
check. CPU only, a few minutes on 2 busy cores.

Every hostile test is bounded (short timeouts, a limited number of forks) and only ever targets
files and processes the test itself created, so a broken sandbox fails the test, not the machine.
Some guarantees exist only when we run as root (the child then drops to `nobody`); those tests are
skipped otherwise, as the module docstring of support/sandbox.py explains.
"""

import os
import re
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import pytest

PROJECT_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(PROJECT_ROOT))

from support import sandbox  # noqa: E402
from support.sandbox import check_program, extract_code, run_tests, run_tests_batch  # noqa: E402

ROOT_ONLY = pytest.mark.skipif(
    os.geteuid() != 0, reason="without root there is no drop to `nobody`: a documented residual risk"
)

GOOD_PROGRAM = "def add(a, b):\n    return a + b\n"
ADD_TESTS = "assert add(1, 2) == 3\nassert add(-4, 4) == 0\n"
WRONG_PROGRAM = "def add(a, b):\n    return a - b\n"


def assert_next_check_still_works():
    assert run_tests(GOOD_PROGRAM, ADD_TESTS, timeout_s=5)
    assert not run_tests(WRONG_PROGRAM, ADD_TESTS, timeout_s=5)


# ---------------------------------------------------------------------------------- extract_code


@pytest.mark.parametrize(
    "response, code",
    [
        ("```python\ndef f():\n    return 1\n```", "def f():\n    return 1\n"),
        ("Sure:\n```\nx = 1\n```\nDone.", "x = 1\n"),
        ("```py  \na = 1\n```", "a = 1\n"),
        ("First try:\n```python\nold()\n```\nBetter:\n```python\nnew()\n```\n", "new()\n"),
        ("def f():\n    return 2\n", "def f():\n    return 2\n"),  # no fence: the raw text
        ("Here it is:\n```python\ndef f():\n    return", "def f():\n    return"),  # cut off
        ("```python\nok()\n```\nAnd then:\n```python\ncut(", "ok()\n"),  # last *complete* block
        ("```python", ""),
        ("", ""),
    ],
)
def test_extract_code(response, code):
    assert extract_code(response) == code


# ------------------------------------------------------- honest programs, HumanEval and MBPP style

# Written here in HumanEval's format: the program is prompt + completion, the tests are `test`
# followed by check(<entry_point>).
HUMANEVAL_STYLE = [
    {
        "prompt": 'from typing import List\n\n\ndef running_max(numbers: List[int]) -> List[int]:\n'
        '    """ The largest element seen so far, at each position.\n'
        "    >>> running_max([1, 3, 2, 5])\n    [1, 3, 3, 5]\n    \"\"\"\n",
        "entry_point": "running_max",
        "canonical_solution": "    out, best = [], None\n    for x in numbers:\n"
        "        best = x if best is None else max(best, x)\n        out.append(best)\n    return out\n",
        "wrong_solution": "    return sorted(numbers)\n",
        "test": "def check(candidate):\n    assert candidate([]) == []\n"
        "    assert candidate([1, 3, 2, 5]) == [1, 3, 3, 5]\n    assert candidate([4, 1, 1]) == [4, 4, 4]\n",
    },
    {
        "prompt": "def mean_abs_deviation(xs: list) -> float:\n"
        '    """ Mean absolute difference from the mean.\n    >>> mean_abs_deviation([1.0, 3.0])\n'
        '    1.0\n    """\n',
        "entry_point": "mean_abs_deviation",
        "canonical_solution": "    m = sum(xs) / len(xs)\n    return sum(abs(x - m) for x in xs) / len(xs)\n",
        "wrong_solution": "    m = sum(xs) / len(xs)\n    return max(abs(x - m) for x in xs)\n",
        "test": "def check(candidate):\n    assert abs(candidate([1.0, 3.0]) - 1.0) < 1e-6\n"
        "    assert abs(candidate([1.0, 2.0, 3.0, 4.0]) - 1.0) < 1e-6\n"
        "    assert abs(candidate([0.0, 0.0, 6.0]) - 8 / 3) < 1e-6\n",
    },
    {
        "prompt": "import hashlib\n\n\ndef md5_prefix(text: str, n: int) -> str:\n"
        '    """ First n hex digits of the md5 of text. """\n',
        "entry_point": "md5_prefix",
        "canonical_solution": "    return hashlib.md5(text.encode()).hexdigest()[:n]\n",
        "wrong_solution": "    return hashlib.sha1(text.encode()).hexdigest()[:n]\n",
        "test": "def check(candidate):\n    assert candidate('hello', 6) == '5d4140'\n"
        "    assert candidate('', 4) == 'd41d'\n",
    },
]

# And in MBPP's format: code, and asserts joined by newlines.
MBPP_STYLE = [
    {
        "code": "import re\ndef count_words(text):\n    return len(re.findall(r'[A-Za-z]+', text))\n",
        "wrong_code": "def count_words(text):\n    return len(text.split(' '))\n",
        "test_list": ["assert count_words('hi there') == 2", "assert count_words('a,  b;c') == 3",
                      "assert count_words('') == 0"],
    },
    {
        "code": "import heapq\ndef second_largest(nums):\n    return heapq.nlargest(2, set(nums))[-1]\n",
        "wrong_code": "def second_largest(nums):\n    return sorted(nums)[-2]\n",
        "test_list": ["assert second_largest([1, 5, 3]) == 3", "assert second_largest([7, 7, 2]) == 2"],
    },
]


def humaneval_case(problem, solution_key):
    program = problem["prompt"] + problem[solution_key]
    tests = problem["test"] + f"\ncheck({problem['entry_point']})\n"
    return program, tests


def test_correct_solutions_pass_and_wrong_ones_fail():
    cases, expected = [], []
    for problem in HUMANEVAL_STYLE:
        cases += [humaneval_case(problem, "canonical_solution"), humaneval_case(problem, "wrong_solution")]
        expected += [True, False]
    for problem in MBPP_STYLE:
        tests = "\n".join(problem["test_list"])
        cases += [(problem["code"], tests), (problem["wrong_code"], tests)]
        expected += [True, False]
    assert run_tests_batch(cases, timeout_s=10) == expected


def test_syntax_error_and_exceptions_fail():
    assert not run_tests("def add(a, b):\n    return a +", ADD_TESTS)
    assert not run_tests("def add(a, b):\n    raise ValueError", ADD_TESTS)
    assert not run_tests("", ADD_TESTS)  # NameError in the tests
    # The program and the tests are compiled apart, so an open string cannot reach into the tests.
    assert not run_tests(WRONG_PROGRAM + "x = '''", ADD_TESTS)


def test_batch_preserves_order():
    hang = "def add(a, b):\n    while True:\n        pass\n"
    programs = [GOOD_PROGRAM, hang, WRONG_PROGRAM, GOOD_PROGRAM, "raise SystemExit(0)", GOOD_PROGRAM,
                WRONG_PROGRAM, GOOD_PROGRAM]
    expected = [True, False, False, True, False, True, False, True]
    assert run_tests_batch([(p, ADD_TESTS) for p in programs], timeout_s=1, max_workers=3) == expected
    assert run_tests_batch([]) == []


# ------------------------------------------------------------------------------ hostile programs


def test_infinite_loop_is_killed_at_the_wall_clock_limit():
    start = time.monotonic()
    result = check_program("while True:\n    pass\n", "pass", timeout_s=1)
    assert not result.passed and result.timed_out
    assert time.monotonic() - start < 3
    assert_next_check_still_works()


def test_program_that_never_returns_from_import_and_ignores_sigterm():
    program = textwrap.dedent("""
        import signal, time
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        while True:
            time.sleep(0.1)  # sleeping: the CPU limit never fires, only the wall clock does
    """)
    start = time.monotonic()
    result = check_program(program, "pass", timeout_s=1)
    assert not result.passed and result.timed_out
    assert time.monotonic() - start < 3
    assert_next_check_still_works()


@pytest.mark.parametrize(
    "program",
    [
        "blob = bytearray(8 * 2**30)\n",
        "blobs = []\nwhile True:\n    blobs.append(bytearray(2**24))\n",
    ],
)
def test_memory_bomb_fails_fast(program):
    start = time.monotonic()
    result = check_program(program, "pass", timeout_s=5, memory_mb=256)
    assert not result.passed and not result.timed_out
    assert "MemoryError" in result.output
    assert time.monotonic() - start < 4
    assert_next_check_still_works()


def test_a_gigabyte_of_output_is_capped():
    program = "import sys\nchunk = 'x' * 2**20\nfor _ in range(1024):\n    sys.stdout.write(chunk)\n"
    start = time.monotonic()
    result = check_program(program, "pass", timeout_s=10)
    # The write fails with EFBIG at RLIMIT_FSIZE, long before 1 GiB. The traceback is lost (the
    # output file is full), so we learn it only from the exit code.
    assert not result.passed and not result.timed_out and result.returncode != 0
    assert result.output == "x" * sandbox._OUTPUT_TAIL_BYTES
    assert time.monotonic() - start < 5
    assert_next_check_still_works()


@pytest.mark.parametrize(
    "program",
    [
        "def f(n):\n    return f(n + 1)\nf(0)\n",
        "import sys\nsys.setrecursionlimit(10**9)\ndef f(n):\n    return f(n + 1) + 1\nf(0)\n",
    ],
)
def test_recursion_bomb(program):
    result = check_program(program, "pass", timeout_s=5, memory_mb=256)
    assert not result.passed
    assert_next_check_still_works()


def _is_gone(pid):
    """Dead, or a zombie waiting to be reaped by init: either way it runs no code."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return True
    return stat.rsplit(")", 1)[1].split()[0] in ("Z", "X")


def test_fork_loop_is_capped_and_no_child_survives():
    # Bounded on purpose: at most 200 sleeping children even if every limit failed.
    program = textwrap.dedent("""
        import os, time
        for _ in range(200):
            try:
                pid = os.fork()
            except OSError:  # EAGAIN from RLIMIT_NPROC
                break
            if pid == 0:
                time.sleep(120)
                os._exit(0)
            print(pid, flush=True)
        time.sleep(120)
    """)
    result = check_program(program, "pass", timeout_s=1.5)
    assert not result.passed and result.timed_out
    children = [int(pid) for pid in re.findall(r"^\d+$", result.output, re.MULTILINE)]
    assert len(children) <= sandbox._MAX_PROCESSES
    if os.geteuid() == 0:  # without root, RLIMIT_NPROC counts the user's other processes too
        assert children
    # Killed children are zombies until init reaps them, and zombies still count against
    # RLIMIT_NPROC, so give init a moment before the next test forks.
    deadline = time.monotonic() + 5
    while any(Path(f"/proc/{pid}").exists() for pid in children) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert all(_is_gone(pid) for pid in children)
    assert_next_check_still_works()


def test_forked_children_are_killed_even_when_the_program_passes():
    program = GOOD_PROGRAM + "import os, time\nchild_pid = os.fork()\nif child_pid == 0:\n    time.sleep(120)\n    os._exit(0)\n"
    tests = ADD_TESTS + "print('child', child_pid, flush=True)\n"
    result = check_program(program, tests)
    if os.geteuid() != 0 and "BlockingIOError" in result.output:
        pytest.skip("this user's processes already exceed RLIMIT_NPROC, so the program cannot fork")
    assert result.passed  # a passing program that forks still passes...
    pids = [int(p) for p in re.findall(r"child (\d+)", result.output)]
    assert pids
    time.sleep(0.2)
    assert all(_is_gone(pid) for pid in pids)  # ...but its children are gone with the check


def test_working_directory_is_fresh_private_and_removed():
    tests = textwrap.dedent("""
        import os
        assert os.listdir(".") == []
        with open("scratch.txt", "w") as f:  # writing inside its own directory is allowed
            f.write("hi")
        print("cwd", os.getcwd(), flush=True)
    """)
    first, second = check_program("", tests), check_program("", tests)
    assert first.passed and second.passed
    cwd_first = re.search(r"cwd (\S+)", first.output).group(1)
    cwd_second = re.search(r"cwd (\S+)", second.output).group(1)
    assert cwd_first != cwd_second
    assert not os.path.exists(cwd_first) and not os.path.exists(cwd_second)


def test_environment_is_minimal_and_the_parents_secrets_do_not_leak():
    # A helper process starts with a secret in its environment, as a trainer with an API token
    # would, and runs the checks. (A secret added with os.environ after start-up would not show in
    # /proc/<pid>/environ at all, so the helper is needed for the test to be able to fail.)
    program = textwrap.dedent("""
        import os
        leaked_env = os.environ.get("SANDBOX_TEST_SECRET", "")
        try:
            leaked_proc = open(f"/proc/{os.getppid()}/environ").read()
        except OSError:
            leaked_proc = ""
    """)
    helper = textwrap.dedent(f"""
        import sys
        sys.path.insert(0, {str(PROJECT_ROOT)!r})
        from support import sandbox
        program = {program!r}
        print(open("/proc/self/environ").read().count("hunter2-secret"),  # control: it is there
              sandbox.run_tests(program, "assert 'hunter2-secret' in leaked_env"),
              sandbox.run_tests(program, "assert 'hunter2-secret' in leaked_proc"),
              sandbox.run_tests(program, "import os\\nassert set(os.environ) <= {{'PATH', 'HOME', 'TMPDIR', 'LANG'}}"))
    """)
    env = {**os.environ, "SANDBOX_TEST_SECRET": "hunter2-secret"}
    out = subprocess.run([sys.executable, "-c", helper], env=env, capture_output=True, text=True, timeout=60)
    control, via_env, via_proc, env_is_minimal = out.stdout.split()
    assert control == "1"
    assert via_env == "False"
    assert env_is_minimal == "True"
    if os.geteuid() == 0:  # as `nobody` the child may not read root's /proc/<pid>/environ
        assert via_proc == "False"
    assert_next_check_still_works()


@ROOT_ONLY
def test_cannot_write_or_delete_files_outside_its_directory():
    # A directory the test creates, readable by everyone (0755) with files 0644, as most files on a
    # machine are. Not pytest's tmp_path: its parent is 0700, which would make the test too easy.
    with tempfile.TemporaryDirectory(prefix="sandbox-victim-") as victim_dir:
        os.chmod(victim_dir, 0o755)
        keep, doomed = Path(victim_dir, "keep.txt"), Path(victim_dir, "doomed.txt")
        for path in (keep, doomed):
            path.write_text("original")
            path.chmod(0o644)
        program = textwrap.dedent(f"""
            import os, shutil
            damage = []
            for attempt in (lambda: open({str(keep)!r}, "w").write("pwned"),
                            lambda: os.remove({str(doomed)!r}),
                            lambda: open(os.path.join({victim_dir!r}, "new.txt"), "w").write("x"),
                            lambda: os.chmod({victim_dir!r}, 0o777),
                            lambda: shutil.rmtree({victim_dir!r})):
                try:
                    attempt()
                    damage.append(True)
                except OSError:
                    pass
        """)
        # Control: the files are reachable, so only permissions stand in the way.
        assert run_tests(f"text = open({str(keep)!r}).read()", "assert text == 'original'")
        assert not run_tests(program, "assert damage")
        assert keep.read_text() == "original" and doomed.read_text() == "original"
        assert sorted(os.listdir(victim_dir)) == ["doomed.txt", "keep.txt"]
        assert os.stat(victim_dir).st_mode & 0o777 == 0o755
    assert_next_check_still_works()


@ROOT_ONLY
def test_cannot_kill_the_callers_processes():
    victim = subprocess.Popen(["sleep", "30"])  # stands in for the trainer
    try:
        program = f"import os, signal\nos.kill({victim.pid}, signal.SIGKILL)\nkilled = True\n"
        assert not run_tests(program, "assert killed")
        time.sleep(0.1)
        assert victim.poll() is None
    finally:
        victim.kill()
        victim.wait()


# --------------------------------------------------------------------------- faking success → 0

FAKES = {
    "exit(0) before the tests": WRONG_PROGRAM + "exit(0)\n",
    "os._exit(0) before the tests": WRONG_PROGRAM + "import os\nos._exit(0)\n",
    "sys.exit() during the tests": "import sys\ndef add(a, b):\n    sys.exit()\n",
    "os._exit(0) during the tests": "import os\ndef add(a, b):\n    os._exit(0)\n",
    "print passed": WRONG_PROGRAM + "print('All tests passed! passed 1.0', flush=True)\nimport os\nos._exit(0)\n",
    "exit code 0 from atexit after a failure":
        WRONG_PROGRAM + "import atexit, os\natexit.register(lambda: os._exit(0))\n",
    "exit code 0 from excepthook after a failure":
        WRONG_PROGRAM + "import os, sys\nsys.excepthook = lambda *args: os._exit(0)\n",
    "override AssertionError": WRONG_PROGRAM
        + "import builtins\nclass AssertionError(Exception):\n    pass\nbuiltins.AssertionError = AssertionError\n",
    "patch exec and compile in builtins": WRONG_PROGRAM
        + "import builtins\nbuiltins.exec = lambda *a, **k: None\nbuiltins.compile = lambda *a, **k: None\n",
    "patch builtins the tests use": WRONG_PROGRAM
        + "__builtins__['abs'] = lambda x: 0\nimport builtins\nbuiltins.abs = lambda x: 0\n",
    "write fake tokens to every fd":
        WRONG_PROGRAM + "import os\nfor fd in range(3, 64):\n    try:\n        os.write(fd, b'0' * 32)\n"
        "    except OSError:\n        pass\n",
    "skip the asserts with a trace function": WRONG_PROGRAM + textwrap.dedent("""
        import sys
        def jump_to_the_return(frame, event, arg):
            if event == "line" and frame.f_lineno < 4:
                frame.f_lineno = 4
            return jump_to_the_return
        sys.settrace(lambda frame, event, arg: jump_to_the_return if frame.f_code.co_name == "check" else None)
    """),
    "define check itself": WRONG_PROGRAM + "def check(candidate):\n    pass\n",
}
# HumanEval-shaped tests for add(), using abs() so that patching abs would matter.
FAKE_TESTS = "def check(candidate):\n    assert abs(candidate(1, 2) - 3) < 1e-9\n    assert abs(candidate(2, 2) - 4) < 1e-9\n    return\ncheck(add)\n"


@pytest.mark.parametrize("name", FAKES)
def test_faking_success_scores_zero(name):
    assert run_tests(GOOD_PROGRAM, FAKE_TESTS)  # control: the tests themselves can pass
    result = check_program(FAKES[name], FAKE_TESTS)
    assert not result.passed, result
    assert_next_check_still_works()


# ------------------------------------------------------ objects that claim equality with anything

ANYTHING = "class Anything:\n    def __eq__(self, other):\n        return True\n"
# MBPP-style asserts, and HumanEval-style check(candidate) with a float comparison
MBPP_TESTS = "assert add(1, 2) == 3\nassert add(2, 2) == 4\n"
HUMANEVAL_TESTS = "def check(candidate):\n    assert candidate(1, 2) == 3\n    assert abs(candidate(2, 2) - 4) < 1e-6\n\ncheck(add)\n"
# name: (hostile program, the tests it attacks, an honest program that passes those tests)
ALWAYS_EQUAL = {
    "__eq__ returns True": (ANYTHING + "def add(a, b):\n    return Anything()\n", None, GOOD_PROGRAM),
    "an int subclass": ("class Anything(int):\n    def __eq__(self, other):\n        return True\n"
                        "    __hash__ = int.__hash__\ndef add(a, b):\n    return Anything(0)\n", None, GOOD_PROGRAM),
    "a float subclass that subtracts to zero": ("class Anything(float):\n    def __eq__(self, other):\n        return True\n"
                                                "    __hash__ = float.__hash__\n    def __sub__(self, other):\n"
                                                "        return 0.0\ndef add(a, b):\n    return Anything(-1.0)\n", None, GOOD_PROGRAM),
    "a str subclass": ("class Anything(str):\n    def __eq__(self, other):\n        return True\n"
                       "    __hash__ = str.__hash__\ndef add(a, b):\n    return Anything('no')\n",
                       "assert add('a', 'b') == 'ab'\n", GOOD_PROGRAM),
    "a class as the entry point": ("class add(int):\n    def __new__(cls, a, b):\n        return int.__new__(cls, 0)\n"
                                   "    def __eq__(self, other):\n        return True\n    __hash__ = int.__hash__\n",
                                   None, GOOD_PROGRAM),
    "a metaclass that fakes the MRO": ("class Meta(type):\n    def mro(cls):\n        return [cls, object]\n"
                                       "class Anything(metaclass=Meta):\n    def __eq__(self, other):\n        return True\n"
                                       "def add(a, b):\n    return Anything()\n", None, GOOD_PROGRAM),
    "inside a list": (ANYTHING + "def add(a, b):\n    return [Anything()]\n", "assert add(1, 2) == [3]\n",
                      "def add(a, b):\n    return [a + b]\n"),
    "from a generator": (ANYTHING + "def add(a, b):\n    yield Anything()\n", "assert list(add(1, 2)) == [3]\n",
                         "def add(a, b):\n    yield a + b\n"),
    "called by map in the tests": (ANYTHING + "def add(a, b):\n    return Anything()\n",
                                   "assert list(map(add, [1], [2])) == [3]\n", GOOD_PROGRAM),
}


@pytest.mark.parametrize("name", ALWAYS_EQUAL)
def test_objects_that_equal_everything_score_zero(name):
    program, tests, honest = ALWAYS_EQUAL[name]
    for test in [tests] if tests else [MBPP_TESTS, HUMANEVAL_TESTS]:
        assert run_tests(honest, test), test  # control: the tests can pass
        result = check_program(program, test)
        assert not result.passed, (name, test, result.output)


def test_plain_results_keep_working():
    # subclasses of builtins compare by value, the program's own plain classes pass through, and
    # the tests' own stdlib objects (Counter, Fraction, deque) are untouched in type and value
    program = textwrap.dedent("""
        import collections, fractions
        Point = collections.namedtuple("Point", "x y")
        class Node:
            def __init__(self, value):
                self.value = value
        def counts(text):
            return collections.Counter(text)
        def point():
            return Point(1, 2)
        def half():
            return fractions.Fraction(1, 2)
        def node(value):
            return Node(value)
        def flag():
            return True
        def window():
            return collections.deque([1, 2, 3], maxlen=3)
        def squares(n):
            return map(lambda k: k * k, range(n))
    """)
    tests = textwrap.dedent("""
        import collections, fractions
        assert counts("aab") == {"a": 2, "b": 1} == collections.Counter("aab")
        assert point() == (1, 2) and point()[1] == 2
        assert half() == fractions.Fraction(1, 2) and half() == 0.5
        assert node(7).value == 7
        assert flag() is True
        assert window() == collections.deque([1, 2, 3]) and window().maxlen == 3
        assert list(squares(3)) == [0, 1, 4]
        assert collections.Counter("ab").most_common(1)[0][1] == 1
    """)
    result = check_program(program, tests)
    assert result.passed, result.output


# ------------------------------------------------------------------ programs that read their tests
# Each program below looks for the number the tests compare with, where the tests used to be
# reachable (the program and the tests shared a process) or might be (argv, the environment, open
# files, /proc of its ancestors), and returns it. The first five scored 1.0 before the tests got a
# process of their own; the others guard against a leak through the new pipes and processes. The number is
# one nobody computes by accident: 3 * 1047197551.

SECRET_TESTS = {
    "MBPP": "assert magic(3) == 3141592653\n",
    "HumanEval": "def check(candidate):\n    assert candidate(3) == 3141592653\n\ncheck(magic)\n",
}
HONEST_MAGIC = "def magic(n):\n    return n * 1047197551\n"
FIND_THE_SECRET = textwrap.dedent("""
    import gc, os, re, sys, types

    def best(found):
        # The tests compare with a 10-digit number: return the first one found
        for value in found:
            if type(value) is int and 10**9 < value < 10**10:
                return value
            if isinstance(value, (str, bytes)):
                digits = re.search(rb"== ?(\\d{10})\\b" if isinstance(value, bytes) else r"== ?(\\d{10})\\b", value)
                if digits:
                    return int(digits.group(1))
        return 0

    def constants(code):
        for value in code.co_consts:
            yield from constants(value) if isinstance(value, types.CodeType) else [value]

    def read(path, limit=2**20):
        try:
            fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
        except OSError:
            return b""
        try:
            return os.pread(fd, limit, 0)
        except OSError:
            try:
                return os.read(fd, limit)
            except OSError:
                return b""
        finally:
            os.close(fd)

    def ancestors():
        pid = os.getpid()
        while pid > 1:
            yield pid
            stat = read(f"/proc/{pid}/stat").decode()
            pid = int(stat.rsplit(")", 1)[1].split()[1]) if stat else 1
""")
HOSTILE_READERS = {
    "sys._getframe and f_back": """
        def search():
            frame = sys._getframe(1)
            while frame is not None:
                yield from constants(frame.f_code)
                yield from frame.f_locals.values()
                frame = frame.f_back
    """,
    "inspect.stack": """
        import inspect
        def search():
            for info in inspect.stack():
                yield from constants(info.frame.f_code)
                yield from info.frame.f_locals.values()
    """,
    "the caller's globals": """
        def search():
            frame = sys._getframe(1)
            while frame is not None:
                for value in list(frame.f_globals.values()):
                    yield from constants(value.__code__) if isinstance(value, types.FunctionType) else [value]
                frame = frame.f_back
    """,
    "gc.get_objects": """
        def search():
            for value in gc.get_objects():
                if isinstance(value, types.FunctionType):
                    yield from constants(value.__code__)
                elif isinstance(value, dict):
                    yield from [item for item in list(value.values()) if isinstance(item, (str, bytes))]
    """,
    "gc.get_referrers": """
        def search():
            for holder in gc.get_referrers(magic):
                if isinstance(holder, types.FrameType):
                    yield from constants(holder.f_code)
                elif isinstance(holder, dict):
                    for value in list(holder.values()):
                        yield from constants(value.__code__) if isinstance(value, types.FunctionType) else [value]
    """,
    "argv, environment, cmdline and environ in /proc": """
        def search():
            yield from map(str, sys.argv)
            yield from os.environ.values()
            for pid in ancestors():
                yield read(f"/proc/{pid}/cmdline").replace(b"\\0", b" ")
                yield read(f"/proc/{pid}/environ").replace(b"\\0", b" ")
    """,
    "files: the directory, /proc/PID/fd of self and ancestors": """
        def search():
            for directory in {os.getcwd(), os.environ.get("HOME", "."), os.environ.get("TMPDIR", ".")}:
                for root, _, files in os.walk(directory):
                    yield from (read(os.path.join(root, name)) for name in files)
            for pid in ancestors():
                try:
                    fds = os.listdir(f"/proc/{pid}/fd")
                except OSError:
                    continue
                yield from (read(f"/proc/{pid}/fd/{fd}") for fd in fds)
    """,
    "/proc/PID/mem of self and ancestors": """
        def search():
            for pid in ancestors():
                try:
                    maps = open(f"/proc/{pid}/maps").read().splitlines()
                    mem = open(f"/proc/{pid}/mem", "rb")
                except OSError:
                    continue
                with mem:
                    for line in maps:
                        span, permissions = line.split()[:2]
                        start, end = (int(part, 16) for part in span.split("-"))
                        if permissions.startswith("rw") and end - start < 2**28:
                            try:
                                mem.seek(start)
                                yield mem.read(end - start)
                            except (OSError, OverflowError, ValueError):
                                pass
    """,
}
HOSTILE_READERS = {name: FIND_THE_SECRET + textwrap.dedent(search) + "\ndef magic(n):\n    return best(search())\n"
                   for name, search in HOSTILE_READERS.items()}


@pytest.mark.parametrize("style", SECRET_TESTS)
@pytest.mark.parametrize("name", HOSTILE_READERS)
def test_programs_that_read_their_tests_score_zero(name, style):
    if name.startswith("/proc/PID/mem") and os.geteuid() != 0:
        pytest.skip("without root the program may read its caller's memory: a documented residual risk")
    assert run_tests(HONEST_MAGIC, SECRET_TESTS[style])  # control: the tests can pass
    result = check_program(HOSTILE_READERS[name], SECRET_TESTS[style], timeout_s=10)
    assert not result.passed, result.output
    assert "AssertionError" in result.output  # the search ran to its end and found nothing


# ------------------------------------------------- the tests' process: what crosses, what cannot


# name: (the program's patch, a test it would make pass). The program and the tests used to share
# their modules; now the tests import their own, and get their own copy even of a module they take
# from the program's globals without importing it (MBPP 596 uses the program's `sys`).
PATCHES = {
    "math.isclose": ("import math\nmath.isclose = lambda *args, **kwargs: True\n", "assert math.isclose(add(1, 2), 3)\n"),
    "Fraction.__eq__": ("import fractions\nfractions.Fraction.__eq__ = lambda self, other: True\n",
                        "assert fractions.Fraction(add(1, 2), 1) == 3\n"),
    "builtins.abs": ("import builtins\nbuiltins.abs = lambda x: 0\n", "assert abs(add(1, 2) - 3) < 1e-9\n"),
}


@pytest.mark.parametrize("name", PATCHES)
@pytest.mark.parametrize("imports", ["import fractions, math\n", ""])
def test_the_program_cannot_patch_what_the_tests_use(name, imports):
    patch, test = PATCHES[name]
    program = "import fractions, math\n" + patch
    assert run_tests(program + GOOD_PROGRAM, imports + test)  # control
    result = check_program(program + WRONG_PROGRAM, imports + test)
    assert not result.passed, result.output


def test_values_cross_between_the_processes_intact():
    tests = textwrap.dedent("""
        import collections, decimal, fractions, math
        values = [None, True, 0, -(10**5000), 2.5, float("inf"), 1 + 2j, "\\u00e9\\u2603\\ud800", b"\\x00\\xff",
                  bytearray(b"ab"), [1, [2, ()]], (1, (2,)), {1, 2}, frozenset({3}), {(1, 2): {"a": [None]}, 3: 4},
                  collections.deque([1, 2], maxlen=3), fractions.Fraction(1, 3), decimal.Decimal("0.1"), int, len]
        for value in values:
            back = echo(value)
            assert type(back) is type(value) and back == value, (value, back)
        assert math.isnan(echo(float("nan"))) and math.copysign(1, echo(-0.0)) == -1
        assert echo(collections.deque([1], maxlen=3)).maxlen == 3
        assert echo(x=5) == 5
    """)
    result = check_program("def echo(value=None, x=None):\n    return value if x is None else x\n", tests)
    assert result.passed, result.output


def test_the_programs_objects_work_from_the_tests():
    # They stay in the program's process; the tests hold stand-ins that forward calls, attributes
    # and iteration (MBPP builds trees from the program's Node class, and passes Pair objects back).
    program = textwrap.dedent("""
        class Node:
            def __init__(self, value):
                self.value, self.left = value, None
        def depth(node):
            return 0 if node is None else 1 + depth(node.left)
        def values(nodes):
            return [node.value for node in nodes]
        def countdown(n):
            while n > 0:
                yield n
                n -= 1
        def parse(text, base=10):
            return int(text, base)
        def keep(items, kind):
            return [item for item in items if isinstance(item, kind)]
    """)
    tests = textwrap.dedent("""
        root = Node(1)
        root.left = Node(2)
        root.left.left = Node(3)
        assert depth(root) == 3 and root.left.value == 2
        assert values([Node(5), Node(6)]) == [5, 6]
        numbers = countdown(3)
        assert next(numbers) == 3 and list(numbers) == [2, 1]
        assert parse("ff", base=16) == 255
        try:
            parse("x")
            assert False, "no ValueError"
        except ValueError as error:  # the program's exceptions arrive as the builtin type
            assert "invalid literal" in str(error)
        assert keep((1, "a", 2.5), int) == [1]  # builtin types as arguments, as MBPP 533 passes them
        assert root == root and root != Node(1) and root.left is root.left  # each equals only itself
    """)
    result = check_program(program, tests)
    assert result.passed, result.output


def test_only_the_globals_the_tests_name_are_sent():
    # The tests never read TABLE. Sending all globals took about 1.5 s per million ints (a busy
    # 2-core machine), so this check timed out when every global was sent.
    program = "TABLE = list(range(10**7))\n" + GOOD_PROGRAM
    result = check_program(program, ADD_TESTS, timeout_s=4)
    assert result.passed, result


def test_the_tests_cannot_hand_the_program_their_own_functions():
    # A limitation, named: nothing of the tests' runs in the program's process (no dataset needs it).
    result = check_program("def apply(f, x):\n    return f(x)\n", "assert apply(lambda x: x + 1, 1) == 2\n")
    assert not result.passed and "only plain values" in result.output, result.output


# ------------------------------------------------------------ nothing the program starts outlives it


def _wait_until_gone(pids, seconds=3.0):
    deadline = time.monotonic() + seconds
    while not all(_is_gone(pid) for pid in pids) and time.monotonic() < deadline:
        time.sleep(0.05)
    return all(_is_gone(pid) for pid in pids)


ESCAPES = {
    "a setsid() child": textwrap.dedent("""
        import os, time
        child = os.fork()
        if child == 0:
            os.setsid()
            time.sleep(60)
            os._exit(0)
        print("escaped", child, flush=True)
    """),
    "a double-forked grandchild": textwrap.dedent("""
        import os, time
        read_end, write_end = os.pipe()
        child = os.fork()
        if child == 0:
            os.setsid()
            grandchild = os.fork()
            if grandchild == 0:
                time.sleep(60)
                os._exit(0)
            os.write(write_end, str(grandchild).encode())
            os._exit(0)  # the grandchild is now an orphan
        os.waitpid(child, 0)
        print("escaped", int(os.read(read_end, 32)), flush=True)
    """),
}


@pytest.mark.parametrize("name", ESCAPES)
@pytest.mark.parametrize("outcome", ["passes", "times out"])
def test_escaped_processes_are_dead_when_the_check_returns(name, outcome):
    tests = ADD_TESTS + ("import time\ntime.sleep(60)\n" if outcome == "times out" else "")
    result = check_program(GOOD_PROGRAM + ESCAPES[name], tests, timeout_s=2)
    if os.geteuid() != 0 and "BlockingIOError" in result.output:
        pytest.skip("this user's processes already exceed RLIMIT_NPROC, so the program cannot fork")
    assert result.passed == (outcome == "passes") and result.timed_out == (outcome == "times out")
    pids = [int(pid) for pid in re.findall(r"escaped (\d+)", result.output)]
    assert pids, result.output
    # the control: a sleeping process is not gone on its own for a minute
    assert _wait_until_gone(pids), f"still running after the check: {pids}"
    assert_next_check_still_works()
