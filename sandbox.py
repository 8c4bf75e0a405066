"""Run model-written Python against unit tests, in a child process with limits, and say pass/fail.

The code task's reward is 1.0 only if the model's program passes all of a problem's tests (MBPP
asserts for training, HumanEval's `check(candidate)` for evaluation). This is the only file in the
project that executes untrusted, model-written code, so it lives alone and imports only the
standard library: you can audit it without reading anything else.

    from sandbox import extract_code, run_tests, run_tests_batch
    run_tests(extract_code(response), "assert add(1, 2) == 3")          # -> True / False
    python sandbox.py --bench 256                                      # throughput on this machine

How one check works (`check_program`):
  1. A fresh temporary directory becomes the child's cwd, HOME and TMPDIR; it is deleted afterwards.
  2. The child is `python -I` (isolated mode: ignores PYTHON* variables, user site-packages and the
     cwd on sys.path) with a four-variable environment, so no API keys or tokens are inherited,
     and close_fds, so it gets none of the caller's open files or sockets.
  3. It starts in a new session. The trusted harness (_HARNESS below) reads the job from stdin and
     forks: the parent stays as a supervisor and marks itself a child subreaper (prctl
     PR_SET_CHILD_SUBREAPER), so every orphan below it, even one that called setsid() or was
     double-forked, is re-parented to it rather than to init. When the worker exits, or at the
     wall-clock limit (we send the supervisor SIGTERM), it SIGKILLs the worker's process group and
     then every process left below it, generation by generation, and exits with the worker's
     status. So nothing the program started is alive when the check returns.
  4. The worker sets rlimits (CPU seconds, address space, processes, file size, open files, no
     core dumps), and, when we run as root, drops to the user `nobody` before any untrusted line
     runs. Root ignores RLIMIT_NPROC and may write any file or kill any process; `nobody` may not,
     which is what makes the limits real. The supervisor keeps root, so the program cannot kill it.
  5. It runs the program, then the tests, in a copy of the program's namespace. Every call in the
     tests, f(x), goes through a trusted wrapper that turns the result into plain builtin values
     with C-level conversions a subclass cannot override (make_checked_call in the harness): an
     object whose __eq__ always returns True, also as an int, float or str subclass, becomes a
     plain value or an object that refuses every comparison, so `assert f(x) == y` and
     HumanEval's `check(candidate)` fail. Only if the tests run to their end does
     the harness read a one-time nonce from a pipe the parent filled and copy it to a second pipe.
     The parent says "passed" only for: exited within the time limit, exit code 0, and the exact
     nonce. So `exit(0)`, `os._exit(0)`, `sys.exit()` during the tests, printing "passed", or an
     atexit hook that turns a failure into exit code 0 all score 0: none of them carries the nonce.
     The nonce is not in the child's memory while the untrusted code runs (it sits in the pipe).
  6. Output (stdout and stderr together) goes to an unnamed temporary file capped by RLIMIT_FSIZE,
     so a 1 GB print fails with EFBIG instead of filling the caller's memory or disk.
The price is a fresh interpreter per check, about 60 ms of one core (the supervisor's fork and the
wrapped calls add little); run_tests_batch runs one check per core at a time.

What this does NOT protect against. It is not a security boundary like a container, a VM, gVisor
or seccomp; it stops accidents and reward hacks a model stumbles into, not a determined attacker:
  1. The program runs in the harness's own process. Code that goes looking (sys._getframe,
     gc.get_objects, /proc/self/fd) can find the pipes and forge the nonce, skip lines with a trace
     function, or patch modules the tests use (e.g. math.isclose, Fraction.__eq__). We restore the
     builtins and clear trace/profile hooks before the tests, which stops only the obvious patches.
     Results are made plain only where the tests call something: an always-equal object still
     gets through an attribute of a returned object (`f(x).value == 3`), a callback the program
     receives (`sorted(xs, key=f)`), a global the tests read without calling, or a container type
     the wrapper does not know (a dict view, an array).
  2. Without root there is no uid drop: the program runs as you. It can then read and write your
     files, read /proc/<parent>/environ (the caller's secrets), and os.kill(-1, 9) every process you
     own, including the trainer. RLIMIT_NPROC counts all of your processes, not only the sandbox's.
     It can also kill its supervisor first, and then a setsid()'d child escapes as in 4.
  3. As `nobody` it can still read world-readable files, write world-writable places (/tmp,
     /dev/shm) where files outlive the check, use the network, and signal other checks running as
     `nobody` at the same moment (they would then fail). The process cap is per user, so a fork bomb
     in one check can make a concurrent check's fork or thread fail; killed processes count until
     their supervisor reaps them.
  4. A process is only caught while it is a descendant of the supervisor: as root the program
     cannot kill the supervisor, but a helper that already runs outside (a daemon it asks over a
     socket, `at`, systemd-run) is beyond reach.
  5. Memory is capped per process (RLIMIT_AS), not in total: N forked processes may use N times the
     cap, and there is no disk quota beyond RLIMIT_FSIZE per file. cgroups would fix both.
  6. When the interpreter lives where `nobody` cannot read it (e.g. /root/.pyenv), only modules the
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
# it can still read the interpreter's files (see residual risk 6 in the module docstring).
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

# The trusted part of the child. It runs as `python -I -c _HARNESS` and reads its job as JSON on
# stdin. Everything before `run(program, namespace)` runs before any untrusted code.
_HARNESS = r'''
import _ast, builtins, collections, ctypes, gc, json, os, resource, signal, sys

def main():
    # 1. Keep our own references to everything used after the program has run: it can rebind
    #    names in builtins, os and sys, but it cannot reach into these local variables (short of
    #    frame introspection, see the residual risks).
    run, read, write, hard_exit = exec, os.read, os.write, os._exit
    settrace, setprofile = sys.settrace, sys.setprofile
    stdout, stderr = sys.stdout, sys.stderr
    job = json.loads(sys.stdin.buffer.read())  # stdin is now at EOF, so input() raises EOFError

    # 2. Split into a supervisor (keeps our uid) and a worker (runs the program); the supervisor
    #    returns only after the worker and every process it started are dead. Forking this early,
    #    with little memory in use, keeps the worker's copy-on-write faults cheap.
    supervise(job["nonce_fd"], job["result_fd"])
    for name in job["preload"]:
        try:
            __import__(name)
        except ImportError:
            pass
    checked_call = make_checked_call()  # before any untrusted line: it snapshots the trusted types

    # 3. Limits, then (as root) become `nobody`; setuid(0) is impossible afterwards. We only ever
    #    lower a hard limit, which any user may do.
    for name, (soft, hard) in job["rlimits"].items():
        which = getattr(resource, name)
        current_hard = resource.getrlimit(which)[1]
        if current_hard != resource.RLIM_INFINITY:
            hard, soft = min(hard, current_hard), min(soft, current_hard)
        resource.setrlimit(which, (soft, hard))
    if job["uid"] is not None:
        os.setgroups([])
        os.setgid(job["gid"])
        os.setuid(job["uid"])

    # 4. Compile both first, so a program ending in an open string cannot swallow the tests. In the
    #    tests every call f(x) becomes __sandbox_checked__(f, x), which turns the result into plain
    #    builtin values (make_checked_call): an object whose __eq__ always says True never reaches
    #    the comparison.
    program = compile(job["program"], "<program>", "exec")
    tests = compile(route_calls(compile(job["tests"], "<tests>", "exec", _ast.PyCF_ONLY_AST)), "<tests>", "exec")
    pristine_builtins = dict(vars(builtins))
    program_builtins = dict(pristine_builtins)  # a copy: patching it does not reach the harness
    # Not "__main__": demo blocks under `if __name__ == "__main__":` (often calling input()) are
    # skipped, as in HumanEval's own harness, which execs into a namespace without __name__.
    namespace = {"__name__": "__sandbox__", "__builtins__": program_builtins}
    run(program, namespace)

    # 5. Undo the cheap patches a program could make to the tests' world (not exhaustive). The
    #    tests get a copy of the namespace, so the program's functions (whose globals are the
    #    original) cannot swap __sandbox_checked__ for their own while the tests run.
    settrace(None)
    setprofile(None)
    program_builtins.clear()
    program_builtins.update(pristine_builtins)
    test_namespace = dict(namespace)
    test_namespace.update(__builtins__=program_builtins, __sandbox_checked__=checked_call)
    run(tests, test_namespace)  # any failure raises out of here: no nonce, exit code 1

    # 6. The tests ran to their end. Only now fetch the nonce and hand it back. Then flush the
    #    prints (for debugging): the program may have tampered with the streams, but after the nonce
    #    is written that can at worst turn a pass into a fail. _exit skips atexit hooks and waiting
    #    for the program's threads.
    write(job["result_fd"], read(job["nonce_fd"], 64))
    stdout.flush()
    stderr.flush()
    hard_exit(0)


def supervise(nonce_fd, result_fd):
    """Fork. The child (the worker) returns and runs the program in its own process group. This
    process stays behind as a child subreaper: every orphan among the worker's descendants (a
    setsid()'d child, a double-forked grandchild) is re-parented to us instead of init, so once
    the worker has exited, or SIGTERM from the caller says time is up, we kill every process
    below us and only then exit, with the worker's exit status."""
    ctypes.CDLL(None, use_errno=True).prctl(36, 1, 0, 0, 0)  # PR_SET_CHILD_SUBREAPER
    # Block the signals we wait for before forking, so none arrives before we listen.
    waited_for = {signal.SIGCHLD, signal.SIGTERM}
    signal.pthread_sigmask(signal.SIG_BLOCK, waited_for)
    gc.freeze()  # the worker's collector then leaves the pages it shares with us alone
    worker = os.fork()
    if worker == 0:
        os.setpgid(0, 0)
        signal.pthread_sigmask(signal.SIG_UNBLOCK, waited_for)
        return
    os.close(nonce_fd)  # only the worker may hand the nonce on
    os.close(result_fd)
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


