"""
Settings: every script's @dataclass Config is filled from the command line here, and what the stages
share is defined here once.

    UsageError                     bad input a user can fix; the scripts print it as one line
    parse_config(cls, presets)     a Config <- its defaults, then --preset NAME's overrides, then flags
    require_device(device, script) no CUDA: say so in one line and point at the CPU preset
    TrainingConfig                 the settings of both stages (stage1.Config and stage2.Config extend it)
    TABLE5, TABLE5_SHARED          the paper's hyperparameters (Table 5), per domain and for both domains
    PRESETS, presets(script)       tiny, smol, smol_cpu: each preset's settings, for every script at once
    check_config(cfg)              a stage's settings checked, and Table 5's per-task defaults filled in
"""

import argparse
import ast
import dataclasses
import inspect
import os
import sys
import typing
from dataclasses import dataclass

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


# ----------------------------------------------------------------------------- Table 5

# The paper's per-domain values (Table 5); the arithmetic task borrows MATH's column.
TABLE5 = {"math": dict(lr=5e-6, beta2=0.1), "code": dict(lr=1e-5, beta2=0.25), "arithmetic": dict(lr=5e-6, beta2=0.1)}
# The values Table 5 gives both domains: the shaping bonus alpha, the default KL beta1, the sampling temperature.
TABLE5_SHARED = dict(alpha=10.0, beta1=0.01, temperature=1.0)


# ----------------------------------------------------------------------------- both stages

@dataclass
class TrainingConfig:
    """The settings stage1.py and stage2.py share. Each stage's Config adds its own (Stage I: the model,
    the task and beta2; Stage II: alpha, the starting policy, the ablations)."""
    out_dir: str = "out"
    """checkpoints and logs go here"""
    steps: int = 200
    """policy updates (the paper: 3000 in all, split between the stages unstated)"""
    problems_per_step: int = 16
    """problems per update (paper batch 512 episodes; one GPU: 16 x k = 64)"""
    samples_per_problem: int = 4
    """k, episodes per problem: the RLOO baseline of each is the mean reward of the other k - 1"""
    micro_batch: int = 16
    """episodes per forward/backward; rounded to whole problems (memory knob, not a hyperparameter)"""
    lr: float | None = None
    """Adam learning rate; unset: Table 5's for the task (MATH 5e-6, MBPP 1e-5)"""
    beta1: float = TABLE5_SHARED["beta1"]
    """beta1, the default KL coefficient (Table 5): on attempt 2 in Stage I, on both attempts in Stage II"""
    temperature: float = TABLE5_SHARED["temperature"]
    """sampling temperature during training (Table 5)"""
    max_new_tokens: int = 512
    """per attempt; a cut-off attempt usually scores 0, so watch the truncation rate in the log"""
    baseline: str = "rloo"
    """rloo (leave-one-out over the k samples) or none (plain REINFORCE)"""
    grad_clip: float = 1.0
    """max gradient norm"""
    is_clip: float = 2.0
    """C of the token-level truncated importance weight min(pi / pi_sampler, C) (Yao et al. 2025); 0: off"""
    gradient_checkpointing: bool = True
    """recompute activations in backward: less memory, ~30 % more compute"""
    bf16: str = "auto"
    """bf16 autocast for the policy and reference over fp32 weights: auto (GPU; CPU with AMX/AVX512-BF16), true, false"""
    device: str = "cuda"
    """cuda, cuda:N or cpu (under torchrun each process takes cuda:LOCAL_RANK)"""
    seed: int = 0
    """seeds problem order, sampling and the tiny model"""
    sample_every: int = 20
    """write a few decoded episodes to the samples log every this many steps"""
    save_every: int = 50
    """checkpoint every this many steps (and at the end)"""
    compile_decode: bool = False
    """CUDA only, not yet measured: compile the decode step and replay it as a CUDA graph (support/sampler.py)"""
    shard: bool = False
    """under torchrun, shard the policy and the reference over the processes (FSDP2, support/sharding.py): for a
    policy whose weights, gradients and Adam state do not fit on one GPU; alone, nothing to shard"""
    resume: bool = False
    """continue from the last checkpoint: weights, Adam state, RNG states, step; logs keep each step once"""


