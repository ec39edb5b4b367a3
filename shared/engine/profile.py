"""What the app asks of an engine besides its operations, decided once, where the engine is chosen
(shared/engine/__init__.py): no other module compares the engine's name."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

# The Event Grid topic of the local engine's job events: a workspace id no real workspace has.
LOCAL_WORKSPACE_TOPIC = (
    "/subscriptions/00000000-0000-0000-0000-000000000000/resourceGroups/local"
    "/providers/Microsoft.MachineLearningServices/workspaces/local"
)


@dataclass(frozen=True)
class EngineProfile:
    name: str  # "local" or "azureml", as AUTOPILOT_ENGINE says
    base_model: str  # what this engine fine-tunes (LOCAL_BASE_MODEL or BASE_MODEL_ID)
    workspace_topic: str | None  # the Event Grid topic job events must come from; None: not known (any topic)
    endpoint_scope: str  # what endpoint names must be unique within beyond the model ("" when nothing)
    evaluates_base_model: bool  # the job reports the base model's loss on the test split
    gate_requires_base_eval: bool  # the quality gate needs that loss (GATE_REQUIRE_BASE_EVAL, else the above)
    # the job also reports the champion's loss on the same split, and the engine can serve the base model for an
    # evaluation to compare with when a line has no champion yet (the local engine; Azure ML's pipeline does neither)
    evaluates_champion: bool = False
    serves_base_model: bool = False
    parameter_presets: Mapping[str, Any] = field(default_factory=dict)  # over the notebook's defaults
    previews_jobs_offline: bool = False  # `autopilot run --dry-run` can print the job this engine would submit
    presets_by_model: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)  # a line's own base model's
    # the VM sizes its jobs and deployments are billed by (None: this machine, which bills nothing, or, for serving on
    # Azure ML without AZUREML_INFERENCE_INSTANCE_TYPE, a size known only once the deployment picks it)
    finetune_instance_type: str | None = None
    serving_instance_type: str | None = None

    def presets_for(self, base_model: str) -> Mapping[str, Any]:
        """The parameter presets of a base model (a line may name another than the engine's default)."""
        if base_model == self.base_model:
            return self.parameter_presets
        return self.presets_by_model.get(base_model, {})