def make_checked_call():
    """The function every call in the tests goes through: f(*args) with its result made plain.

    Plain means: int, float, complex, str, bytes, bool and None of exactly those types; list,
    tuple, dict, set, frozenset and deque rebuilt from plain items (subclasses such as Counter
    or namedtuple become the base type); the conversions are C-level methods (int.__pos__,
    list.__iter__, ...) that a subclass cannot override. Objects of the interpreter's C types
    and of classes that existed before the program ran pass unchanged (iterators are wrapped so
    that their items are made plain), and so does what the tests build themselves with such a
    class, Counter(...) or Fraction(...), if it is not a builtin container. An object of a class
    the program defined passes only if
    that class defines no special method beyond __init__ / __repr__ / __str__; anything else
    becomes an object that raises on every comparison, so the test fails."""
    exact = {id(kind) for kind in (int, float, complex, str, bytes, bool, type(None))}
    scalars = ((bool, bool), (int, int.__pos__), (float, float.__pos__), (complex, complex.__pos__),
               (str, str.__str__), (bytes, bytes.__bytes__))
    iterate = {list: list.__iter__, tuple: tuple.__iter__, set: set.__iter__, frozenset: frozenset.__iter__,
               collections.deque: collections.deque.__iter__}
    dict_items, mro_of, flags_of = dict.items, type.__dict__["__mro__"].__get__, type.__dict__["__flags__"].__get__
    type_of, same_id, is_sub, to_tuple, to_list = type, id, issubclass, tuple, list
    heap_type, inert_names = 1 << 9, {"__init__", "__repr__", "__str__", "__module__", "__qualname__",
                                      "__doc__", "__dict__", "__weakref__", "__slots__", "__annotations__"}
    def generator():
        yield
    itertools = __import__("itertools")
    lazy = {same_id(kind) for kind in [type(generator()), map, filter, zip, enumerate, reversed, type(iter([])),
                                        type(iter(())), type(iter(set())), type(iter({}.values())),
                                        type(iter(int, 1))] + [value for value in vars(itertools).values()
                                                                if isinstance(value, type)]}
    containers = {same_id(kind) for kind in (list, tuple, dict, set, frozenset)}
    trusted = {same_id(value) for module in list(sys.modules.values())
               for value in list(getattr(module, "__dict__", {}).values()) if isinstance(value, type)}

    class NotPlain:
        """Stands in for an object the tests must not compare: every use raises."""
        def __init__(self, kind):
            self.kind = kind
        def refuse(self, *args):
            raise TypeError(f"the program returned a {self.kind.__name__!r} object, not a plain value")
        __eq__ = __ne__ = __lt__ = __le__ = __gt__ = __ge__ = __bool__ = __hash__ = __len__ = __iter__ = refuse
        __add__ = __sub__ = __mul__ = __truediv__ = __abs__ = __float__ = __int__ = __index__ = refuse

    def inert(kind):
        if type_of(kind) is not type:  # a metaclass could fake the MRO
            return False
        return all(same_id(base) in trusted or all(not (name.startswith("__") and name.endswith("__"))
                                                   or name in inert_names for name in base.__dict__)
                   for base in mro_of(kind))

    def plain(value, depth=0):
        kind = type_of(value)
        if same_id(kind) in exact:
            return value
        if depth > 100:  # a cycle or an absurdly deep structure
            return NotPlain(kind)
        for base, convert in scalars:
            if is_sub(kind, base):
                return convert(value)
        for base, items in iterate.items():
            if is_sub(kind, base):
                values = [plain(item, depth + 1) for item in items(value)]
                if base is collections.deque:
                    return collections.deque(values, collections.deque.maxlen.__get__(value))
                return to_list(values) if base is list else base(values)
        if is_sub(kind, dict):
            return {plain(key, depth + 1): plain(item, depth + 1) for key, item in dict_items(value)}
        if not flags_of(kind) & heap_type or same_id(kind) in trusted:
            if same_id(kind) in lazy:  # a generator, map, zip, ...: its items may come from the program
                return (plain(item, depth + 1) for item in value)
            return value
        return value if inert(kind) else NotPlain(kind)

    def checked_call(function, /, *args, **kwargs):
        result = function(*args, **kwargs)
        if same_id(function) in trusted - containers and same_id(type_of(result)) == same_id(function):
            return result  # the tests' own Counter(...), Fraction(...): keep their type and methods
        return plain(result)  # list(map(candidate, xs)) is plain() too

    return checked_call


