"""Run model-written Python against unit tests, in a child process with limits, and say pass/fail.

The code task's reward is 1.0 only if the model's program passes all of a problem's tests (MBPP
asserts for training, HumanEval's `check(candidate)` for evaluation). This is the only file in the
project that executes untrusted, model-written code, so it lives alone and imports only the
standard library: you can audit it without reading anything else.

    from support.sandbox import extract_code, run_tests, run_tests_batch
    run_tests(extract_code(response), "assert add(1, 2) == 3")          # -> True / False
    python support/sandbox.py --bench 256                              # throughput on this machine

How one check works (`check_program`):
  1. A fresh temporary directory becomes the child's cwd, HOME and TMPDIR; it is deleted afterwards.
  2. The child is `python -I` (isolated mode: ignores PYTHON* variables, user site-packages and the
     cwd on sys.path) with a four-variable environment, so no API keys or tokens are inherited,
     and close_fds, so it gets none of the caller's open files or sockets.
  3. It starts in a new session. The trusted harness (_HARNESS below) reads the job, which holds
     the program but not the tests, from stdin and forks: the parent stays as a supervisor and
     marks itself a child subreaper (prctl PR_SET_CHILD_SUBREAPER), so every orphan below it, even
     one that called setsid() or was double-forked, is re-parented to it rather than to init. When
     the worker exits, or at the wall-clock limit (we send the supervisor SIGTERM), it SIGKILLs the
     worker's process group and then every process left below it, generation by generation, and
     exits with the worker's status. So nothing the program started is alive when the check returns.
  4. The worker forks once more. The child becomes the program's process; the worker stays as the
     tests' process, and only then reads the tests, from an unnamed file of their own that the
     caller, the supervisor and the program's process have closed. So the tests' text, bytecode,
     constants and frames never exist in the program's process: a program that walks up the stack
     (sys._getframe, inspect), searches gc.get_objects, or reads argv, the environment or its own
     files in /proc finds nothing of them to copy its answer from.
  5. The program's process sets rlimits (CPU seconds, address space, processes, file size, open
     files, no core dumps), and, when we run as root, drops to the user `nobody` before any
     untrusted line runs. Root ignores RLIMIT_NPROC and may write any file, read any process or kill
     it; `nobody` may not, which is what makes the limits real, and keeps the program away from the
     tests' process and the supervisor, which keep root. Then it runs the program and answers the
     tests' requests over two pipes (call a function, get or set an attribute, iterate) until they
     hang up. Each answer is JSON: plain values made with C-level conversions a subclass cannot
     override (an int subclass with its own __eq__ arrives as an int, a Counter as a dict, a
     namedtuple as a tuple; to_wire in the harness), and a numbered handle for anything else.
  6. The tests' process never runs a line of the program. It has the same rlimits, and is not
     dumpable, so even a program with its uid may not read its memory, environment or files. The
     tests run with the program's globals that they name, as they arrived: plain values, the
     tests' own copy of a module (which the program cannot patch: math.isclose stays math.isclose),
     and for a function, class, instance or generator a ProgramObject stand-in: calling it, getting
     or setting an attribute, or iterating it is a request to the program's process. A stand-in
     defines no comparison, so it equals only itself, and an object whose __eq__ always says True
     makes `assert f(x) == y` and HumanEval's `check(candidate)` fail, wherever it turns up.
     Only if the tests run to their end does the tests' process read a one-time nonce from a pipe
     the parent filled and copy it to a second pipe. The parent says "passed" only for: exited
     within the time limit, exit code 0, and the exact nonce. So `exit(0)`, `os._exit(0)`,
     `sys.exit()` during the tests, printing "passed", or an atexit hook all score 0: none of them
     can carry the nonce, which is only ever in the pipe and the tests' process.
  7. Output goes to unnamed temporary files capped by RLIMIT_FSIZE, so a 1 GB print fails with
     EFBIG instead of filling the caller's memory or disk: one for the program (stdout and stderr
     together), one for the tests, which the program cannot read (a test's output may show answers).
The price is a fresh interpreter per check, about 60 ms of one core (the second fork adds little),
and about 0.1 ms of CPU per call the tests make to the program (two JSON messages over pipes; MBPP
tests make 3 calls, HumanEval's up to a few hundred); run_tests_batch runs one check per core.

What this does NOT protect against. It is not a security boundary like a container, a VM, gVisor
or seccomp; it stops accidents and reward hacks a model stumbles into, not a determined attacker:
  1. The program cannot see the tests, but it sees everything they pass to it, may remember it
     from one call to the next, and learns which of its globals they name. Some tests hand it the
     answer: HumanEval 38 and 50 call the program's own encode_cyclic / encode_shift on the very
     text the candidate must return. The tests also use any name the program defines, builtins
     included, because MBPP needs that (task 126's function is called `sum`): a program that
     defines `abs = lambda x: 0` passes HumanEval asserts of the form `abs(candidate(x) - y) < 1e-6`.
     And a stand-in is truthy and equal to itself, so a program that returns one object from
     every call passes `assert f(x)` and `assert f(x) == f(y)`.
  2. Without root there is no uid drop: the program runs as you. It can then read and write your
     files, read the caller's memory (where the tests' text is) and /proc/<caller>/environ (its
     secrets), and os.kill(-1, 9) every process you own, including the trainer. RLIMIT_NPROC
     counts all of your processes, not only the sandbox's. It can also kill its supervisor first,
     and then a setsid()'d child escapes as in 5. (The tests' process is not dumpable, so even then
     its memory is out of reach; killing it only makes the check fail.)
  3. As `nobody` it can still read world-readable files, the dataset the tests came from among
     them if it lies on this machine (keep it in a directory others may not read), write
     world-writable places (/tmp, /dev/shm) where files outlive the check, use the network, and
     signal other checks running as `nobody` at the same moment (they would then fail). The
     process cap is per user, so a fork bomb in one check can make a concurrent check's fork or
     thread fail; killed processes count until their supervisor reaps them.
  4. Only plain values and the program's own objects can go to the program: a test that passes
     one of its own functions (a lambda as a sort key) fails with a named TypeError, and a program
     that changes an argument in place changes its own copy, not the tests'. No HumanEval or MBPP
     test needs either: the 164 HumanEval canonical solutions and 964 MBPP reference programs pass.
  5. A process is only caught while it is a descendant of the supervisor: as root the program
     cannot kill the supervisor, but a helper that already runs outside (a daemon it asks over a
     socket, `at`, systemd-run) is beyond reach.
  6. Memory is capped per process (RLIMIT_AS), not in total: N forked processes may use N times the
     cap, and there is no disk quota beyond RLIMIT_FSIZE per file. cgroups would fix both.
  7. When the interpreter lives where `nobody` cannot read it (e.g. /root/.pyenv), only modules the
     harness imported before dropping privileges (_PRELOADED_MODULES) can be imported by the
     program; another import fails and the check scores 0. Extend the list if a dataset needs more.
Linux only (rlimits, pidfd_open, prctl, /proc).
"""

