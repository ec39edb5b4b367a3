"""Engines behind one port. This is the only place that chooses one (`build_engine`, which imports lazily) and
that knows what each engine implies (`engine_profile`)."""

from __future__ import annotations

from typing import TYPE_CHECKING, NamedTuple

from shared.domain.errors import EngineNotConfigured
from shared.domain.finetune import LOCAL_PRESETS
from shared.engine.base import Engine
from shared.engine.profile import LOCAL_WORKSPACE_TOPIC, EngineProfile
from shared.settings import Settings

if TYPE_CHECKING:
    from shared.adapters.storage import BlobStore


class BuiltEngine(NamedTuple):
    engine: Engine
    profile: EngineProfile


def engine_profile(settings: Settings) -> EngineProfile:
    """What the configured engine implies, without building it (intake of an invalid dataset needs no engine)."""
    topic: str | None
    if settings.engine == "local":
        evaluates, topic, scope = True, LOCAL_WORKSPACE_TOPIC, ""
        base_model, presets = settings.local_base_model, LOCAL_PRESETS.get(settings.local_base_model, {})
    elif settings.engine == "azureml":
        # Azure ML endpoint names are unique per region across all customers: the workspace scopes them
        evaluates, topic = False, settings.azureml_workspace_id
        scope, base_model, presets = topic or "", settings.base_model_id, {}
    else:
        raise EngineNotConfigured(f"AUTOPILOT_ENGINE={settings.engine}: no such engine (local or azureml)")
    require = settings.gate_require_base_eval
    return EngineProfile(
        name=settings.engine,
        base_model=base_model,
        workspace_topic=topic,
        endpoint_scope=scope,
        evaluates_base_model=evaluates,
        evaluates_champion=settings.engine == "local",
        serves_base_model=settings.engine == "local",
        gate_requires_base_eval=evaluates if require is None else require,
        parameter_presets=presets,
        previews_jobs_offline=settings.engine == "azureml",
        presets_by_model=LOCAL_PRESETS if settings.engine == "local" else {},
        finetune_instance_type=settings.azureml_finetune_instance_type if settings.engine == "azureml" else None,
        # unset, the deployment's size is picked from the base model's list only when it is deployed
        serving_instance_type=settings.azureml_inference_instance_type if settings.engine == "azureml" else None,
    )


def build_engine(settings: Settings, store: BlobStore | None = None) -> BuiltEngine:
    """The engine the settings name, with its profile. One that cannot run here is an EngineNotConfigured error,
    which intake records on the run: no code path pretends to train."""
    return BuiltEngine(_engine(settings, store), engine_profile(settings))


def _engine(settings: Settings, store: BlobStore | None) -> Engine:
    if settings.engine == "local":
        try:
            from shared.engine.local.engine import LocalEngine
        except ImportError as exc:  # the ML stack is a separate install (requirements-local.txt)
            raise EngineNotConfigured(
                f"AUTOPILOT_ENGINE=local needs the local engine's packages ({exc.name} is missing): "
                "pip install -r requirements-local.txt, or run `make deps-local`"
            ) from exc
        return LocalEngine(
            settings.local_state_dir,
            store,
            base_model=settings.local_base_model,
            webhook_url=settings.local_events_webhook,
        )
    if settings.engine == "azureml":
        from shared.engine.azureml.config import AzureMLConfig
        from shared.engine.azureml.engine import AzureMLEngine

        return AzureMLEngine.connect(AzureMLConfig.from_settings(settings))
    raise EngineNotConfigured(f"AUTOPILOT_ENGINE={settings.engine}: no such engine (local or azureml)")
