"""sympy for the MATH checker (reward.is_equiv, support/math_answers.py): LaTeX to sympy syntax, and a
child process that runs it.

The checker decides almost every pair with strings and exact fractions; what is left (identities such
as sec^2 y = tan^2 y + 1, factors in another order, equations up to a factor) comes here. This is its
own file because it is its own world: sympy is imported only in a child process
(`python support/sympy_worker.py --sympy-worker`), which a deadline can kill. A thread cannot be
killed and signal.alarm works only on the main thread, so a hostile answer like 10^{10^{10}} costs
the caller its timeout and a worker restart, never a hang. The LaTeX is translated in the caller, so what is
not arithmetic fails without a worker: no builtins, quotes or attribute access ever reach the parser.

    sympy_says_equal(pred, gold, mode, deadline)   mode "value" or "equation"; False on timeout
    MATH_FUNCTIONS                                  the function names the parser knows (sin, sqrt, ...)
"""

import json
import os
import queue
import re
import subprocess
import sys
import threading
import time

MATH_FUNCTIONS = {"sqrt", "sin", "cos", "tan", "cot", "sec", "csc", "log", "ln", "exp", "pi"}


def _braced_argument(text: str, start: int) -> str | None:
    """'{a{b}c}...' with start at the first '{' -> 'a{b}c'; None if there is no balanced group."""
    if not text.startswith("{", start):
        return None
    depth = 0
    for i in range(start, len(text)):
        depth += (text[i] == "{") - (text[i] == "}")
        if depth == 0:
            return text[start + 1 : i]
    return None


# ---- LaTeX -> sympy syntax (in the caller, so what is not math fails without a worker) ---------

_GREEK = set("alpha beta gamma delta epsilon theta phi mu sigma omega".split())
_LATEX_NAMES = {"infty": "oo", "cdot": "*", "times": "*", "div": "/", "lambda": "lamda",
                **{name: name for name in MATH_FUNCTIONS | _GREEK}}
# commands with braced arguments; the leading " " keeps i\sqrt{3} from becoming the name isqrt
_LATEX_FUNCTIONS = {"\\frac": (2, "(({0})/({1}))"), "\\binom": (2, " binomial({0},{1})"),
                    "\\root": (2, "(({1})**(1/({0})))"), "\\sqrt": (1, " sqrt({0})")}


def _to_sympy_syntax(latex: str) -> str | None:
    """\\frac{a}{b} -> ((a)/(b)), \\sqrt[n]{a} -> ((a)**(1/(n))), \\pi -> pi, {} -> ().
    None for any other command, or for any character that is not arithmetic."""
    if len(latex) > 500:
        return None
    text = re.sub(r"\\sqrt\[([^\[\]]*)\]", r"\\root{\1}", latex)  # \sqrt[3]{8} -> \root{3}{8}
    # \sec^2 y, \sin^{2}(2x): the power belongs to the value, sec(y)^2, not to the name
    text = re.sub(r"\\(sin|cos|tan|cot|sec|csc)\^(\d|\{\d+\})\s*(\([^()]*\)|\\?[a-zA-Z0-9]+)", r"(\\\1(\3))^\2", text)
    for command, (arity, template) in _LATEX_FUNCTIONS.items():
        while (at := text.rfind(command)) >= 0:  # the last one has no other inside its arguments
            arguments, end = [], at + len(command)
            for _ in range(arity):
                if (argument := _braced_argument(text, end)) is None:
                    return None
                arguments.append(argument)
                end += len(argument) + 2
            text = text[:at] + template.format(*arguments) + text[end:]
    if any(name not in _LATEX_NAMES for name in re.findall(r"\\([a-zA-Z]+)", text)):
        return None
    text = re.sub(r"\\([a-zA-Z]+)", lambda m: f" {_LATEX_NAMES[m[1]]} ", text)
    text = text.replace("{", "(").replace("}", ")")
    # no quotes, underscores, dots after names or backslashes: nothing but arithmetic reaches eval
    return text if re.fullmatch(r"[A-Za-z0-9 .,+\-*/^()!]*", text) else None


# ---- The worker: sympy in a child process, a pool of idle children, a cache of verdicts -------------


def _sympy_equal(pred: str, gold: str, mode: str) -> bool:
    """In the worker. Values: equal if the difference is 0, exactly for rationals (10^{100}+1 is
    not 10^{100}), else numerically, relative for tiny numbers (1/2004! is not 1/2006!) or
    symbolically. Equations: equal if one (lhs - rhs) is a non-zero constant times the other."""
    import sympy
    from sympy.parsing.sympy_parser import (convert_xor, implicit_multiplication_application,
                                            parse_expr, rationalize, standard_transformations)

    names = {"__builtins__": {}, "e": sympy.E, "i": sympy.I}  # no builtins; MATH's e and i
    for name in "Integer Float Rational Symbol Function factorial binomial oo I".split() + sorted(MATH_FUNCTIONS):
        names[name] = getattr(sympy, name)  # the parser's own output needs Integer, Symbol, ...
    steps = standard_transformations + (implicit_multiplication_application, convert_xor, rationalize)
    a, b = (parse_expr(text, local_dict={}, global_dict=dict(names), transformations=steps)
            for text in (pred, gold))
    if mode == "equation":
        ratio = sympy.simplify(a / b)
        return bool(ratio.is_number and ratio.is_finite and ratio != 0)
    difference = a - b
    if a == b or difference == 0:
        return True
    if difference.free_symbols:
        return sympy.expand(difference) == 0 or sympy.simplify(difference) == 0
    if difference.is_Rational:
        return False
    scale = min(sympy.Float(1), max(abs(sympy.N(a)), abs(sympy.N(b))))  # relative below 1
    gap = abs(sympy.N(difference, 30))  # evalf raises its working precision until the gap is right
    return bool(gap.is_finite and scale.is_finite and gap <= 1e-12 * scale)