import argparse
import concurrent.futures
import json
import math
import os
import pwd
import re
import secrets
import select
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass

# Standard-library modules that MBPP and HumanEval solutions import. The harness imports them while
# it can still read the interpreter's files (see residual risk 7 in the module docstring).
_PRELOADED_MODULES = (
    "_strptime", "abc", "array", "base64", "bisect", "calendar", "cmath", "collections",
    "collections.abc", "copy", "dataclasses", "datetime", "decimal", "difflib", "enum", "fractions",
    "functools", "hashlib", "heapq", "itertools", "json", "math", "numbers", "operator", "queue",
    "random", "re", "signal", "statistics", "string", "struct", "textwrap", "time", "typing",
    "unicodedata",
)
_MAX_PROCESSES = 64  # RLIMIT_NPROC: per *user*, so it bounds all concurrent checks together
_MAX_FILE_BYTES = 8 * 2**20  # RLIMIT_FSIZE: caps captured output and any file the program writes
_MAX_OPEN_FILES = 256  # RLIMIT_NOFILE
_CLEANUP_GRACE_S = 2.0  # how long the supervisor may take to kill everything after a timeout
_OUTPUT_TAIL_BYTES = 8 * 2**10  # how much of the output we keep for debugging (the end, tracebacks)

# The trusted part of the child. It runs as `python -I -c _HARNESS`, reads its job as JSON on stdin
# and the tests from a file of their own (job["tests_fd"]), and splits into three processes: a
# supervisor, the tests' process, and below it the program's process, which serves the tests'
# calls over two pipes and never holds the tests' text (see the module docstring).
_HARNESS = r'''
import ast, builtins, collections, ctypes, decimal, fractions, gc, json, os, resource, signal, sys, traceback

BUILTINS = dict(vars(builtins))  # the pristine builtins, kept so that the ids below stay theirs
BUILTIN_NAMES = {id(value): name for name, value in BUILTINS.items()}
PR_SET_DUMPABLE, PR_SET_CHILD_SUBREAPER = 4, 36


class ProgramExited(Exception):
    """The program's process ended (exit(), os._exit, a crash) before it answered a call."""


class ProgramError(Exception):
    """The program raised an exception of its own class, or SystemExit, or answered garbage."""


def main():
    # Not dumpable, from the start and in every process forked from here: without root the program
    # runs as our uid, and could otherwise read the tests' memory, environment and open files
    # through /proc/<pid>/mem, /environ and /fd (a file opened there before would stay readable).
    ctypes.CDLL(None).prctl(PR_SET_DUMPABLE, 0, 0, 0, 0)
    job = json.loads(sys.stdin.buffer.read())  # stdin is now at EOF, so input() raises EOFError
    sys.set_int_max_str_digits(0)  # a result may be a huge int; the wall clock bounds the cost

    # 1. Split into a supervisor (keeps our uid) and a worker; the supervisor returns only after the
    #    worker and every process it started are dead. Forking this early, with little memory in
    #    use, keeps the worker's copy-on-write faults cheap.
    supervise(job)
    for name in job["preload"]:
        try:
            __import__(name)
        except ImportError:
            pass

    # 2. The worker splits again: the program runs in a child process, the tests stay here. They
    #    talk over two pipes, calls one way and answers the other. The tests' text is read only
    #    after this fork, so no copy of it ever exists in the program's process.
    calls_read, calls_write = os.pipe()
    answers_read, answers_write = os.pipe()
    if os.fork() == 0:
        for fd in (job["tests_fd"], job["tests_output_fd"], job["nonce_fd"], job["result_fd"], calls_write,
                   answers_read):
            os.close(fd)
        try:
            serve_program(job, calls_read, answers_write)
        except BaseException:
            traceback.print_exc()  # the program failed before the tests began: say why
        flush_output()
        os._exit(1)
    os.close(calls_read)
    os.close(answers_write)
    run_tests(job, calls_write, answers_read)


def limit(rlimits):
    """Lower the limits. We only ever lower a hard limit, which any user may do."""
    for name, (soft, hard) in rlimits.items():
        which = getattr(resource, name)
        current_hard = resource.getrlimit(which)[1]
        if current_hard != resource.RLIM_INFINITY:
            hard, soft = min(hard, current_hard), min(soft, current_hard)
        resource.setrlimit(which, (soft, hard))


def flush_output():
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except Exception:
            pass


def supervise(job):
    """Fork. The child (the worker) returns and runs the tests and, below it, the program, in its
    own process group. This
    process stays behind as a child subreaper: every orphan among the worker's descendants (a
    setsid()'d child, a double-forked grandchild) is re-parented to us instead of init, so once
    the worker has exited, or SIGTERM from the caller says time is up, we kill every process
    below us and only then exit, with the worker's exit status."""
    ctypes.CDLL(None, use_errno=True).prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)
    # Block the signals we wait for before forking, so none arrives before we listen.
    waited_for = {signal.SIGCHLD, signal.SIGTERM}
    signal.pthread_sigmask(signal.SIG_BLOCK, waited_for)
    gc.freeze()  # the worker's collector then leaves the pages it shares with us alone
    worker = os.fork()
    if worker == 0:
        os.setpgid(0, 0)
        signal.pthread_sigmask(signal.SIG_UNBLOCK, waited_for)
        return
    for fd in (job["nonce_fd"], job["result_fd"], job["tests_fd"], job["tests_output_fd"]):
        os.close(fd)  # only the tests' process may read the tests and hand the nonce on
    status = None
    while status is None:
        if signal.sigwaitinfo(waited_for).si_signo == signal.SIGTERM:
            break
        pid, exit_status = os.waitpid(worker, os.WNOHANG)
        status = exit_status if pid else None
    kill_descendants(worker)
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    if status is not None and not os.WIFSIGNALED(status):
        os._exit(os.waitstatus_to_exitcode(status))
    # The worker died of a signal (or we killed it): die of the same one, so the caller sees it.
    killed_by = os.WTERMSIG(status) if status is not None else signal.SIGKILL
    if killed_by != signal.SIGKILL:
        signal.signal(killed_by, signal.SIG_DFL)
        signal.pthread_sigmask(signal.SIG_UNBLOCK, {killed_by})
    os.kill(os.getpid(), killed_by)
    os._exit(1)


def kill_descendants(worker):
    """SIGKILL the worker's group, then every child of ours, until none is left. Killing a process
    re-parents its own children to us, so the loop reaches every generation."""
    try:
        os.killpg(worker, signal.SIGKILL)
    except OSError:
        pass
    me = os.getpid()
    for _ in range(100_000):  # bounded; each round kills or reaps at least one process
        try:
            with open(f"/proc/{me}/task/{me}/children") as listing:
                children = listing.read().split()
        except OSError:
            children = [entry for entry in os.listdir("/proc") if entry.isdigit() and parent_of(entry) == me]
        for pid in children:
            try:
                os.kill(int(pid), signal.SIGKILL)
            except OSError:
                pass
        try:
            os.waitpid(-1, 0)  # a SIGKILLed child exits at once; this reaps one of them
        except ChildProcessError:
            return


def parent_of(pid):
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return int(stat.read().rsplit(")", 1)[1].split()[1])
    except (OSError, ValueError, IndexError):
        return None


# ------------------------------------------------------------------------------ the tests' process

def run_tests(job, calls, answers):
    """Run the tests against the program's process. No line of the program runs here: its
    functions and objects are ProgramObjects that send requests, and what comes back is decoded
    from JSON into plain values. When the tests run to their end, hand the nonce on."""
    for stream in (1, 2):  # the tests' prints and tracebacks go to a file the program cannot read
        os.dup2(job["tests_output_fd"], stream)
    os.close(job["tests_output_fd"])
    tests = read_all(job["tests_fd"]).decode("utf-8", "surrogatepass")
    os.close(job["tests_fd"])
    limit(job["rlimits"])  # the tests keep our uid, out of the program's reach

    # Only the globals the tests name are sent over (a program may keep a table of a million
    # primes that they never read; a name only inside a string, as in eval("f(1)"), is missed).
    # The program learns which of its own names those are.
    named = {node.id for node in ast.walk(ast.parse(tests)) if isinstance(node, ast.Name)}
    try:
        program_globals = connect_to_program(calls, answers, named)
    except ProgramExited:
        os._exit(1)  # the program's own output (a traceback, or nothing for os._exit) says why
    namespace = {**program_globals, "__name__": "__sandbox__", "__builtins__": builtins}
    exec(compile(tests, "<tests>", "exec"), namespace)  # any failure raises out of here: exit code 1

    # The tests ran to their end. Only now fetch the nonce and hand it back.
    os.write(job["result_fd"], os.read(job["nonce_fd"], 64))
    flush_output()
    os._exit(0)


def connect_to_program(calls, answers, named):
    """The program's globals whose names are in `named`, with its functions, classes and other
    objects as ProgramObject stand-ins that send their requests over these pipes."""
    proxies = {}

    class ProgramObject:
        """One of the program's objects that is not plain data (a function, a class, an instance,
        a generator). It stays in the program's process and every use is a request there: call,
        get or set an attribute, iterate. It defines no comparison, so it equals only itself, and
        `assert f(x) == 3` fails for it however the program defined __eq__."""
        __slots__ = ("_sandbox_handle",)

        def __init__(self, number):
            object.__setattr__(self, "_sandbox_handle", number)

        def __call__(self, *args, **kwargs):
            return request("call", self, args, kwargs)

        def __getattr__(self, name):
            return request("getattr", self, name)

        def __setattr__(self, name, value):
            request("setattr", self, name, value)

        def __iter__(self):
            return request("iter", self)

        def __next__(self):
            return request("next", self)

        def __repr__(self):
            return f"<object #{self._sandbox_handle} of the program>"

    def proxy(number):
        if type(number) is not int:
            raise ValueError("a garbled handle from the program")
        if number not in proxies:
            proxies[number] = ProgramObject(number)
        return proxies[number]

    def handle_of(value):
        if type(value) is not ProgramObject:
            raise TypeError(f"the tests pass a {type(value).__name__!r} to the program; only plain values "
                            "and the program's own objects can go to its process")
        return {"handle": value._sandbox_handle}

    def receive_answer():
        try:
            answer = from_wire(receive(answers), proxy)
        except EOFError:
            raise ProgramExited("the program's process ended before it answered") from None
        if type(answer) is list and len(answer) == 2 and answer[0] == "ok":
            return answer[1]
        if type(answer) is list and len(answer) == 3 and answer[0] == "raised":
            kind = BUILTINS.get(answer[1]) if type(answer[1]) is str else None
            message = answer[2] if type(answer[2]) is str else ""
            if isinstance(kind, type) and issubclass(kind, Exception):
                raise kind(message)
            raise ProgramError(f"{answer[1]}: {message}")
        raise ProgramError("a garbled answer from the program")

    def request(action, target, *rest):
        try:
            send(calls, to_wire([action, target, *rest], handle_of))
        except BrokenPipeError:
            raise ProgramExited("the program's process ended before it was called") from None
        return receive_answer()

    names = receive_answer()  # the program's first answer: the names of its globals
    if type(names) is not list:
        raise ProgramError("a garbled answer from the program")
    return {name: request("global", name) for name in names if type(name) is str and name in named}


# ---------------------------------------------------------------------------- the program's process

def serve_program(job, calls, answers):
    """Limits, then (as root) `nobody`, then run the program and answer the tests' calls until
    they hang up. The program can tamper with everything in this process, and may: all the tests
    ever get from it is what arrives on the pipe, decoded as data."""
    limit(job["rlimits"])
    if job["uid"] is not None:  # setuid(0) is impossible afterwards
        os.setgroups([])
        os.setgid(job["gid"])
        os.setuid(job["uid"])
    program = compile(job["program"], "<program>", "exec")
    # Not "__main__": demo blocks under `if __name__ == "__main__":` (often calling input()) are
    # skipped, as in HumanEval's own harness, which execs into a namespace without __name__.
    namespace = {"__name__": "__sandbox__"}
    exec(program, namespace)

    objects, handles = [], {}  # handle number -> object, id(object) -> handle number

    def handle_of(value):  # objects stay alive in `objects`, so their ids stay theirs
        if id(value) not in handles:
            handles[id(value)] = len(objects)
            objects.append(value)
        return {"handle": handles[id(value)]}

    def perform(action, target, *rest):
        if action == "global":
            return exported[target]
        if action == "call":
            args, kwargs = rest
            return target(*args, **kwargs)
        if action == "getattr":
            return getattr(target, *rest)
        if action == "setattr":
            return setattr(target, *rest)
        if action == "iter":
            return iter(target)
        if action == "next":
            return next(target)
        raise ValueError(f"unknown request {action!r}")

    def answer(action):
        """action()'s outcome as a message: ["ok", its value as JSON] or ["raised", type name, text]."""
        try:
            return to_wire(["ok", action()], handle_of)
        except BaseException as error:  # the program's exception, SystemExit included
            try:
                text = str(error)
            except BaseException:
                text = ""
            return ["raised", type(error).__name__, text]

    exported = {name: value for name, value in namespace.items() if not name.startswith("__")}
    send(answers, answer(lambda: list(exported)))  # the first answer: the names of its globals
    while True:
        try:
            request = from_wire(receive(calls), objects.__getitem__)
        except EOFError:  # the tests are over
            flush_output()
            os._exit(0)
        message = answer(lambda: perform(*request))
        flush_output()  # the program's prints, in order with the tests' calls
        send(answers, message)


# ---------------------------------------------------------------------------------- the wire format

def send(fd, message):
    data = json.dumps(message, separators=(",", ":")).encode()
    data = len(data).to_bytes(8, "big") + data
    while data:
        data = data[os.write(fd, data):]


def receive(fd):
    """The next message's JSON text; EOFError if the other process hung up."""
    return read_exactly(fd, int.from_bytes(read_exactly(fd, 8), "big"))


def read_exactly(fd, size):
    chunks = []
    while size > 0:
        chunk = os.read(fd, min(size, 2**20))
        if not chunk:
            raise EOFError
        chunks.append(chunk)
        size -= len(chunk)
    return b"".join(chunks)


def read_all(fd):
    os.lseek(fd, 0, os.SEEK_SET)
    chunks = []
    while chunk := os.read(fd, 2**20):
        chunks.append(chunk)
    return b"".join(chunks)


SCALARS = ((bool, bool), (int, int.__pos__), (float, float.__pos__), (str, str.__str__))
SEQUENCES = (tuple, set, frozenset)


def to_wire(value, handle_of, depth=0):
    """value as JSON: None, bool, int, float, str and list as themselves, the other plain types as
    {tag: data}, anything else as handle_of(value), {"handle": number}. Subclasses of builtins
    (Counter, namedtuple, an int with its own __eq__) become the plain base type, through C-level
    methods (int.__pos__, tuple.__iter__, ...) that a subclass does not override."""
    kind = type(value)
    if value is None or kind is bool or kind is int or kind is float or kind is str:
        return value
    if depth > 100:  # a cycle, or an absurdly deep structure
        return handle_of(value)
    if id(value) in BUILTIN_NAMES:  # int, str, len, ... passed as values
        return {"builtin": BUILTIN_NAMES[id(value)]}

    def inner(item):
        return to_wire(item, handle_of, depth + 1)

    for base, convert in SCALARS:
        if issubclass(kind, base):
            return convert(value)
    if issubclass(kind, list):
        return [inner(item) for item in list.__iter__(value)]
    for base in SEQUENCES:
        if issubclass(kind, base):
            return {base.__name__: [inner(item) for item in base.__iter__(value)]}
    if issubclass(kind, dict):
        return {"dict": [[inner(key), inner(item)] for key, item in dict.items(value)]}
    if issubclass(kind, complex):
        number = complex.__pos__(value)
        return {"complex": [number.real, number.imag]}
    if issubclass(kind, bytes):
        return {"bytes": bytes.hex(value)}
    if issubclass(kind, bytearray):
        return {"bytearray": bytearray.hex(value)}
    if issubclass(kind, collections.deque):
        return {"deque": [[inner(item) for item in collections.deque.__iter__(value)],
                          collections.deque.maxlen.__get__(value)]}
    if kind is fractions.Fraction:
        return {"fraction": [int.__pos__(value.numerator), int.__pos__(value.denominator)]}
    if kind is decimal.Decimal:
        return {"decimal": decimal.Decimal.__str__(value)}
    if issubclass(kind, type(sys)):  # a module: the tests use their own copy, which the program cannot patch
        return {"module": [str.__str__(value.__name__), handle_of(value)]}
    return handle_of(value)


def from_wire(text, dereference):
    """The inverse of to_wire, for JSON from the other process, which may be garbled or forged. It
    builds only plain values, the tests' own modules and builtins, and, for {"handle": number},
    dereference(number): in the tests' process a ProgramObject, in the program's the object."""
    def pair(item):
        if type(item) is not list or len(item) != 2:
            raise ValueError("a garbled pair")
        return item

    def shaped(parts, *kinds):
        if len(parts) != len(kinds) or not all(type(part) in kind for part, kind in zip(parts, kinds)):
            raise ValueError("garbled parts")
        return parts

    def module(parts):  # the tests' own module of that name, if they have one: the program cannot patch it
        if len(parts) != 2 or type(parts[0]) is not str:
            raise ValueError("a garbled module")
        return sys.modules.get(parts[0], parts[1])

    builders = {  # tag: (the type its data must have, how to build the value)
        "builtin": (str, BUILTINS.__getitem__),
        "tuple": (list, tuple),
        "set": (list, set),
        "frozenset": (list, frozenset),
        "dict": (list, lambda items: dict(map(pair, items))),
        "complex": (list, lambda parts: complex(*shaped(parts, (int, float), (int, float)))),
        "bytes": (str, bytes.fromhex),
        "bytearray": (str, bytearray.fromhex),
        "deque": (list, lambda parts: collections.deque(*shaped(parts, (list,), (int, type(None))))),
        "fraction": (list, lambda parts: fractions.Fraction(*shaped(parts, (int,), (int,)))),
        "decimal": (str, decimal.Decimal),
        "module": (list, module),
        "handle": (int, dereference),
    }

    def build(tagged):
        if len(tagged) != 1:
            raise ValueError("a garbled value")
        (tag, data), = tagged.items()
        kind, make = builders[tag]
        if type(data) is not kind:
            raise ValueError(f"a garbled {tag}")
        return make(data)

    return json.loads(text, object_hook=build)


main()
'''

