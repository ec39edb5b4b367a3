"""How the engine starts a training worker: one process, or one per GPU through `accelerate launch`.

Imported by the engine at start-up: nothing heavy here (torch only where there is an NVIDIA device).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

# The module the worker runs as (`python -m`) and the marker that identifies its processes (processes.is_alive):
# workers started by an earlier engine process carry the same value on their command line.
WORKER_MODULE = "shared.engine.local.training"


def launch_command(job_dir: Path, python: str = sys.executable) -> list[str]:
    """The command line that runs the worker for `job_dir`: one process, or one per GPU through accelerate."""
    worker = ["-m", WORKER_MODULE, str(job_dir)]
    gpus = cuda_device_count()
    if gpus > 1:
        return [python, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", str(gpus), *worker]
    return [python, *worker]


def cuda_device_count() -> int:
    """CUDA devices here, without importing torch where there is plainly no NVIDIA device (the usual laptop/CI)."""
    if not any(Path("/dev").glob("nvidia[0-9]*")) and not os.environ.get("CUDA_VISIBLE_DEVICES"):
        return 0
    try:
        import torch

        return torch.cuda.device_count() if torch.cuda.is_available() else 0
    except Exception:  # no usable torch: one CPU process
        return 0
