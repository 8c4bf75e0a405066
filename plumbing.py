"""
The plumbing every script shares and no paper equation needs: settings from the command line, the
one-line error for bad input, atomic and resumable checkpoints, JSONL logs, and the few torchrun
helpers for running data parallel. model.py keeps the model side alone, so it can be read and copied
on its own; this file is what turns the recipes in stage1.py and stage2.py into runs that survive
crashes and spread over GPUs.

    parse_config                      a @dataclass of settings <- defaults, --preset, explicit flags
    save_checkpoint / find_checkpoint atomic save_pretrained folders (+ training_state.pt to resume)
    training_state / load_training_state / restore_training_state   what --resume true saves and restores
    init_distributed, all_gather, average_gradients   torchrun (group left at exit); without it, no-ops
"""

import argparse
import ast
import atexit
import contextlib
import dataclasses
import inspect
import json
import os
import shutil
import sys
import typing

import torch


class UsageError(Exception):
    """Bad input a user can fix (missing checkpoint, unknown model, malformed data line).
    The scripts print it as one line instead of a traceback."""


# ----------------------------------------------------------------------------- settings

def _field_docs(cls):
    """The string literal under each dataclass field, used as its --help text (cleanrl's style)."""
    docs, body = {}, ast.parse(inspect.getsource(cls)).body[0].body
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


def save_checkpoint(model, tokenizer, config, path, training_state=None):
    """Write a save_pretrained folder plus the run's config, atomically: everything goes to a
    temporary folder first and is renamed into place, so a crash mid-save leaves the last good
    checkpoint (at `path`, or at `path.old` if it struck between the two renames).
    training_state (optimizer, RNG states, step, ...) makes the folder resumable (--resume true);
    it is saved in the same folder so weights and state always come from the same step."""
    tmp, old = f"{path}.tmp", f"{path}.old"
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)
    if training_state is not None:
        torch.save(training_state, os.path.join(tmp, "training_state.pt"))
    with open(os.path.join(tmp, "score_config.json"), "w") as f:  # written last: its presence marks a whole folder
        json.dump(config, f, indent=2)
    if os.path.isdir(path):
        shutil.rmtree(old, ignore_errors=True)
        os.rename(path, old)
    os.rename(tmp, path)
    shutil.rmtree(old, ignore_errors=True)


def find_checkpoint(path, hint):
    """The checkpoint folder at `path` (or the `.old` copy a crash mid-save left), else a clear error."""
    for candidate in (path, f"{path}.old"):
        if os.path.isfile(os.path.join(candidate, "score_config.json")):
            return candidate
    raise UsageError(f"no checkpoint at {path!r}; {hint}")


def load_training_state(path):
    """What --resume true continues from: the optimizer, every RNG state, the step (save_checkpoint)."""
    file = os.path.join(path, "training_state.pt")
    if not os.path.isfile(file):
        raise UsageError(f"{path} has weights but no training state to resume from; run without --resume")
    return torch.load(file, map_location="cpu", weights_only=False)  # our own file: RNG states are Python objects


def training_state(step, optimizer, rng, device, **extra):
    """What a resumable checkpoint holds besides the weights: the step, Adam's state and every process's
    RNG states (gathered: under torchrun each rank samples with its own). Call it on every rank."""
    return {"step": step, "optimizer": optimizer.state_dict(), "rng": all_gather(rng_states(rng, device)), **extra}


def restore_training_state(state, optimizer, rng, device, log_paths):
    """--resume true: put back Adam's state and this process's RNG states, and drop the log lines a
    crashed run wrote after its checkpoint (so each step is logged once). Returns the step to go on after."""
    rank, size = world()
    if len(state["rng"]) != size:
        raise UsageError(f"the checkpoint was written by {len(state['rng'])} processes; resume with as many")
    optimizer.load_state_dict(state["optimizer"])
    set_rng_states(rng, state["rng"][rank], device)
    if rank == 0:
        for path in log_paths:
            keep_log_until(path, state["step"])
    return state["step"]


