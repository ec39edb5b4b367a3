"""The names this app writes on the engine's resources, and the aliases of model versions."""

from __future__ import annotations

RUN_TAG = "ft-autopilot-run"  # on jobs and models: the app's run id
MANAGED_TAG = "ft-autopilot-managed"  # on endpoints: "true" when this app may tear them down
CHAMPION = "champion"  # the model version that serves a line's traffic
CHALLENGER = "challenger"  # a version registered by a run, before its traffic shift
