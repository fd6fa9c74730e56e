"""Data-parallel training under torchrun: who this process is, its share of each batch, reductions.

torchrun sets RANK, WORLD_SIZE and LOCAL_RANK (and the rendezvous address) for every process; with
none of them set this is a single process and every function here is a no-op.
"""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass

import torch
import torch.distributed as dist

from pipeline.errors import PipelineError


@dataclass(frozen=True)
class Ranks:
    """This process's place in the job."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        return self.world > 1

    @property
    def main(self) -> bool:
        """Only the main process writes artifacts and logs."""
        return self.rank == 0


def from_env() -> Ranks:
    """The ranks torchrun gave this process (a single process when WORLD_SIZE is unset or 1)."""
    try:
        world = int(os.environ.get("WORLD_SIZE", "1"))
        rank = int(os.environ.get("RANK", "0"))
        local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    except ValueError as exc:
        raise PipelineError(f"torchrun environment: RANK/WORLD_SIZE/LOCAL_RANK must be integers ({exc})") from None
    return Ranks(rank, world, local_rank)


def start(ranks: Ranks, device: torch.device) -> torch.device:
    """Join the process group (gloo on CPU, NCCL on CUDA); returns this process's device."""
    if not ranks.enabled:
        return device
    if device.type == "cuda":
        device = torch.device("cuda", ranks.local_rank)
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
    return device


def stop(ranks: Ranks) -> None:
    if ranks.enabled and dist.is_initialized():
        dist.destroy_process_group()


def shard(start_row: int, stop_row: int, ranks: Ranks) -> tuple[int, int]:
    """This rank's contiguous share of the global batch [start_row, stop_row) (sizes differ by at most one)."""
    n = stop_row - start_row
    base, extra = divmod(n, ranks.world)
    first = start_row + ranks.rank * base + min(ranks.rank, extra)
    return first, first + base + (1 if ranks.rank < extra else 0)


def sum_across(t: torch.Tensor, ranks: Ranks) -> torch.Tensor:
    """Element-wise sum over all ranks (the same tensor on every rank afterwards)."""
    if ranks.enabled:
        t = t.clone()
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t


def average_buffers(module: torch.nn.Module, ranks: Ranks) -> None:
    """Make every process's floating-point buffers (BatchNorm running statistics) their mean over processes.

    DDP hands rank 0's buffers to all processes at the start of each forward, so after a step each process
    holds rank 0's statistics updated with its own share of the batch; evaluating, checkpointing or exporting
    then would depend on the process. The mean is the update with every share's statistics."""
    if not ranks.enabled:
        return
    with torch.no_grad():
        for buffer in module.buffers():
            if buffer.is_floating_point():
                total = buffer.clone()
                dist.all_reduce(total, op=dist.ReduceOp.SUM)
                buffer.copy_(total / ranks.world)


def barrier(ranks: Ranks) -> None:
    if ranks.enabled:
        dist.barrier()


def check_in_step(module: torch.nn.Module, ranks: Ranks) -> None:
    """Every process ends with the very same weights and buffers; any drift is a bug, reported as one."""
    if not ranks.enabled:
        return
    flat = torch.cat([t.detach().double().reshape(-1) for t in module.state_dict().values() if t.is_floating_point()])
    low, high = flat.clone(), flat.clone()
    dist.all_reduce(low, op=dist.ReduceOp.MIN)
    dist.all_reduce(high, op=dist.ReduceOp.MAX)
    if not torch.equal(low, high):
        raise RuntimeError(f"data-parallel processes disagree on the weights (max spread "
                           f"{float((high - low).max()):.3g}); please report this")


def same_on_all(value, ranks: Ranks):
    """Rank 0's value of a picklable object, on every rank (after `start`)."""
    if not ranks.enabled:
        return value
    box = [value]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def launch(nproc: int, argv: list[str]) -> int:
    """Run `pipeline <argv>` under torchrun with `nproc` processes on this machine; its exit status."""
    if nproc < 1:
        raise PipelineError(f"--nproc must be at least 1; got {nproc}")
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}",
               "-m", "pipeline.cli", *argv]
    return subprocess.run(command).returncode
