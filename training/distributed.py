"""DistributedDataParallel helpers: one process per rank under torchrun (gloo on CPU, nccl on GPU).

Without torchrun (WORLD_SIZE unset or 1) every helper is a no-op and training is single-process.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DistributedSampler


def setup() -> tuple[int, int]:
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return 0, 1
    if not dist.is_initialized():
        dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
    return dist.get_rank(), dist.get_world_size()


def wrap(model: torch.nn.Module, world: int) -> torch.nn.Module:
    """DDP averages gradients across ranks in backward(); identical init comes from the seed
    and DDP's broadcast of rank 0's parameters."""
    return DistributedDataParallel(model) if world > 1 else model


def sampler(n: int, rank: int, world: int, seed: int) -> DistributedSampler:
    """Each rank gets a disjoint shard of a seeded permutation (drop_last: equal shard sizes)."""
    return DistributedSampler(range(n), num_replicas=world, rank=rank, shuffle=True, seed=seed,
                              drop_last=world > 1)


def param_digest(model: torch.nn.Module) -> str:
    h = hashlib.sha256()
    for _, p in sorted(model.state_dict().items()):
        h.update(p.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


def write_shard_log(folder: str, rank: int, seen: list[int], model: torch.nn.Module) -> None:
    """Evidence of data parallelism: which items this rank trained on, and its final weights."""
    Path(folder).mkdir(parents=True, exist_ok=True)
    Path(folder, f"rank{rank}.json").write_text(json.dumps(
        {"rank": rank, "seen": seen, "params_sha256": param_digest(model)}))


def teardown(world: int) -> None:
    if world > 1 and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()
