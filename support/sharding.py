"""
--shard true: the policy and the reference sharded over the processes of a torchrun job with PyTorch's
FSDP2 (torch.distributed.fsdp.fully_shard), for a policy whose fp32 weights, gradients and Adam state
(16 bytes a parameter) do not fit on one card. Off by default; without torchrun it does nothing.

    shard_model(model, device)               one FSDP unit per decoder layer, plus the root
    gathered_weights(model)                  the whole fp32 weights, gathered on rank 0 (checkpoints)
    optimizer_state / load_optimizer_state   Adam's state, whole on rank 0, sharded again on resume

What stays as it was, and why:
- The update (reinforce.reinforce_update) is the same code. FSDP2 all-gathers a unit's weights before
  its forward and reduce-scatters its gradients after its backward, averaging over the processes: the
  mean gradient of the whole batch, as the data-parallel all-reduce makes it (which the stages then
  do not pass in). The optimizer and clip_grad_norm_ act on the shards (DTensors).
- The reference is sharded the same way, so it computes exactly the policy's numbers: the KL is 0
  before the first update, as without sharding.
- The sampler decodes from whole weights on every rank: support/sampler.py keeps a private copy (bf16 on
  a GPU) and gathers the shards into it at each refresh. That copy costs 2 bytes a parameter per GPU
  (14 GB at 7B), but decoding stays the plain single-GPU loop, with no collective per generated token,
  which sharded decoding would need (and every rank would have to decode in lockstep).
- Checkpoints stay ordinary save_pretrained folders: rank 0 gathers the whole state dict (on the CPU)
  and writes it, so stage2.py, evaluate.py and any transformers user load them as before. Adam's
  state is gathered on rank 0 too (8 bytes a parameter of CPU memory while saving) and scattered
  back to the shards by --resume true.
"""

import types

import torch


def is_sharded(model):
    return hasattr(model, "sharded_base_model")


def shard_model(model, device):
    """Shard `model` in place over every process of the job: each decoder layer is one FSDP unit (its
    weights whole only during its own forward and backward), and the root unit holds the rest (the
    embeddings, the final norm, the head). The model may sit on the CPU: its shards move to `device`."""
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import fully_shard, register_fsdp_forward_method
    mesh = init_device_mesh(torch.device(device).type, (torch.distributed.get_world_size(),))
    for layer in model.base_model.layers:  # decoder-only transformers models keep their blocks here
        fully_shard(layer, mesh=mesh)
    fully_shard(model, mesh=mesh)
    # FSDP2 gathers the root's weights in the hooks of model.forward, but token_logprobs (model.py) runs
    # model.base_model and then the head itself (to skip the full logits). So it calls this method,
    # which runs the base model inside the root's hooks; the root keeps its weights whole after that
    # forward, for the head, until its backward is done.
    model.sharded_base_model = types.MethodType(lambda self, **kwargs: self.base_model(**kwargs), model)
    register_fsdp_forward_method(model, "sharded_base_model")
    return model


def gathered_weights(model):
    """A sharded model's whole weights on rank 0's CPU ({} on the other ranks; every rank must call it),
    for save_checkpoint. None for a model that is not sharded: save_checkpoint writes its own weights."""
    if not is_sharded(model):
        return None
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict
    return get_model_state_dict(model, options=StateDictOptions(full_state_dict=True, cpu_offload=True))


def optimizer_state(model, optimizer):
    """What a checkpoint keeps of the optimizer: its own state_dict, or for a sharded model the whole
    state gathered on rank 0 ({} elsewhere; every rank must call it)."""
    if not is_sharded(model):
        return optimizer.state_dict()
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_optimizer_state_dict
    return get_optimizer_state_dict(model, optimizer, options=StateDictOptions(full_state_dict=True,
                                                                               cpu_offload=True))


def load_optimizer_state(model, optimizer, state):
    """The inverse of optimizer_state: rank 0's whole state is scattered back to every rank's shards."""
    if not is_sharded(model):
        optimizer.load_state_dict(state)
        return
    from torch.distributed.checkpoint.state_dict import StateDictOptions, set_optimizer_state_dict
    set_optimizer_state_dict(model, optimizer, optim_state_dict=state,
                             options=StateDictOptions(full_state_dict=True, broadcast_from_rank0=True))
