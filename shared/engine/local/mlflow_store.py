"""MLflow for the local engine: tracking and model registry on sqlite under the engine's state folder.

    <state>/mlflow/mlflow.db        runs, params, metrics, logged models, registered models
    <state>/mlflow/artifacts/       every artifact (never ./mlruns)
    <state>/mlflow/.init.lock       held while the first process to open the store creates its tables
    <state>/mlflow/.ready           the tables exist: later processes skip the lock

The training worker logs one run per job; the registry (registry.py) registers the models those runs logged.
mlflow is imported inside the functions: importing it costs about a second.
"""

from __future__ import annotations

import fcntl
import logging
from pathlib import Path

logger = logging.getLogger(__name__)

DEFAULT_EXPERIMENT = "ft-autopilot"

_artifact_root: Path | None = None


def tracking_uri(state_dir: Path) -> str:
    return f"sqlite:///{(Path(state_dir) / 'mlflow' / 'mlflow.db').resolve()}"


def configure_mlflow(state_dir: Path, experiment_name: str = DEFAULT_EXPERIMENT) -> None:
    """Point MLflow's tracking and registry at <state_dir>/mlflow and make `experiment_name` the active experiment."""
    import mlflow

    global _artifact_root
    root = Path(state_dir).resolve() / "mlflow"
    (root / "artifacts").mkdir(parents=True, exist_ok=True)
    _artifact_root = root / "artifacts"
    uri = tracking_uri(state_dir)
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    _initialize_once(root, experiment_name)
    mlflow.set_experiment(experiment_id=experiment_id(experiment_name))


def _initialize_once(root: Path, experiment_name: str) -> None:
    """Create the store's tables once per state folder, under a file lock. Two first jobs that opened a fresh
    store at once both ran its schema migrations, and one failed ("Online migration expected to match one row")."""
    ready = root / ".ready"
    if ready.exists():
        return
    with open(root / ".init.lock", "a+") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            if not ready.exists():
                experiment_id(experiment_name)  # opens the tracking store: creates and migrates the tables
                _open_registry()
                ready.touch()
                logger.info("MLflow store initialized under %s", root)
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def _open_registry() -> None:
    from mlflow import MlflowClient

    MlflowClient().search_registered_models(max_results=1)


def experiment_id(name: str) -> str:
    """The id of the experiment `name`, created (artifacts under <state>/mlflow/artifacts) when it does not exist."""
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    if _artifact_root is None:
        raise RuntimeError("configure_mlflow(state_dir) first: it decides where artifacts go")
    client = MlflowClient()
    existing = client.get_experiment_by_name(name)
    if existing is not None:
        return existing.experiment_id
    try:
        created = client.create_experiment(name, artifact_location=_artifact_root.as_uri())
        logger.info("created MLflow experiment %s (%s)", name, created)
        return created
    except MlflowException:
        existing = client.get_experiment_by_name(name)  # created by a concurrent process in the meantime
        if existing is None:
            raise
        return existing.experiment_id