_FENCED_BLOCK = re.compile(r"```[^\n`]*\n(.*?)```", re.DOTALL)
_OPENING_FENCE = re.compile(r"```[^\n`]*(?:\n|$)")


@dataclass
class CheckResult:
    passed: bool
    """The tests ran to their end: exit code 0 and the nonce came back in time."""
    timed_out: bool
    """Killed at the wall-clock limit."""
    returncode: int
    """The child's exit status; negative is a signal (-9 from our kill, -24 SIGXCPU)."""
    output: str
    """For debugging: the last few KiB of the program's output (stdout and stderr interleaved), then
    of the tests' (their prints and the traceback of a failure)."""


def extract_code(response: str) -> str:
    """The code in a model response: the last complete ``` block, else the text after a dangling
    opening fence (a response cut off mid-block), else the whole response."""
    blocks = _FENCED_BLOCK.findall(response)
    if blocks:
        return blocks[-1]
    opening = _OPENING_FENCE.search(response)
    if opening:  # no complete block, so this is the only fence: an unclosed one
        return response[opening.end():]
    return response


def run_tests(program: str, tests: str, timeout_s: float = 5.0, memory_mb: int = 1024) -> bool:
    """True only if `tests` run to their end without error after `program`, in one namespace."""
    return check_program(program, tests, timeout_s, memory_mb).passed


