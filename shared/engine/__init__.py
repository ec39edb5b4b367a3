"""Engines behind one port. `build_engine` is the only place that chooses one, and it imports lazily."""

from __future__ import annotations

from typing import TYPE_CHECKING

from shared.engine.base import Engine
from shared.errors import EngineNotConfigured
from shared.settings import Settings

if TYPE_CHECKING:
    from shared.storage import BlobStore


def build_engine(settings: Settings, store: BlobStore | None = None) -> Engine:
    """The engine the settings name. One that cannot run here is an EngineNotConfigured error, which intake
    records on the run: no code path pretends to train."""
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