def route_calls(node):
    """f(x) -> __sandbox_checked__(f, x) everywhere in the tests' syntax tree (not super())."""
    for field in node._fields:
        value = getattr(node, field, None)
        if isinstance(value, list):
            value[:] = [route_calls(item) if isinstance(item, _ast.AST) else item for item in value]
        elif isinstance(value, _ast.AST):
            setattr(node, field, route_calls(value))
    if isinstance(node, _ast.Call) and not (isinstance(node.func, _ast.Name) and node.func.id == "super"):
        where = {name: getattr(node, name) for name in ("lineno", "col_offset", "end_lineno", "end_col_offset")}
        checker = _ast.Name(id="__sandbox_checked__", ctx=_ast.Load(), **where)
        return _ast.Call(func=checker, args=[node.func, *node.args], keywords=node.keywords, **where)
    return node

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
    """The last few KiB of stdout and stderr, interleaved, for debugging."""


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
    ):
        if nobody is not None:
            os.chown(workdir, *nobody)  # the only place `nobody` may write (besides /tmp, see 3.)
        nonce_read, nonce_write = os.pipe()
        os.write(nonce_write, nonce)  # 32 bytes fit in the pipe buffer; no reader needed yet
        os.close(nonce_write)  # so the harness reads EOF, never blocks, if the program drained it
        result_read, result_write = os.pipe()
        try:
            child = subprocess.Popen(
                [sys.executable, "-I", "-c", _HARNESS],
                stdin=subprocess.PIPE,
                stdout=output,
                stderr=subprocess.STDOUT,
                cwd=workdir,
                env={"PATH": "/usr/bin:/bin", "HOME": workdir, "TMPDIR": workdir, "LANG": "C.UTF-8"},
                start_new_session=True,
                pass_fds=(nonce_read, result_write),
            )
        finally:
            os.close(nonce_read)  # the child holds its own copies now
            os.close(result_write)
        try:
            job = {
                "program": program, "tests": tests, "preload": _PRELOADED_MODULES,
                "rlimits": _resource_limits(timeout_s, memory_mb),
                "uid": nobody[0] if nobody else None, "gid": nobody[1] if nobody else None,
                "nonce_fd": nonce_read, "result_fd": result_write,  # same numbers in the child
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
        return CheckResult(passed, not exited, returncode, _tail(output, _OUTPUT_TAIL_BYTES))


def _resource_limits(timeout_s: float, memory_mb: int) -> dict[str, tuple[int, int]]:
    """(soft, hard) per rlimit. The CPU limit is a backstop a second behind the wall clock: it
    ends a spinning process that escaped the group kill (residual risk 4)."""
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