def run_tests_batch(
    cases: list[tuple[str, str]],
    timeout_s: float = 5.0,
    memory_mb: int = 1024,
    max_workers: int | None = None,
) -> list[bool]:
    """run_tests for each (program, tests), max_workers (default: CPU cores) at a time; same order.

    Threads are enough: each one only starts a child process and waits for it."""
    workers = max_workers or os.cpu_count() or 1
    with concurrent.futures.ThreadPoolExecutor(max_workers=workers) as pool:
        return list(pool.map(lambda case: run_tests(*case, timeout_s, memory_mb), cases))


def check_program(program: str, tests: str, timeout_s: float = 5.0, memory_mb: int = 1024) -> CheckResult:
    """Run program then tests in a limited child process; see the module docstring."""
    nonce = secrets.token_hex(16).encode()  # unguessable, new for every check
    nobody = _unprivileged_ids()  # (uid, gid) if we are root, else None
    with (
        tempfile.TemporaryDirectory(prefix="sandbox-", ignore_cleanup_errors=True) as workdir,
        tempfile.TemporaryFile() as output,
        tempfile.TemporaryFile() as tests_output,
    ):
        if nobody is not None:
            os.chown(workdir, *nobody)  # the only place `nobody` may write (besides /tmp, see 3.)
        nonce_read, nonce_write = os.pipe()
        os.write(nonce_write, nonce)  # 32 bytes fit in the pipe buffer; no reader needed yet
        os.close(nonce_write)  # so the harness reads EOF, never blocks, if the program drained it
        result_read, result_write = os.pipe()
        # The tests travel in an unnamed file of their own, not in the job on stdin: only the tests'
        # process reads it, after the program's process has been forked off without it.
        tests_file = tempfile.TemporaryFile()
        tests_file.write(tests.encode("utf-8", "surrogatepass"))
        fds = {"nonce_fd": nonce_read, "result_fd": result_write, "tests_fd": tests_file.fileno(),
               "tests_output_fd": tests_output.fileno()}  # the same numbers in the child
        try:
            child = subprocess.Popen(
                [sys.executable, "-I", "-c", _HARNESS],
                stdin=subprocess.PIPE,
                stdout=output,
                stderr=subprocess.STDOUT,
                cwd=workdir,
                env={"PATH": "/usr/bin:/bin", "HOME": workdir, "TMPDIR": workdir, "LANG": "C.UTF-8"},
                start_new_session=True,
                pass_fds=tuple(fds.values()),
            )
        finally:
            os.close(nonce_read)  # the child holds its own copies now
            os.close(result_write)
            tests_file.close()
        try:
            job = {
                "program": program, "preload": _PRELOADED_MODULES,
                "rlimits": _resource_limits(timeout_s, memory_mb),
                "uid": nobody[0] if nobody else None, "gid": nobody[1] if nobody else None, **fds,
            }
            _send(child, json.dumps(job).encode())
            exited = _wait_without_reaping(child.pid, timeout_s)
            if not exited:  # time is up: the supervisor kills the worker and all it started, then exits
                os.kill(child.pid, signal.SIGTERM)
                _wait_without_reaping(child.pid, _CLEANUP_GRACE_S)
            # Then kill the supervisor's group, a backstop in case it did not exit. It is not reaped
            # yet, so its pid (= the group id) cannot have been reused by someone else.
            _kill_process_group(child.pid)
            returncode = child.wait()
            received = _read_available(result_read, 64)
        finally:
            os.close(result_read)
        passed = exited and returncode == 0 and received == nonce
        return CheckResult(passed, not exited, returncode,
                           _tail(output, _OUTPUT_TAIL_BYTES) + _tail(tests_output, _OUTPUT_TAIL_BYTES))


