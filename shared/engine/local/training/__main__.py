"""`python -m shared.engine.local.training JOB_DIR`: the worker process (see the package's docstring).

Exit codes: 0 completed (or already finished), 1 failed, 2 bad usage or no job.json, 143 canceled.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import warnings
from pathlib import Path

from shared.engine.local.jobfiles import JobFiles
from shared.engine.local.training.errors import JobCanceled
from shared.engine.local.training.launch import WORKER_MODULE
from shared.engine.local.training.worker import TrainingWorker


def prepare_environment() -> None:
    """Before torch is imported. OpenMP threads that sleep instead of spinning while they wait: on a machine
    shared with other work, spinning threads fight for the cores and steps get 5-15x slower (measured here:
    tiny model on 2 busy cores, 358 vs 1,299 tokens/s)."""
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
    os.environ.setdefault("HF_DATASETS_DISABLE_PROGRESS_BARS", "1")
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "warning")
    for name in ("httpx", "urllib3", "alembic", "mlflow", "matplotlib"):
        logging.getLogger(name).setLevel(logging.WARNING)
    warnings.filterwarnings("ignore", category=FutureWarning)  # deprecation notices from transformers/peft


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 1:
        print(f"usage: python -m {WORKER_MODULE} JOB_DIR", file=sys.stderr)
        return 2
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    prepare_environment()
    files = JobFiles(Path(argv[0]).resolve())
    if not files.exists():
        print(f"no job.json in {files.root}", file=sys.stderr)
        return 2
    return TrainingWorker(files).run()


def _exit(code: int) -> None:
    """Exit now: the outcome is on disk, and the interpreter's teardown of torch & co takes seconds."""
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


if __name__ == "__main__":
    exit_code = 1
    with contextlib.suppress(JobCanceled):  # a signal after the worker's own handling: the outcome is recorded
        exit_code = main()
    _exit(exit_code)
