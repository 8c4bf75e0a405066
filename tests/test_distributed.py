"""Data parallel under torchrun, on the CPU with the gloo backend and 2 processes: the update equals
one process's update on the same episodes, every rank ends with the same weights, and the scripts
log each step once and evaluate every problem once."""

import dataclasses
import json
import os
import subprocess
import sys

import pytest
import torch
import torch.multiprocessing as mp

from reinforce import reinforce_update
from rollout import run_episodes
from support.distributed import average_gradients
from support.tasks import get_task, load_problems
from support.tiny import build_tiny_model

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
K, PROBLEMS = 2, 8


@dataclasses.dataclass
class Settings:  # the fields of a stage Config that reinforce_update reads
    micro_batch: int = 4
    baseline: str = "rloo"
    grad_clip: float = 1.0
    is_clip: float = 2.0


def select(episodes, rows):
    """The episodes of some rows: every tensor field indexed along its episode dimension."""
    n, rows_t = episodes.input_ids.shape[0], torch.tensor(rows)
    fields = {}
    for f in dataclasses.fields(episodes):
        value = getattr(episodes, f.name)
        if isinstance(value, torch.Tensor) and value.dim() >= 1 and value.shape[0] == n:
            value = value[rows_t]
        elif isinstance(value, torch.Tensor) and value.dim() >= 2 and value.shape[1] == n:
            value = value[:, rows_t]
        elif f.name == "responses":
            value = [[turn[i] for i in rows] for turn in value]
        fields[f.name] = value
    return type(episodes)(**fields)


def one_update(policy, episodes):
    reference, _ = build_tiny_model(seed=0, hidden_size=32)
    reference.requires_grad_(False)
    # Plain SGD: the weights move by exactly the gradient, so comparing weights compares gradients
    # (Adam would blow float-rounding differences of near-zero gradients up to full steps).
    optimizer = torch.optim.SGD(policy.parameters(), lr=1.0)
    rewards = torch.stack([torch.zeros_like(episodes.rewards[1]), episodes.rewards[1]])
    # fp32 (bf16=False): the test is about the sum over ranks; a CPU with native bf16 would otherwise run
    # under bf16 autocast, where the ranks' smaller batches round differently (~3e-4 a weight).
    reinforce_update(policy, reference, optimizer, episodes, rewards, torch.tensor([0.5, 0.01]), Settings(),
                     bf16=False, average_gradients=average_gradients)
    return torch.cat([p.detach().flatten() for p in policy.parameters()])


def rank_main(rank, world_size, init_file, episodes_file, out_file):
    torch.distributed.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world_size)
    episodes = torch.load(episodes_file, weights_only=False)
    # The training loop's shard: problems rank, rank + world_size, ... with all k samples of each.
    rows = [p * K + j for p in range(rank, PROBLEMS, world_size) for j in range(K)]
    policy, _ = build_tiny_model(seed=0, hidden_size=32)
    torch.save(one_update(policy, select(episodes, rows)), out_file.format(rank))
    torch.distributed.destroy_process_group()


def tiny_episodes():
    """The tiny model and K episodes of each of PROBLEMS problems, with a reward signal in every problem."""
    policy, tokenizer = build_tiny_model(seed=0, hidden_size=32)
    torch.manual_seed(0)
    problems = load_problems("arithmetic", "train", limit=PROBLEMS, max_operand=4)
    episodes = run_episodes(policy, tokenizer, get_task("arithmetic"), problems, samples_per_problem=K,
                            temperature=1.0, max_new_tokens=3)
    episodes.rewards[1] = torch.tensor([1.0, 0.0] * PROBLEMS)
    return policy, episodes


def test_two_ranks_make_the_single_process_update(tmp_path):
    policy, episodes = tiny_episodes()
    torch.save(episodes, tmp_path / "episodes.pt")
    single = one_update(policy, episodes)

    out = str(tmp_path / "rank{}.pt")
    mp.spawn(rank_main, args=(2, str(tmp_path / "init"), str(tmp_path / "episodes.pt"), out), nprocs=2)
    rank0, rank1 = torch.load(out.format(0)), torch.load(out.format(1))
    assert torch.equal(rank0, rank1)  # the same gradient on both ranks, so the same Adam step
    before = torch.cat([p.detach().flatten() for p in build_tiny_model(seed=0, hidden_size=32)[0].parameters()])
    assert not torch.allclose(single, before)  # the update did something
    torch.testing.assert_close(rank0, single, atol=1e-6, rtol=1e-5)


def test_init_distributed_leaves_the_process_group_at_exit(tmp_path):
    """A script that joined the group under torchrun leaves it when it exits (here a world of one, in a
    subprocess: the environment torchrun sets). The check is an exit handler registered first, so it runs last."""
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    code = ("import atexit, torch.distributed as dist\n"
            "atexit.register(lambda: print('initialized at exit:', dist.is_initialized()))\n"
            "from support.distributed import init_distributed\n"
            "print(init_distributed('cpu'))\n")
    env = {**os.environ, "RANK": "0", "WORLD_SIZE": "1", "LOCAL_RANK": "0", "MASTER_ADDR": "127.0.0.1",
           "MASTER_PORT": str(port), "PYTHONPATH": ROOT}
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, env=env,
                            cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "(0, 1, 'cpu')" in result.stdout  # it did join a group
    assert "initialized at exit: False" in result.stdout


def torchrun(script, *args):
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", "29533",
               os.path.join(ROOT, script), *args]
    return subprocess.run(command, capture_output=True, text=True, timeout=900,
                          env={**os.environ, "TQDM_DISABLE": "1", "OMP_NUM_THREADS": "1"})


@pytest.mark.slow
def test_torchrun_stages_log_once_and_evaluation_covers_every_problem(tmp_path):
    out = str(tmp_path)
    for script in ("stage1.py", "stage2.py"):
        result = torchrun(script, "--preset", "tiny", "--steps", "2", "--save_every", "1", "--out_dir", out)
        assert result.returncode == 0, result.stderr[-3000:]
        name = script.removesuffix(".py")
        with open(os.path.join(out, "logs", f"{name}.jsonl")) as f:
            assert [json.loads(line)["step"] for line in f] == [1, 2]
        config = json.load(open(os.path.join(out, name, "score_config.json")))
        assert config["world_size"] == 2
    result = torchrun("evaluate.py", "--preset", "tiny", "--out_dir", out, "--limit", "13")
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.count("| stage2 |") == 1  # rank 0 alone prints
    with open(os.path.join(out, "eval", "stage2.jsonl")) as f:
        ids = [json.loads(line)["id"] for line in f]
    assert ids == [p.id for p in load_problems("arithmetic", "test", limit=13, max_operand=4)]