def check_config(cfg):
    """Validate a stage's settings and fill the values derived from them (Table 5's per-task defaults)."""
    if cfg.task not in TABLE5:
        raise UsageError(f"unknown task {cfg.task!r}; choose {', '.join(TABLE5)}")
    if cfg.lr is None:  # None, not 0, is "unset": lr 0 and beta2 0 are settings a user can ask for
        cfg.lr = TABLE5[cfg.task]["lr"]
    if hasattr(cfg, "beta2") and cfg.beta2 is None:
        cfg.beta2 = TABLE5[cfg.task]["beta2"]
    if cfg.baseline not in ("rloo", "none"):
        raise UsageError(f"--baseline must be rloo or none, not {cfg.baseline!r}")
    if cfg.baseline == "rloo" and cfg.samples_per_problem < 2:
        raise UsageError("the RLOO baseline needs --samples_per_problem >= 2 (or pass --baseline none)")
    require_device(cfg.device, os.path.basename(sys.argv[0]) or "stage1.py")


# ----------------------------------------------------------------------------- the presets

# --preset smol's problems: two-digit addition and one-digit multiplication, half and half (support/tasks.py).
# SmolLM2-135M-Instruct (GGUF, greedy) is right on 45.2 % of 500 test problems at attempt 1 and 42.4 %
# at attempt 2, fixing none and breaking 2.8 % (README, "A real model in minutes").
SMOL_MIX = "+:99:99,*:9:9"
SMOL = "HuggingFaceTB/SmolLM2-135M-Instruct"

# Each preset once, for every script that has it: "all" goes to every script, "stages" to stage1.py and
# stage2.py, and each script's own entry last. Why each value: stage1.py's docstring (5., 6., 8.).
PRESETS = {
    # The CPU tutorial: a tiny model built in-process, 25 memorisable sums, under a minute a command.
    "tiny": {
        "all": dict(out_dir="out/tiny", max_new_tokens=4, device="cpu"),
        # bf16 false: a 2-layer model gains nothing from bf16, and in fp32 the tutorial's numbers are the
        # same on every CPU, with native bf16 or without.
        "stages": dict(problems_per_step=16, samples_per_problem=4, micro_batch=64, lr=1e-3,
                       gradient_checkpointing=False, sample_every=20, bf16="false"),
        "stage1": dict(model="tiny", task="arithmetic", max_operand=4, steps=60, beta2=1.0, save_every=60),
        "stage2": dict(steps=70, save_every=20),
        "evaluate": dict(task="arithmetic", max_operand=4, limit=100, batch_size=256),
        "baselines": dict(problems=64, samples_per_problem=4, epochs=3, batch_size=16, lr=1e-3),
    },
    # A real instruct model in minutes on one GPU: SmolLM2-135M on a mix of two-digit addition and
    # one-digit multiplication, where it is right about half the time.
    "smol": {
        "all": dict(out_dir="out/smol", max_new_tokens=16),
        "stages": dict(steps=200, problems_per_step=32, samples_per_problem=4, micro_batch=128, lr=1e-5,
                       gradient_checkpointing=False, sample_every=20, save_every=25),
        "stage1": dict(model=SMOL, task="arithmetic", mix=SMOL_MIX, beta2=0.1),
        "stage2": dict(),
        "evaluate": dict(task="arithmetic", mix=SMOL_MIX, limit=500, batch_size=256),
    },
    # The same model and task on 2 CPU cores: a quarter of the batch, temperature 0.7, beta2 = 1.0,
    # checkpoints every 5 steps so that --resume true loses little.
    "smol_cpu": {
        "all": dict(out_dir="out/smol_cpu", max_new_tokens=16, device="cpu"),
        "stages": dict(steps=60, problems_per_step=8, samples_per_problem=4, micro_batch=8, lr=1e-5, temperature=0.7,
                       gradient_checkpointing=False, sample_every=5, save_every=5),
        "stage1": dict(model=SMOL, task="arithmetic", mix=SMOL_MIX, beta2=1.0),
        "stage2": dict(),
        "evaluate": dict(task="arithmetic", mix=SMOL_MIX, limit=500, batch_size=128),
    },
}


def presets(script):
    """{preset name: settings} for one script ('stage1', 'stage2', 'evaluate', 'baselines'), from PRESETS."""
    stage = script in ("stage1", "stage2")
    return {name: {**p["all"], **(p["stages"] if stage else {}), **p[script]}
            for name, p in PRESETS.items() if script in p}
