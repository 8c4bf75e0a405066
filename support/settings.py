"""
Settings: every script's @dataclass Config is filled from the command line here.

    UsageError                     bad input a user can fix; the scripts print it as one line
    parse_config(cls, presets)     a Config <- its defaults, then --preset NAME's overrides, then flags
    require_device(device, script) no CUDA: say so in one line and point at the CPU preset
"""

import argparse
import ast
import dataclasses
import inspect
import sys
import typing

import torch


class UsageError(Exception):
    """Bad input a user can fix (missing checkpoint, unknown model, malformed data line).
    The scripts print it as one line instead of a traceback."""


# ----------------------------------------------------------------------------- from the command line

def _field_docs(cls):
    """The string literal under each dataclass field, used as its --help text (cleanrl's style). A
    subclass's literal wins over its base's, so a stage can say what a shared field means to it."""
    docs = {}
    for klass in reversed([k for k in cls.__mro__ if dataclasses.is_dataclass(k)]):
        body = ast.parse(inspect.getsource(klass)).body[0].body
        for node, following in zip(body, body[1:]):
            if isinstance(node, ast.AnnAssign) and isinstance(following, ast.Expr) \
                    and isinstance(following.value, ast.Constant):
                docs[node.target.id] = following.value.value
    return docs


def parse_config(cls, presets, argv=None):
    """Fill a settings dataclass from the command line: defaults, then --preset NAME's overrides,
    then explicit flags. Every field becomes --field (booleans take true/false)."""
    docs, parser = _field_docs(cls), argparse.ArgumentParser(description=(sys.modules[cls.__module__].__doc__ or "").split("\n\n")[0])
    parser.add_argument("--preset", choices=sorted(presets), help="a named set of overrides, e.g. tiny for the CPU tutorial")
    not_given = object()
    for f in dataclasses.fields(cls):
        kind = next((t for t in typing.get_args(f.type) if t is not type(None)), f.type)
        kind = {bool: lambda s: s.lower() in ("1", "true", "yes")}.get(kind, kind)
        if type(None) in typing.get_args(f.type):
            # `float | None = None` is an explicit "unset" (lr: Table 5's value for the task), so 0 stays
            # a value a user can set; `--lr none` asks for the unset value over a preset's.
            kind = (lambda parse: lambda s: None if s.lower() == "none" else parse(s))(kind)
        help_text = f"{docs.get(f.name, '')} (default: {f.default})".replace("%", "%%")  # argparse %-formats help
        parser.add_argument(f"--{f.name}", type=kind, default=not_given, help=help_text)
    args = vars(parser.parse_args(argv))
    values = dict(presets.get(args.pop("preset") or "", {}))
    values.update({k: v for k, v in args.items() if v is not not_given})
    return cls(**values)


def require_device(device, script):
    """The default run is a GPU run; without one, say so in a line instead of crawling on a CPU."""
    if torch.device(device).type == "cuda" and not torch.cuda.is_available():
        raise UsageError(f"no CUDA device found; try the CPU tutorial `python {script} --preset tiny`, "
                         f"or pass --device cpu to run this configuration on the CPU anyway")
