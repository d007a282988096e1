"""Where a result was measured: the machine, the code's checkout and the command, recorded at the head
of every benchmark result and bundled model's facts, so a figure can be traced and compared fairly."""

from __future__ import annotations

import os
import platform
import sys
from typing import Any


def machine_info() -> dict[str, Any]:
    """The machine a result was measured on: CPU, cores, GPU, Python, torch and timm versions."""
    import torch

    cpu = platform.processor() or ""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    info: dict[str, Any] = {
        "hostname": platform.node(), "platform": platform.platform(), "python": sys.version.split()[0],
        "cpu": cpu, "cpu_count": os.cpu_count(), "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(), "cuda": torch.cuda.is_available(),
    }
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
        info["gpu_count"] = torch.cuda.device_count()
    try:
        import timm

        info["timm"] = timm.__version__
    except ImportError:
        pass
    return info


def code_version(root: str | os.PathLike | None = None) -> dict[str, Any] | None:
    """The checkout a benchmark ran from (``root``, default the working folder): its commit, and whether tracked files
    differed from it (None outside a git checkout). Rates measured on different commits may differ because the code
    or the bundled models did."""
    import subprocess
    from pathlib import Path

    root = Path(root) if root is not None else Path.cwd()
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, timeout=10)
        status = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=root,
                                capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.SubprocessError):
        return None
    if commit.returncode != 0 or status.returncode != 0:
        return None
    return {"commit": commit.stdout.strip(), "modified": bool(status.stdout.strip())}


def header(name: str, argv: list[str] | None, root: str | os.PathLike | None = None) -> dict[str, Any]:
    """The fields every result file starts with: benchmark, command, date, machine, checkout (the git commit
    of ``root``, default the working folder).

    Args:
        name: the benchmark's name.
        argv: its arguments (None: this process's).
        root: the checkout (default: the working folder).
    """
    import shlex
    import time
    from pathlib import Path

    # Quoted as a shell would need it, so the recorded command can be pasted back.
    cmd = shlex.join(["python", Path(sys.argv[0]).as_posix(), *(argv if argv is not None else sys.argv[1:])])
    return {"benchmark": name, "command": cmd, "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "machine": machine_info(), "checkout": code_version(root)}


__all__ = ["code_version", "header", "machine_info"]