def _serve_sympy_requests() -> None:
    """The worker loop: one JSON request per line on stdin, one "1" / "0" per line on stdout."""
    try:
        import resource  # cap memory so 10^{10^{10}} runs out of memory instead of swapping (Unix)

        resource.setrlimit(resource.RLIMIT_AS, (2 << 30, resource.getrlimit(resource.RLIMIT_AS)[1]))
    except (ImportError, ValueError, OSError):
        pass
    # pay for importing sympy and its parser before saying ready: that start-up is our cost, and
    # must not come out of the first answer's deadline
    _sympy_equal("x+1", "1+x", "value")
    print("ready", flush=True)
    for line in sys.stdin:
        request = json.loads(line)
        try:
            verdict = _sympy_equal(request["pred"], request["gold"], request["mode"])
        except Exception:  # unparseable or undecidable: not shown equal
            verdict = False
        print("1" if verdict else "0", flush=True)


class _SympyWorker:
    """One `python support/sympy_worker.py --sympy-worker` child, and a thread that queues its replies."""

    def __init__(self) -> None:
        command = [sys.executable, os.path.abspath(__file__), "--sympy-worker"]
        self.process = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                        stderr=subprocess.DEVNULL, text=True)
        self.replies: queue.Queue = queue.Queue()
        threading.Thread(target=self._read_replies, daemon=True).start()
        if self.replies.get(timeout=60) != "ready":  # starting is our code, not the input's: be generous
            raise RuntimeError("the sympy worker did not start")

    def _read_replies(self) -> None:
        for line in self.process.stdout:  # ends when the child dies
            self.replies.put(line.strip())

    def ask(self, request: dict, timeout_s: float) -> bool | None:
        """The verdict, or None when the worker ran past timeout_s (it must then be killed)."""
        try:
            self.process.stdin.write(json.dumps(request) + "\n")
            self.process.stdin.flush()
            return self.replies.get(timeout=max(timeout_s, 0.0)) == "1"
        except (queue.Empty, OSError):
            return None


# Idle workers: a check takes one out and puts it back, so threads never wait on each other.
# A forked child must not use its parent's workers (they share the pipes), hence the fork hook.
_IDLE_WORKERS: list[_SympyWorker] = []
_IDLE_WORKERS_LOCK = threading.Lock()
_VERDICT_CACHE: dict[tuple[str, str, str], bool] = {}  # sympy verdicts; timeouts are not cached


def _forget_parent_workers() -> None:
    global _IDLE_WORKERS, _IDLE_WORKERS_LOCK
    _IDLE_WORKERS, _IDLE_WORKERS_LOCK = [], threading.Lock()  # the lock may have been held mid-fork


if hasattr(os, "register_at_fork"):  # not on Windows, which has no fork
    os.register_at_fork(after_in_child=_forget_parent_workers)


def sympy_says_equal(pred: str, gold: str, mode: str, deadline: float) -> bool:
    """Does sympy show the two LaTeX answers equal ("value") or proportional ("equation") before
    `deadline` (time.monotonic())? False for what is not arithmetic, or takes too long."""
    key = (_to_sympy_syntax(pred), _to_sympy_syntax(gold), mode)
    if None in key:
        return False
    if key in _VERDICT_CACHE:
        return _VERDICT_CACHE[key]
    with _IDLE_WORKERS_LOCK:
        worker = _IDLE_WORKERS.pop() if _IDLE_WORKERS else None
    if worker is None:  # starting one takes seconds on a busy machine: the answer's time starts after
        started_at = time.monotonic()
        worker = _SympyWorker()
        deadline += time.monotonic() - started_at
    verdict = worker.ask({"pred": key[0], "gold": key[1], "mode": mode}, deadline - time.monotonic())
    if verdict is None:  # too slow: it may be stuck for good, so it goes
        worker.process.kill()
        worker.process.wait()
        return False
    with _IDLE_WORKERS_LOCK:
        _IDLE_WORKERS.append(worker)
    if len(_VERDICT_CACHE) > 100_000:
        _VERDICT_CACHE.clear()
    _VERDICT_CACHE[key] = verdict
    return verdict


if __name__ == "__main__" and sys.argv[1:] == ["--sympy-worker"]:
    _serve_sympy_requests()  # the sympy child process; see _SympyWorker
