"""Engines behind one port. `build_engine` is the only place that chooses one, and it imports lazily."""

from __future__ import annotations

from shared.engine.base import Engine
from shared.errors import EngineNotConfigured
from shared.settings import Settings


def build_engine(settings: Settings) -> Engine:
    """The engine the settings name.

    The adapters (shared/engine/local/, shared/engine/azureml.py) are not part of this build yet, so every
    choice is an EngineNotConfigured error, which intake records on the run: no code path pretends to train.
    """
    raise EngineNotConfigured(
        f"AUTOPILOT_ENGINE={settings.engine}: this build has no '{settings.engine}' engine yet; "
        "the dataset was validated and prepared, nothing was submitted"
    )
