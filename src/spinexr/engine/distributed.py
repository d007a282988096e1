"""Where training runs: the device, and the process group when launched by torchrun (DDP)."""

from __future__ import annotations

import os

import torch

from spinexr.errors import SpinexrError


def resolve_device(name: str) -> torch.device:
    if dist_active() and torch.cuda.is_available() and name in ("auto", "cuda"):
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise SpinexrError("--device cuda was asked for, but no CUDA device is available; use --device cpu")
    if name not in ("cpu",) and not name.startswith("cuda"):
        raise SpinexrError(f"unknown device {name!r}; use auto, cpu or cuda")
    return torch.device(name)


def dist_active() -> bool:
    return torch.distributed.is_available() and torch.distributed.is_initialized()


def rank() -> int:
    return torch.distributed.get_rank() if dist_active() else 0


def world_size() -> int:
    return torch.distributed.get_world_size() if dist_active() else 1


def is_main() -> bool:
    return rank() == 0


def init_distributed() -> bool:
    """Join the process group when launched by torchrun (nccl on GPU, gloo on CPU)."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1 or dist_active():
        return dist_active()
    backend = "nccl" if torch.cuda.is_available() else "gloo"
    if backend == "nccl":
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", 0)))
    torch.distributed.init_process_group(backend=backend)
    return True


def barrier() -> None:
    if dist_active():
        torch.distributed.barrier()


def shutdown_distributed() -> None:
    if dist_active():
        torch.distributed.destroy_process_group()
