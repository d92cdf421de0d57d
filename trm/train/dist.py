"""Device and process-group setup: the only module that starts torch.distributed or picks the device.

Three launchers reach the same setup:
    python tools/train.py CONFIG.yaml                    # one process
    torchrun --nproc_per_node=4 tools/train.py CONFIG    # RANK/WORLD_SIZE/LOCAL_RANK/MASTER_* from torchrun
    submitit tasks (one per GPU)                          # rank and master from submitit's JobEnvironment
NCCL on CUDA, gloo otherwise. A gloo group always exists beside NCCL for small CPU-side agreements
(stop flags, objects), so those never force a GPU sync.
"""

from __future__ import annotations

import datetime
import os
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist


class DeviceError(RuntimeError):
    """The requested device is not available on this machine."""


@dataclass
class DistEnv:
    rank: int
    world_size: int
    local_rank: int
    device: torch.device
    cpu_group: Any = None  # gloo group for CPU-side collectives (None when world_size == 1)

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def _from_submitit() -> dict[str, str] | None:
    """torchrun-style variables from a submitit task's environment, when running under submitit."""
    if "SUBMITIT_EXECUTOR" not in os.environ or "RANK" in os.environ:
        return None
    import submitit  # only needed on a cluster node

    env = submitit.JobEnvironment()
    job_id = "".join(ch for ch in str(env.job_id) if ch.isdigit()) or "0"
    return {
        "RANK": str(env.global_rank),
        "WORLD_SIZE": str(env.num_tasks),
        "LOCAL_RANK": str(env.local_rank),
        "MASTER_ADDR": env.hostnames[0] if env.hostnames else "127.0.0.1",
        # One port per job so two jobs sharing a node do not collide.
        "MASTER_PORT": os.environ.get("MASTER_PORT", str(20000 + int(job_id[-4:]) % 20000)),
    }


def pick_device(pref: str, local_rank: int) -> torch.device:
    if pref in ("auto", "cuda") and torch.cuda.is_available():
        return torch.device("cuda", local_rank % torch.cuda.device_count())
    if pref == "cuda":
        raise DeviceError(
            "train.device=cuda but torch sees no CUDA device "
            f"(torch {torch.__version__}, CUDA build: {torch.version.cuda is not None}); "
            "use train.device=auto or cpu"
        )
    if pref in ("auto", "mps") and torch.backends.mps.is_available():
        return torch.device("mps")
    if pref == "mps":
        raise DeviceError("train.device=mps but this machine has no usable MPS device; use train.device=auto or cpu")
    return torch.device("cpu")


def init(device_pref: str = "auto") -> DistEnv:
    sub = _from_submitit()
    if sub:
        os.environ.update(sub)
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    device = pick_device(device_pref, local_rank)
    if device.type == "cuda":
        torch.cuda.set_device(device)
    if world == 1:
        return DistEnv(0, 1, 0, device)
    if device.type == "mps":
        raise DeviceError("multi-process training on MPS is not supported; run one process")
    if not dist.is_initialized():
        backend = "nccl" if device.type == "cuda" else "gloo"
        kwargs: dict[str, Any] = {"device_id": device} if device.type == "cuda" else {}
        dist.init_process_group(backend, rank=rank, world_size=world, timeout=datetime.timedelta(minutes=30), **kwargs)
    cpu_group = dist.new_group(backend="gloo") if device.type == "cuda" else dist.group.WORLD
    return DistEnv(rank, world, local_rank, device, cpu_group)


def shutdown() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


def any_true(env: DistEnv, *flags: bool) -> list[bool]:
    """Element-wise OR of the flags over all ranks (one small all-reduce on the CPU group)."""
    if not env.distributed:
        return list(flags)
    t = torch.tensor([int(f) for f in flags], dtype=torch.int32)
    dist.all_reduce(t, op=dist.ReduceOp.MAX, group=env.cpu_group)
    return [bool(x) for x in t.tolist()]


def gather_objects(env: DistEnv, obj: Any) -> list[Any]:
    if not env.distributed:
        return [obj]
    out: list[Any] = [None] * env.world_size
    dist.all_gather_object(out, obj, group=env.cpu_group)
    return out


def broadcast_object(env: DistEnv, obj: Any) -> Any:
    if not env.distributed:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0, group=env.cpu_group)
    return box[0]
