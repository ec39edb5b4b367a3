"""Fine-tuned models in the workspace registry: one MLflow model version per run, and the app's aliases as tags."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from shared.domain.tags import RUN_TAG
from shared.engine.azureml.clients import AzureMLClients, get_or_none
from shared.engine.azureml.config import SERVING_SIZE_TAG
from shared.engine.azureml.jobs import AzureMLJobs
from shared.engine.azureml.pipeline import TRAINED_MODEL_OUTPUT
from shared.engine.azureml.sdk_errors import translate, translated
from shared.engine.base import ModelRef

ALIAS_TAG = "ft-autopilot-alias"  # Azure ML models have no aliases: the app keeps its own as a tag


class AzureMLModels:
    def __init__(self, clients: AzureMLClients, jobs: AzureMLJobs) -> None:
        self._clients = clients
        self._jobs = jobs

    def register_model(self, job_name: str, model_name: str, tags: Mapping[str, str]) -> ModelRef:
        """The job's trained_model output as an MLflow model; the version is derived from the run id, so a second
        registration of the same run finds the first."""
        from azure.ai.ml.constants import AssetTypes
        from azure.ai.ml.entities import Model

        version = model_version_for(job_name)
        existing = self.get_model(model_name, version=version)
        if existing is not None:
            return existing
        job_tags = self._jobs.get_job(job_name).tags
        serving = {SERVING_SIZE_TAG: job_tags[SERVING_SIZE_TAG]} if SERVING_SIZE_TAG in job_tags else {}
        model = Model(
            name=model_name,
            version=version,
            type=AssetTypes.MLFLOW_MODEL,
            path=f"azureml://jobs/{job_name}/outputs/{TRAINED_MODEL_OUTPUT}",
            description=f"{model_name}: fine-tuned by ft-autopilot run {job_name} (chat completion)",
            tags={**tags, **serving, RUN_TAG: tags.get(RUN_TAG, job_name)},
        )
        models = self._clients.workspace.models
        try:
            created = models.create_or_update(model)
        except Exception as exc:
            error = translate(exc, f"register model {model_name} version {version}")
            if error.code != "azureml_already_exists":
                raise error from exc
            created = models.get(model_name, version=version)
        return _model_ref(created)

    def get_model(self, name: str, version: str | None = None, alias: str | None = None) -> ModelRef | None:
        models = self._clients.workspace.models
        if alias is not None:
            listed = get_or_none(lambda: list(models.list(name=name)), f"list versions of model {name}")
            tagged = [m for m in listed or () if (m.tags or {}).get(ALIAS_TAG) == alias]
            return _model_ref(max(tagged, key=_newest_first)) if tagged else None
        action = f"get model {name}" + (f" version {version}" if version else "")
        found = get_or_none(
            lambda: models.get(name, version=version) if version else models.get(name, label="latest"), action
        )
        return _model_ref(found) if found is not None else None

    def set_model_alias(self, model: ModelRef, alias: str) -> None:
        """Tag the version with the alias, and take the tag off any other version that had it."""
        models = self._clients.workspace.models
        with translated(f"set alias {alias} on model {model.name} version {model.version}"):
            for other in models.list(name=model.name):
                if (other.tags or {}).get(ALIAS_TAG) == alias and str(other.version) != model.version:
                    other.tags.pop(ALIAS_TAG)
                    models.create_or_update(other)
            target = models.get(model.name, version=model.version)
            if (target.tags or {}).get(ALIAS_TAG) != alias:
                target.tags = {**(target.tags or {}), ALIAS_TAG: alias}
                models.create_or_update(target)


def model_version_for(job_name: str) -> str:
    """A registered model version per run: the run id's hex as a number (stable, and a valid version string)."""
    digits = job_name.removeprefix("ft-")
    try:
        return str(int(digits, 16))
    except ValueError:
        return str(int.from_bytes(job_name.encode()[:12], "big"))


def _model_ref(model: Any) -> ModelRef:
    return ModelRef(name=model.name, version=str(model.version), tags=dict(model.tags or {}))


def _newest_first(model: Any) -> tuple[datetime, str]:
    return (_created_at(model) or datetime.min.replace(tzinfo=UTC), str(model.version))


def _created_at(entity: Any) -> datetime | None:
    context = getattr(entity, "creation_context", None)
    return getattr(context, "created_at", None)
