"""Data-parallel training across processes or pods: who this rank is, and the collectives.

The Kubernetes pattern (an Indexed Job with N completions and parallelism N, a headless
Service for rendezvous) gives every pod `JOB_COMPLETION_INDEX`; the operator sets
`WORLD_SIZE`, `MASTER_ADDR` (rank 0's pod, through the headless Service) and `MASTER_PORT`.
torchrun's `RANK` is read too. One world of one rank is the plain single-process trainer: no
process group, no collective.

Backend: gloo on CPU, NCCL on CUDA. Rank 0 measures the precision and everyone uses its
choice; every step the ranks agree whether any of them was asked to stop, so all checkpoint at
the same step (rank 0 writes it).
"""

from __future__ import annotations

import datetime
import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist

DEFAULT_PORT = 29500
# How long a rank waits for the others (rendezvous, every collective) before failing: a pod
# that never starts, or dies, must not leave the others waiting forever.
DEFAULT_TIMEOUT_S = 600


class WorldError(Exception):
    """The rank, world size or rendezvous address cannot work."""


@dataclass(frozen=True)
class World:
    rank: int = 0
    size: int = 1
    master_addr: str = "127.0.0.1"
    master_port: int = DEFAULT_PORT

    @property
    def is_distributed(self) -> bool:
        return self.size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def world_from(workers: int | None, rank: int | None, env: Mapping[str, str] = os.environ) -> World:
    """The world from flags, else the environment (WORLD_SIZE; RANK or JOB_COMPLETION_INDEX;
    MASTER_ADDR, MASTER_PORT). Raises WorldError for a combination that cannot work."""

    def integer(name: str) -> int | None:
        value = env.get(name, "").strip()
        if not value:
            return None
        try:
            return int(value)
        except ValueError:
            raise WorldError(f"{name}={value!r} is not an integer") from None

    env_size = integer("WORLD_SIZE")
    size = workers if workers is not None else (env_size if env_size is not None else 1)
    if rank is None:
        rank = integer("RANK")
    if rank is None:
        rank = integer("JOB_COMPLETION_INDEX")
    rank = rank or 0
    if size < 1:
        raise WorldError(f"the world size must be at least 1, not {size}")
    if not 0 <= rank < size:
        raise WorldError(f"rank {rank} is outside a world of {size} (ranks 0..{size - 1})")
    port = integer("MASTER_PORT") or DEFAULT_PORT
    if not 0 < port < 65536:
        raise WorldError(f"MASTER_PORT={port} is not a TCP port")
    addr = env.get("MASTER_ADDR", "").strip() or "127.0.0.1"
    return World(rank=rank, size=size, master_addr=addr, master_port=port)


def join(world: World, device: torch.device, timeout_s: float = DEFAULT_TIMEOUT_S) -> None:
    """Join the process group (no-op for one rank): gloo on CPU, NCCL on CUDA."""
    if not world.is_distributed:
        return
    if not dist.is_available():
        raise WorldError(f"this torch ({torch.__version__}) has no torch.distributed")
    backend = "nccl" if device.type == "cuda" else "gloo"
    query = "" if _store_has_libuv() else "?use_libuv=0"
    dist.init_process_group(
        backend=backend,
        init_method=f"tcp://{world.master_addr}:{world.master_port}{query}",
        rank=world.rank,
        world_size=world.size,
        timeout=datetime.timedelta(seconds=timeout_s),
    )


def _store_has_libuv() -> bool:
    """Whether this torch's TCPStore has its libuv backend, the default since torch 2.4.

    Debian's torch 2.6 is built without it and then fails at rendezvous ("use_libuv was
    requested but PyTorch was build without libuv support") unless asked for the other one.
    """
    try:
        dist.TCPStore("127.0.0.1", 0, 1, True, use_libuv=True)
    except (RuntimeError, TypeError):
        return False
    return True


def leave(world: World) -> None:
    if world.is_distributed and dist.is_initialized():
        dist.destroy_process_group()


def any_rank(world: World, flag: bool, device: torch.device) -> bool:
    """True on every rank when `flag` is true on at least one (one all-reduce)."""
    if not world.is_distributed:
        return flag
    tensor = torch.tensor([1 if flag else 0], device=device)
    dist.all_reduce(tensor, op=dist.ReduceOp.MAX)
    return bool(tensor.item())


def sum_over_ranks(world: World, values: torch.Tensor) -> torch.Tensor:
    """Element-wise sum of `values` over the ranks (in place; returned for chaining)."""
    if world.is_distributed:
        dist.all_reduce(values, op=dist.ReduceOp.SUM)
    return values


def from_main(world: World, value: Any) -> Any:
    """Rank 0's `value` on every rank (a picklable object)."""
    if not world.is_distributed:
        return value
    holder = [value]
    dist.broadcast_object_list(holder, src=0)
    return holder[0]


def gather_to_all(world: World, value: Any) -> list[Any]:
    """Every rank's `value`, in rank order, on every rank."""
    if not world.is_distributed:
        return [value]
    values: list[Any] = [None] * world.size
    dist.all_gather_object(values, value)
    return values


def wait_for_all(world: World) -> None:
    if world.is_distributed:
        dist.barrier()