def _resource_limits(timeout_s: float, memory_mb: int) -> dict[str, tuple[int, int]]:
    """(soft, hard) per rlimit. The CPU limit is a backstop a second behind the wall clock: it
    ends a spinning process that escaped the group kill (residual risk 5)."""
    cpu_s = math.ceil(timeout_s) + 1
    return {
        "RLIMIT_CPU": (cpu_s, cpu_s + 1),  # SIGXCPU at soft, SIGKILL at hard
        "RLIMIT_AS": (memory_mb * 2**20, memory_mb * 2**20),
        "RLIMIT_NPROC": (_MAX_PROCESSES, _MAX_PROCESSES),
        "RLIMIT_FSIZE": (_MAX_FILE_BYTES, _MAX_FILE_BYTES),
        "RLIMIT_NOFILE": (_MAX_OPEN_FILES, _MAX_OPEN_FILES),
        "RLIMIT_CORE": (0, 0),
    }


def _unprivileged_ids() -> tuple[int, int] | None:
    """(uid, gid) of `nobody` when we are root, since root ignores RLIMIT_NPROC and file modes."""
    if os.geteuid() != 0:
        return None
    try:
        entry = pwd.getpwnam("nobody")
        return entry.pw_uid, entry.pw_gid
    except KeyError:
        return 65534, 65534  # the conventional nobody/nogroup ids