def rng_states(rng, device):
    """Every random state the run draws from: problem order (Python), sampling (torch, and CUDA)."""
    states = {"python": rng.getstate(), "torch": torch.get_rng_state()}
    if torch.device(device).type == "cuda":
        states["cuda"] = torch.cuda.get_rng_state(torch.device(device))
    return states


def set_rng_states(rng, states, device):
    rng.setstate(states["python"])
    torch.set_rng_state(states["torch"])
    if "cuda" in states:
        torch.cuda.set_rng_state(states["cuda"], torch.device(device))


def keep_log_until(path, step):
    """Drop the records a crashed run wrote after its last checkpoint, so a resumed run logs each
    step once. Written to a temporary file and renamed, like the checkpoints."""
    if not os.path.isfile(path):
        return
    with open(path) as f:
        kept = [line for line in f if line.strip() and json.loads(line).get("step", 0) <= step]
    with open(path + ".tmp", "w") as f:
        f.writelines(kept)
    os.replace(path + ".tmp", path)


def read_run_config(checkpoint_path):
    with open(os.path.join(checkpoint_path, "score_config.json")) as f:
        return json.load(f)


def append_jsonl(path, record):
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    with open(path, "a") as f:
        f.write(json.dumps(record) + "\n")


# ----------------------------------------------------------------------------- several GPUs (torchrun)
# Without torchrun none of this does anything: rank 0 of a world of 1, no process group.

def init_distributed(device):
    """Under torchrun (RANK, WORLD_SIZE, LOCAL_RANK set) join the process group, one GPU per process:
    NCCL on CUDA, gloo on the CPU. Returns (rank, world_size, this process's device)."""
    if "RANK" not in os.environ:
        return 0, 1, device
    import torch.distributed as dist
    if torch.device(device).type == "cuda":
        device = f"cuda:{os.environ['LOCAL_RANK']}"
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        dist.init_process_group("nccl" if torch.device(device).type == "cuda" else "gloo")
        # Leave the group at exit, however the script ends (return, UsageError, exception): without it
        # NCCL warns "destroy_process_group() was not called before program exit, which can leak resources".
        atexit.register(dist.destroy_process_group)
    return dist.get_rank(), dist.get_world_size(), device


def world():
    """(rank, world_size): (0, 1) without torchrun."""
    import torch.distributed as dist
    return (dist.get_rank(), dist.get_world_size()) if dist.is_available() and dist.is_initialized() else (0, 1)


def all_gather(obj):
    """Every rank's `obj`, in rank order (a list of one without torchrun). For small things: results,
    rewards, RNG states. Pickled, so it works for any Python object on any backend."""
    rank, size = world()
    if size == 1:
        return [obj]
    import torch.distributed as dist
    gathered = [None] * size
    dist.all_gather_object(gathered, obj)
    return gathered


@contextlib.contextmanager
def main_process_first():
    """Rank 0 runs the block first (a download into the shared cache), then the others do."""
    rank, size = world()
    if rank > 0:
        barrier()
    yield
    if rank == 0 and size > 1:
        barrier()


def barrier():
    if world()[1] > 1:
        import torch.distributed as dist
        dist.barrier()


def average_gradients(model):
    """Data parallel: every rank computed the gradient of its own episodes' share of the loss (each
    normalised by its own episode count, equal on every rank), so the mean over ranks is the gradient
    of the whole batch, the update one process would make on all the episodes. We all-reduce by hand
    rather than wrap the policy in DistributedDataParallel: token_logprobs calls model.base_model, a
    path DDP's hooks do not see, and a plain module saves and loads like any other. The price is no
    overlap of communication with backward, small next to a rollout."""
    rank, size = world()
    if size == 1:
        return
    import torch.distributed as dist
    for p in model.parameters():
        if p.requires_grad:
            if p.grad is None:  # every rank must join every all-reduce, in the same order
                p.grad = torch.zeros_like(p)
            dist.all_reduce(p.grad)
            p.grad /= size
