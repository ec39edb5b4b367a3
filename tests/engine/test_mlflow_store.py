"""The local engine's MLflow store on a fresh state folder, opened by several processes at once (as first jobs
started together do). Without the init lock, two of four failed on the schema migration ("Online migration
expected to match one row ... 'alembic_version'; 0 found", or "table experiments already exists")."""

from __future__ import annotations

import multiprocessing
from pathlib import Path

PROCESSES = 4


def open_store(state_dir: str) -> str:
    from mlflow import MlflowClient

    from shared.engine.local.mlflow_store import configure_mlflow

    try:
        configure_mlflow(Path(state_dir))
        MlflowClient().search_registered_models(max_results=1)
        return "ok"
    except Exception as exc:  # the outcome is what the test compares
        return f"{type(exc).__name__}: {exc}"


def test_processes_opening_a_fresh_store_at_once_all_succeed(tmp_path: Path):
    # given a state folder without an MLflow store
    state = tmp_path / "fresh"

    # when four processes open it at the same moment
    with multiprocessing.get_context("spawn").Pool(PROCESSES) as pool:
        outcomes = pool.map(open_store, [str(state)] * PROCESSES)

    # then all of them succeed, and the store says it is initialized
    assert outcomes == ["ok"] * PROCESSES
    assert (state / "mlflow" / ".ready").exists()
    assert (state / "mlflow" / "mlflow.db").stat().st_size > 0