def _send(child: subprocess.Popen, job: bytes) -> None:
    try:
        child.stdin.write(job)
        child.stdin.close()
    except BrokenPipeError:  # the harness died before reading; its exit code tells the story
        pass


def _wait_without_reaping(pid: int, timeout_s: float) -> bool:
    """Wait until the process exits or timeout_s passes; True if it exited. A pidfd becomes readable
    on exit without reaping the process, unlike Popen.wait. (poll, not select: a trainer may have
    more than 1024 files open.)"""
    pidfd = os.pidfd_open(pid)
    try:
        poller = select.poll()
        poller.register(pidfd, select.POLLIN)
        return bool(poller.poll(timeout_s * 1000))
    finally:
        os.close(pidfd)


def _kill_process_group(pgid: int) -> None:
    try:
        os.killpg(pgid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def _read_available(fd: int, max_bytes: int) -> bytes:
    """Read what is in the pipe now, without waiting for EOF: a forked child may hold it open."""
    os.set_blocking(fd, False)
    try:
        return os.read(fd, max_bytes)
    except BlockingIOError:
        return b""


def _tail(file, max_bytes: int) -> str:
    size = file.seek(0, os.SEEK_END)
    file.seek(max(0, size - max_bytes))
    return file.read().decode("utf-8", errors="replace")


def _benchmark(n_checks: int, timeout_s: float, max_workers: int | None) -> None:
    """Check n_checks programs: 4/8 pass, 2/8 fail an assert, 1/8 raise, 1/8 loop until the timeout."""
    tests = "assert add(1, 2) == 3\nassert add(-1, 1) == 0\nassert add(10, 5) == 15"
    programs = [
        "def add(a, b):\n    return a + b",
        "def add(a, b):\n    return a + b",
        "def add(a, b):\n    return sum([a, b])",
        "import functools, operator\ndef add(a, b):\n    return functools.reduce(operator.add, [a, b])",
        "def add(a, b):\n    return a - b",
        "def add(a, b):\n    return a * b",
        "def add(a, b):\n    raise ValueError('no')",
        "def add(a, b):\n    while True:\n        pass",
    ]
    cases = [(programs[i % 8], tests) for i in range(n_checks)]
    workers = max_workers or os.cpu_count() or 1
    start = time.perf_counter()
    results = run_tests_batch(cases, timeout_s=timeout_s, max_workers=workers)
    seconds = time.perf_counter() - start
    print(f"{n_checks} checks in {seconds:.1f} s = {n_checks / seconds:.1f} checks/s "
          f"with {workers} workers (timeout {timeout_s} s); passed {sum(results)}, "
          f"expected {sum(1 for i in range(n_checks) if i % 8 < 4)}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bench", type=int, default=256, help="number of programs to check")
    parser.add_argument("--timeout", type=float, default=1.0, help="seconds per check")
    parser.add_argument("--workers", type=int, default=None, help="default: os.cpu_count()")
    args = parser.parse_args()
    _benchmark(args.bench, args.timeout, args.workers)
