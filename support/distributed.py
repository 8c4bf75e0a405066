"""
Data parallel under torchrun: the few helpers the scripts call. Without torchrun none of them does
anything: this process is rank 0 of 1, there is no process group, and every call returns at once.

    init_distributed(device)        join the process group (NCCL on CUDA, gloo on the CPU); left at exit
    rank_and_world_size()           (rank, world_size): (0, 1) without torchrun
    all_gather(obj)                 every rank's obj, in rank order (small things: results, RNG states)
    average_gradients(model)        the mean gradient over ranks, after backward (reinforce_update's hook)
    barrier(), main_process_first() rank 0 first (a download into the shared cache), then the others
"""

import atexit
import contextlib
import os

import torch


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


def rank_and_world_size():
    """(rank, world_size): (0, 1) without torchrun."""
    import torch.distributed as dist
    return (dist.get_rank(), dist.get_world_size()) if dist.is_available() and dist.is_initialized() else (0, 1)


def all_gather(obj):
    """Every rank's `obj`, in rank order (a list of one without torchrun). For small things: results,
    rewards, RNG states. Pickled, so it works for any Python object on any backend."""
    rank, size = rank_and_world_size()
    if size == 1:
        return [obj]
    import torch.distributed as dist
    gathered = [None] * size
    dist.all_gather_object(gathered, obj)
    return gathered


@contextlib.contextmanager
def main_process_first():
    """Rank 0 runs the block first (a download into the shared cache), then the others do."""
    rank, size = rank_and_world_size()
    if rank > 0:
        barrier()
    yield
    if rank == 0 and size > 1:
        barrier()


def barrier():
    """Every rank waits here for the others (nothing without torchrun). The scripts also meet here before
    they exit: a rank that tears gloo down while rank 0 still writes its checkpoint aborted at teardown
    ("terminate called without an active exception", SIGABRT) in 1 of 3 runs of the torchrun test."""
    if rank_and_world_size()[1] > 1:
        import torch.distributed as dist
        dist.barrier()


def average_gradients(model):
    """Data parallel: every rank computed the gradient of its own episodes' share of the loss (each
    normalised by its own episode count, equal on every rank), so the mean over ranks is the gradient
    of the whole batch, the update one process would make on all the episodes. We all-reduce by hand
    rather than wrap the policy in DistributedDataParallel: token_logprobs calls model.base_model, a
    path DDP's hooks do not see, and a plain module saves and loads like any other. The price is no
    overlap of communication with backward, small next to a rollout. The stages pass this function to
    reinforce_update (reinforce.py) as its average_gradients hook: the one call a sharded (FSDP) policy
    would replace."""
    rank, size = rank_and_world_size()
    if size == 1:
        return
    import torch.distributed as dist
    for p in model.parameters():
        if p.requires_grad:
            if p.grad is None:  # every rank must join every all-reduce, in the same order
                p.grad = torch.zeros_like(p)
            dist.all_reduce(p.grad)
            p.grad /= size
