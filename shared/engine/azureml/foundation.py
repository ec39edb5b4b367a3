"""The base model and the compute it is fine-tuned on: what the notebook checks before it submits. Pure.

BASE_MODEL_ID names a model in a registry, pinned by version or label. Its tags carry `model_specific_defaults`
(fine-tune parameters that suit it); its compute allow-lists moved from the tags to `system_metadata`, so both are
read. Compute checks follow the notebook: the cluster exists and has not failed, its size is allowed (or, without an
allow-list, is not a K80 size), and its GPUs per node come from the workspace's list of sizes.
"""

from __future__ import annotations

import ast
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from shared.errors import EngineError

BASE_MODEL_SETTING = "BASE_MODEL_ID"
FINETUNE_ALLOW_LIST = "finetune_compute_allow_list"
INFERENCE_ALLOW_LIST = "inference_compute_allow_list"
MODEL_DEFAULTS_TAG = "model_specific_defaults"
UNSUPPORTED_GPU_SIZES = frozenset({"standard_nc6", "standard_nc12", "standard_nc24", "standard_nc24r"})  # K80

_ASSET_ID = re.compile(
    r"^azureml://registries/(?P<registry>[^/]+)/models/(?P<name>[^/]+)/(?P<kind>versions|labels)/(?P<ref>[^/]+)$"
)


class BaseModelUnavailable(EngineError):
    """The configured base model is missing or archived in its registry. Permanent: change the setting."""

    code = "base_model_unavailable"
    transient = False


class ComputeNotUsable(EngineError):
    """The fine-tuning compute is missing, failed, or of a size the model cannot be fine-tuned on."""

    code = "compute_not_usable"
    transient = False


@dataclass(frozen=True)
class BaseModelRef:
    registry: str
    name: str
    version: str | None = None
    label: str | None = None

    @property
    def asset_id(self) -> str:
        pin = f"versions/{self.version}" if self.version else f"labels/{self.label}"
        return f"azureml://registries/{self.registry}/models/{self.name}/{pin}"


def parse_base_model_id(value: str, default_registry: str) -> BaseModelRef:
    """`azureml://registries/<r>/models/<name>/versions/<v>` or `.../labels/<label>`; a bare `<name>:<version>`,
    `<name>@<label>` or `<name>` (label latest) is looked up in `default_registry`."""
    value = value.strip()
    match = _ASSET_ID.match(value)
    ref = None
    if match:
        pin = {"version": match["ref"]} if match["kind"] == "versions" else {"label": match["ref"]}
        ref = BaseModelRef(registry=match["registry"], name=match["name"], **pin)
    elif value and "/" not in value:
        if ":" in value:
            name, _, version = value.partition(":")
            ref = BaseModelRef(registry=default_registry, name=name, version=version)
        else:
            name, _, label = value.partition("@")
            ref = BaseModelRef(registry=default_registry, name=name, label=label or "latest")
    if ref is not None and ref.label not in (None, "latest"):
        raise BaseModelUnavailable(
            f"{BASE_MODEL_SETTING}={value!r}: azure-ai-ml resolves only the label 'latest'; pin a version instead"
        )
    if ref is not None:
        return ref
    raise BaseModelUnavailable(
        f"{BASE_MODEL_SETTING}={value!r} is not a registry model id: use "
        "azureml://registries/<registry>/models/<name>/versions/<version> (or /labels/<label>), or <name>:<version>"
    )


@dataclass(frozen=True)
class FoundationModel:
    """A registry model, as far as fine-tuning it is concerned."""

    id: str
    name: str
    version: str
    finetune_defaults: Mapping[str, Any] = field(default_factory=dict)
    finetune_allow_list: tuple[str, ...] | None = None
    inference_allow_list: tuple[str, ...] | None = None


def foundation_model(ref: BaseModelRef, model: Any) -> FoundationModel:
    """What a fetched azure-ai-ml Model says about fine-tuning; an archived one is refused with the setting named."""
    tags: Mapping[str, str] = getattr(model, "tags", None) or {}
    # public in some azure-ai-ml versions, private in 1.35
    system_metadata: Mapping[str, Any] = (
        getattr(model, "system_metadata", None) or getattr(model, "_system_metadata", None) or {}
    )
    properties: Mapping[str, Any] = getattr(model, "properties", None) or {}
    stage = str(getattr(model, "stage", "") or "")
    if stage.lower() == "archived" or str(properties.get("isArchived", "")).lower() == "true":
        raise BaseModelUnavailable(
            f"{BASE_MODEL_SETTING}: {model.name} version {model.version} is archived in registry {ref.registry} "
            "and can no longer be fine-tuned (Phi-3-mini-4k-instruct was retired on 2025-08-30); "
            f"set {BASE_MODEL_SETTING} to a model the registry still offers for chat-completion fine-tuning"
        )
    return FoundationModel(
        id=model.id,
        name=model.name,
        version=str(model.version),
        finetune_defaults=_literal(tags.get(MODEL_DEFAULTS_TAG), dict) or {},
        finetune_allow_list=_allow_list(FINETUNE_ALLOW_LIST, system_metadata, tags),
        inference_allow_list=_allow_list(INFERENCE_ALLOW_LIST, system_metadata, tags),
    )


def _allow_list(name: str, *sources: Mapping[str, Any]) -> tuple[str, ...] | None:
    for source in sources:
        value = source.get(name)
        if isinstance(value, list | tuple):
            return tuple(str(v) for v in value)
        parsed = _literal(value, list)
        if parsed is not None:
            return tuple(str(v) for v in parsed)
    return None


def _literal(text: Any, kind: type) -> Any:
    """A tag holds a Python literal as text (the notebook reads it with ast.literal_eval); anything else is None."""
    if not isinstance(text, str):
        return None
    try:
        value = ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return None
    return value if isinstance(value, kind) else None


def check_compute_size(size: str, allow_list: Iterable[str] | None, *, purpose: str = "fine-tuning") -> None:
    allowed = None if allow_list is None else {s.lower() for s in allow_list}
    if allowed is not None and size.lower() not in allowed:
        raise ComputeNotUsable(
            f"VM size {size} is not allowed for {purpose} this model; use one of {', '.join(sorted(allow_list))}"
        )
    if allowed is None and size.lower() in UNSUPPORTED_GPU_SIZES:
        raise ComputeNotUsable(f"VM size {size} (K80 GPUs) is not supported for {purpose}")


def check_cluster_state(name: str, provisioning_state: str | None) -> None:
    if (provisioning_state or "").lower() == "failed":
        raise ComputeNotUsable(f"compute {name} is in a failed state: create it again or set AZUREML_COMPUTE")


def gpus_per_node(size: str, sizes: Iterable[tuple[str, int | None]]) -> int:
    """GPUs of one node of `size`, from the workspace's VM sizes as (name, gpus) pairs."""
    known = []
    for name, gpus in sizes:
        known.append(name)
        if name.lower() == size.lower():
            if not gpus:
                raise ComputeNotUsable(f"VM size {size} has no GPU: fine-tuning needs a GPU size")
            return int(gpus)
    raise ComputeNotUsable(
        f"VM size {size} is not among the workspace's sizes ({len(known)} listed): check AZUREML_COMPUTE"
    )
