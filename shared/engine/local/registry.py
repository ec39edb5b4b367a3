"""The local model registry: MLflow's, on sqlite under the engine's state folder.

Training logs the merged model to MLflow (like an Azure ML job's `trained_model` output); registering
turns that logged model into a version of a named model, tagged with its lineage. Registering the same
run twice returns the existing version.
"""

from __future__ import annotations

import contextlib
import io
import logging
from collections.abc import Mapping
from pathlib import Path

from shared.domain.errors import EngineError
from shared.domain.tags import RUN_TAG
from shared.engine.base import ModelRef

logger = logging.getLogger(__name__)
logging.getLogger("mlflow").setLevel(logging.WARNING)  # it announces every registration on stdout otherwise


class ModelNotFound(EngineError):
    code = "model_not_found"
    transient = False


class LocalRegistry:
    def __init__(self, state_dir: Path) -> None:
        self._state_dir = state_dir
        self._client = None

    def register(self, model_uri: str, name: str, tags: Mapping[str, str]) -> ModelRef:
        """A version of `name` for the run in tags[RUN_TAG]; the existing one if the run was registered already."""
        run_id = tags[RUN_TAG]
        existing = self._version_of_run(name, run_id)
        if existing is not None:
            logger.info("run %s is already %s version %s", run_id, name, existing.version, extra={"run_id": run_id})
            return existing
        import mlflow

        with contextlib.redirect_stderr(io.StringIO()):  # mlflow prints each registration to stderr
            version = mlflow.register_model(model_uri, name, tags=dict(tags))
        logger.info("registered run %s as %s version %s", run_id, name, version.version, extra={"run_id": run_id})
        return _ref(version)

    def get(self, name: str, version: str | None = None, alias: str | None = None) -> ModelRef | None:
        from mlflow.exceptions import MlflowException

        client = self._mlflow()
        try:
            if alias is not None:
                found = client.get_model_version_by_alias(name, alias)
            elif version is not None:
                found = client.get_model_version(name, version)
            else:
                versions = client.search_model_versions(f"name='{_quoted(name)}'", order_by=["version_number DESC"])
                found = versions[0] if versions else None
        except MlflowException:
            return None
        return _ref(found) if found is not None else None

    def set_alias(self, name: str, version: str, alias: str) -> None:
        self._mlflow().set_registered_model_alias(name, alias, version)

    def model_folders(self, model: ModelRef) -> tuple[Path, Path]:
        """The Hugging Face weights folder and tokenizer folder inside the registered MLflow model."""
        import mlflow

        found = self._mlflow().get_model_version(model.name, model.version)
        artifacts = Path(
            mlflow.get_logged_model(found.source.removeprefix("models:/")).artifact_location.removeprefix("file://")
        )
        weights, tokenizer = artifacts / "model", artifacts / "components" / "tokenizer"
        if not (weights / "config.json").exists():
            raise ModelNotFound(f"{model.name} version {model.version}: no model files in {artifacts}")
        return weights, tokenizer if tokenizer.exists() else weights

    def _version_of_run(self, name: str, run_id: str) -> ModelRef | None:
        versions = self._mlflow().search_model_versions(f"name='{_quoted(name)}' and tags.`{RUN_TAG}`='{run_id}'")
        return _ref(min(versions, key=lambda v: int(v.version))) if versions else None

    def _mlflow(self):
        if self._client is None:
            from mlflow import MlflowClient

            from shared.engine.local.mlflow_store import configure_mlflow

            configure_mlflow(self._state_dir)
            self._client = MlflowClient()
        return self._client


def _ref(version) -> ModelRef:
    return ModelRef(name=version.name, version=str(version.version), tags=dict(version.tags or {}))


def _quoted(value: str) -> str:
    return value.replace("'", "''")
