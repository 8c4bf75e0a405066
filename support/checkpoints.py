"""
Checkpoints that survive a crash, what --resume true restores, and the JSONL logs.

    save_checkpoint / find_checkpoint   atomic save_pretrained folders (+ training_state.pt to resume)
    read_run_config                     a checkpoint's score_config.json: the run's settings
    training_state / load_training_state / restore_training_state   what --resume true saves and restores
    append_jsonl                        one JSON record per line (the training logs, evaluation results)
"""

import json
import os
import shutil

import torch

from support.distributed import all_gather, rank_and_world_size
from support.sharding import is_sharded, load_optimizer_state, optimizer_state
from support.settings import UsageError


def save_checkpoint(model, tokenizer, config, path, training_state=None, weights=None):
    """Write a save_pretrained folder plus the run's config, atomically: everything goes to a
    temporary folder first and is renamed into place, so a crash mid-save leaves the last good
    checkpoint (at `path`, or at `path.old` if it struck between the two renames).
    training_state (optimizer, RNG states, step, ...) makes the folder resumable (--resume true);
    it is saved in the same folder so weights and state always come from the same step. weights: the
    state dict to write instead of the model's own (a sharded model's, gathered whole: support/sharding.py)."""
    tmp, old = f"{path}.tmp", f"{path}.old"
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(tmp, state_dict=None if weights is None else dict(weights))  # a copy: it pops entries
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


def training_state(step, policy, optimizer, rng, device, **extra):
    """What a resumable checkpoint holds besides the weights: the step, Adam's state (gathered whole if the
    policy is sharded) and every process's RNG states (gathered: under torchrun each rank samples with its
    own). Call it on every rank."""
    return {"step": step, "optimizer": optimizer_state(policy, optimizer), "sharded": is_sharded(policy),
            "rng": all_gather(rng_states(rng, device)), **extra}


def restore_training_state(state, policy, optimizer, rng, device, log_paths):
    """--resume true: put back Adam's state and this process's RNG states, and drop the log lines a
    crashed run wrote after its checkpoint (so each step is logged once). Returns the step to go on after."""
    rank, size = rank_and_world_size()
    if len(state["rng"]) != size:
        raise UsageError(f"the checkpoint was written by {len(state['rng'])} processes; resume with as many")
    if state.get("sharded", False) != is_sharded(policy):
        raise UsageError(f"the checkpoint was written with --shard {str(state.get('sharded', False)).lower()}; "
                         f"resume with the same")
    load_optimizer_state(policy, optimizer, state["optimizer"])
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
