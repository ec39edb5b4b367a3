"""Fine-tuning parameters: the names and meanings of Azure ML's `chat_completion_pipeline` inputs.

Both engines take these. Defaults are the walk-through notebook's (over the component's own).
Yes/no values are Python bools here; the Azure ML adapter sends them as the lowercase strings the
component expects.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Literal

import orjson
from pydantic import BaseModel, ConfigDict, Field


class FineTuneParameters(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    num_train_epochs: int = Field(3, ge=1)
    max_steps: int = Field(-1, ge=-1, description="-1: train for num_train_epochs; > 0 overrides it")
    per_device_train_batch_size: int = Field(1, ge=1)
    per_device_eval_batch_size: int = Field(1, ge=1)
    gradient_accumulation_steps: int = Field(1, ge=1)
    learning_rate: float = Field(5e-6, gt=0)
    lr_scheduler_type: Literal[
        "linear", "cosine", "cosine_with_restarts", "polynomial", "constant", "constant_with_warmup"
    ] = "cosine"
    warmup_steps: int = Field(0, ge=0)
    weight_decay: float = Field(0.0, ge=0)
    max_seq_length: int = Field(2048, ge=1)
    apply_lora: bool = True
    lora_r: int = Field(8, ge=1)
    lora_alpha: int = Field(128, ge=1)
    lora_dropout: float = Field(0.0, ge=0, lt=1)
    merge_lora_weights: bool = True
    precision: Literal["32", "16"] = "16"
    seed: int = 42
    evaluation_strategy: Literal["epoch", "steps", "disable"] = "epoch"
    logging_steps: int = Field(10, ge=1)
    save_total_limit: int = Field(1, ge=-1)
    apply_deepspeed: bool = True
    deepspeed_stage: Literal["2", "3"] = "2"

    def canonical_json(self) -> bytes:
        """Byte-stable form: the run id hashes it."""
        return orjson.dumps(self.model_dump(mode="json"), option=orjson.OPT_SORT_KEYS)


# The notebook's defaults are for Phi-3 on GPUs. On one CPU machine the local engine's models need other values to
# learn anything in minutes; these are applied over the defaults, and a run's own overrides go over them.
LOCAL_PRESETS: dict[str, dict[str, object]] = {
    # a randomly initialised 2M-parameter model: LoRA alone cannot teach it a template, full fine-tuning can, in seconds
    "tiny": {
        "num_train_epochs": 4,
        "per_device_train_batch_size": 8,
        "per_device_eval_batch_size": 8,
        "learning_rate": 3e-3,
        "max_seq_length": 256,
        "apply_lora": False,
        "precision": "32",
        "logging_steps": 5,
    },
    "smollm2-135m-instruct": {
        "num_train_epochs": 1,
        "per_device_train_batch_size": 8,
        "per_device_eval_batch_size": 8,
        "learning_rate": 2e-3,  # 5e-4 decayed over a short run left it looping: it learned the style, not the end
        "max_seq_length": 256,
        "lora_r": 16,
        "lora_alpha": 32,
        "lora_dropout": 0.05,
        "precision": "32",
        "logging_steps": 2,
    },
}


def parameters_for(
    presets: Mapping[str, object] | None = None, overrides: Mapping[str, object] | None = None
) -> FineTuneParameters:
    """The effective parameters of a run: the notebook's defaults, the engine's presets for the model (its
    profile's `parameter_presets`), then overrides. Unknown names or bad values raise pydantic's ValidationError."""
    return FineTuneParameters.model_validate({**(presets or {}), **(overrides or {})})
