"""Data-parallel training under torchrun: the process group, who writes, and a shared run stamp.

    torchrun --nproc_per_node=8 -m ganctl train model=cdcgan     # 8 ranks, one run directory

torchrun sets RANK, WORLD_SIZE, LOCAL_RANK and the rendezvous address in each worker's
environment; without them (a plain `ganctl train`) everything here is a no-op for one process.
The backend is NCCL for CUDA tensors and gloo for CPU ones, so CPU runs (and the tests) work.
"""
import gc
import os
from dataclasses import dataclass
from datetime import datetime, timedelta

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel


@dataclass(frozen=True)
class Ranks:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        """Rank 0 alone writes checkpoints, sample grids, TensorBoard events and logs."""
        return self.rank == 0


def launched() -> bool:
    """True in a worker that torchrun started with more than one process."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def init() -> Ranks:
    """Join the process group torchrun describes (once per process) and return this worker's ranks."""
    if not launched():
        return Ranks()
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if not dist.is_initialized():
        if torch.cuda.is_available():
            torch.cuda.set_device(local_rank)  # NCCL binds each rank to its own GPU
            backend = "cpu:gloo,cuda:nccl"
        else:
            backend = "gloo"
        # Rank 0 may spend minutes fitting the eval classifier while the others wait.
        dist.init_process_group(backend, timeout=timedelta(minutes=60))
    return Ranks(dist.get_rank(), dist.get_world_size(), local_rank)


_run_time: datetime | None = None


def run_time() -> datetime:
    """The time stamp of the run directory: rank 0's clock on every rank, so all ranks resolve
    the same `hydra.run.dir`; now() for one process (as Hydra's own ${now:} resolver)."""
    global _run_time
    if not launched():
        return datetime.now()
    if _run_time is None:
        init()
        stamp = [datetime.now()]
        dist.broadcast_object_list(stamp, src=0)
        _run_time = stamp[0]
    return _run_time


def mean_over_ranks(values: torch.Tensor) -> torch.Tensor:
    """The mean of `values` over all ranks (unchanged for one process)."""
    if dist.is_initialized() and dist.get_world_size() > 1:
        values = values.clone()
        dist.all_reduce(values)
        values /= dist.get_world_size()
    return values


def any_rank(flag: bool, device) -> bool:
    """True on every rank if `flag` is true on any: decisions that end the loop must be shared,
    or the ranks that go on would wait forever for the ones that stopped."""
    if not (dist.is_initialized() and dist.get_world_size() > 1):
        return flag
    t = torch.tensor([float(flag)], device=device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return bool(t.item())


def replicas_differ(module: torch.nn.Module) -> int:
    """How many parameter elements differ between ranks (0 when every replica is identical):
    the all-reduced gradients must keep them equal. Buffers are left out: BatchNorm's running
    statistics follow each rank's own batches between DDP's broadcasts from rank 0."""
    if not (dist.is_initialized() and dist.get_world_size() > 1):
        return 0
    flat = torch.cat([p.detach().reshape(-1).float() for p in module.parameters()])
    hi, lo = flat.clone(), flat.clone()
    dist.all_reduce(hi, op=dist.ReduceOp.MAX)
    dist.all_reduce(lo, op=dist.ReduceOp.MIN)
    return int((hi != lo).sum().item())


def shutdown(together: bool = True) -> None:
    """Leave the process group. After a run that ended well (together=True) every rank waits
    for the last one (rank 0 still draws curves and progress.gif when the others finish the
    loop), frees what still holds the group (DDP's reducers) while the interpreter is fully
    alive, and only then destroys it: a rank that tore its group down and exited early was once
    seen to abort in CI ("terminate called without an active exception"). After an error a
    rank leaves at once; waiting for ranks that may never come would hang it."""
    if not dist.is_initialized():
        return
    if together:
        dist.barrier()
        gc.collect()
    dist.destroy_process_group()
def wrap_ddp(module: torch.nn.Module, device, sync_bn: bool) -> torch.nn.Module:
    """DistributedDataParallel around `module` (which stays the one that is saved)."""
    if sync_bn:
        module = torch.nn.SyncBatchNorm.convert_sync_batchnorm(module)
    return DistributedDataParallel(module, device_ids=[device.index] if device.type == "cuda" else None)
