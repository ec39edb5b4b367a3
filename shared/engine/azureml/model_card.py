"""A registry model's fine-tuning metadata, read from what the registry really serves. Pure.

Three documents describe the same model version, each with its own shape:
- the registry's REST body (`GET .../registries/<r>/models/<name>/versions/<v>`): camelCase, everything under
  `properties`: `tags`, `isArchived` beside the inner `properties` (not inside it), and the system metadata as
  `systemMetadata` (the SDK writes it as `system_metadata`). azure-ai-ml 1.35.2's `Model._from_rest_object` keeps
  neither `isArchived` nor the system metadata, so the adapter reads this body itself;
- an azureml-assets `spec.yaml`: `isArchived`, `tags` and `system_metadata` at the top level;
  `tags.model_specific_defaults` is a YAML mapping there;
- `az ml model show --registry-name azureml ... -o yaml`: the SDK's Model schema (`tags`, `stage`, `system_metadata`),
  where a tag is a string, so `model_specific_defaults` holds a Python literal (the notebook reads it with
  `ast.literal_eval`).

The compute allow-lists moved from the tags (`finetune_compute_allow_list`, `inference_compute_allow_list`) to
`system_metadata.supportedComputes.{finetuneComputes,inferenceComputes}`; both places are read, the new one first.
Retirement dates live under `system_metadata.deprecation` (e.g. `finetuneRetirementDate: '2025-08-30T00:00:00Z'`),
or, in specs not yet migrated, in the tags (`FinetuneRetirementDate: '2025-08-30'`).
"""

from __future__ import annotations

import ast
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from typing import Any

from shared.domain.errors import InvalidInput
from shared.engine.azureml.foundation import BASE_MODEL_SETTING, BaseModelUnavailable

MODEL_DEFAULTS_TAG = "model_specific_defaults"
LEGACY_FINETUNE_ALLOW_LIST = "finetune_compute_allow_list"
LEGACY_INFERENCE_ALLOW_LIST = "inference_compute_allow_list"


@dataclass(frozen=True)
class FoundationModel:
    """A registry model, as far as fine-tuning and serving it are concerned."""

    id: str
    name: str
    version: str
    finetune_defaults: Mapping[str, Any] = field(default_factory=dict)
    finetune_allow_list: tuple[str, ...] | None = None
    inference_allow_list: tuple[str, ...] | None = None
    archived: bool = False
    finetune_deprecation: datetime | None = None
    finetune_retirement: datetime | None = None
    fine_tuning_tasks: tuple[str, ...] | None = None
    not_stated: tuple[str, ...] = ()  # what the document does not say (checked at submission instead)
    unreadable: tuple[str, ...] = ()  # "key: value" of dates present but not readable


def from_registry_body(body: Mapping[str, Any], *, registry: str, name: str) -> FoundationModel:
    """The REST body of a registry model version (the name is the container's: the body's `name` is the version)."""
    properties = _mapping(body.get("properties"))
    system_metadata = _mapping(properties.get("systemMetadata")) or _mapping(properties.get("system_metadata"))
    version = str(body.get("name") or _version_from_id(str(body.get("id") or "")))
    archived = _is_true(properties.get("isArchived")) or str(properties.get("stage") or "").lower() == "archived"
    stated = "isArchived" in properties or "stage" in properties
    return _card(registry, name, version, _mapping(properties.get("tags")), system_metadata, archived, stated)


def from_model_document(document: Mapping[str, Any], *, registry: str) -> FoundationModel:
    """An azureml-assets spec.yaml, or `az ml model show -o yaml`, already parsed into a mapping."""
    if "name" not in document or "version" not in document:
        raise InvalidInput("the model's YAML has no name or version: give a spec.yaml or `az ml model show` output")
    system_metadata = _mapping(document.get("system_metadata")) or _mapping(document.get("systemMetadata"))
    archived = (
        _is_true(document.get("isArchived"))
        or _is_true(document.get("is_archived"))
        or str(document.get("stage") or "").lower() == "archived"
    )
    # a spec.yaml leaves isArchived out when the model is active; `az ml model show` never prints it (the SDK drops
    # it), so only a spec.yaml's silence says "active"
    stated = any(key in document for key in ("isArchived", "is_archived", "stage", "$schema"))
    tags = _mapping(document.get("tags"))
    name, version = str(document["name"]), str(document["version"])
    return _card(registry, name, version, tags, system_metadata, archived, stated)


def check_fine_tunable(model: FoundationModel, now: datetime) -> list[str]:
    """Refuse a model the registry no longer fine-tunes; the warnings say what is coming (a deprecation)."""
    where = f"{model.name} version {model.version}"
    if model.archived:
        retired = (
            f", fine-tune retirement date {model.finetune_retirement:%Y-%m-%d}" if model.finetune_retirement else ""
        )
        raise BaseModelUnavailable(
            f"{BASE_MODEL_SETTING}: {where} is archived in its registry (isArchived: true{retired}) and can no "
            f"longer be fine-tuned; set {BASE_MODEL_SETTING} to a model the registry still offers for chat-completion "
            "fine-tuning"
        )
    if model.finetune_retirement is not None and model.finetune_retirement <= now:
        raise BaseModelUnavailable(
            f"{BASE_MODEL_SETTING}: {where} was retired for fine-tuning on {model.finetune_retirement:%Y-%m-%d} "
            f"(system_metadata.deprecation.finetuneRetirementDate); set {BASE_MODEL_SETTING} to a current model"
        )
    if model.fine_tuning_tasks is not None and "chat-completion" not in model.fine_tuning_tasks:
        raise BaseModelUnavailable(
            f"{BASE_MODEL_SETTING}: {where} is not offered for chat-completion fine-tuning "
            f"(system_metadata.tasks.fineTuningTasks: {', '.join(model.fine_tuning_tasks) or 'none'})"
        )
    warnings = [f"{where}: cannot read {entry}, so it was not checked" for entry in model.unreadable]
    if model.finetune_deprecation is not None and model.finetune_deprecation <= now:
        retires = f", and retires on {model.finetune_retirement:%Y-%m-%d}" if model.finetune_retirement else ""
        warnings.append(
            f"{where} is deprecated for fine-tuning since {model.finetune_deprecation:%Y-%m-%d}{retires}: "
            f"plan a move of {BASE_MODEL_SETTING} to a newer model"
        )
    return warnings


def _card(
    registry: str,
    name: str,
    version: str,
    tags: Mapping[str, Any],
    system_metadata: Mapping[str, Any],
    archived: bool,
    archive_stated: bool,
) -> FoundationModel:
    supported = _mapping(system_metadata.get("supportedComputes"))
    deprecation = _mapping(system_metadata.get("deprecation"))
    tasks = _mapping(system_metadata.get("tasks"))
    fine_tuning_tasks = _string_list(tasks.get("fineTuningTasks"))
    dates, unreadable = {}, []
    for key, legacy in (
        ("finetuneDeprecationDate", "FinetuneDeprecationDate"),
        ("finetuneRetirementDate", "FinetuneRetirementDate"),
    ):
        raw = deprecation.get(key) if key in deprecation else tags.get(legacy)
        dates[key] = _time(raw)
        if raw not in (None, "") and dates[key] is None:
            unreadable.append(f"{key} {raw!r}")
    finetune_list = _string_list(supported.get("finetuneComputes")) or _string_list(
        tags.get(LEGACY_FINETUNE_ALLOW_LIST)
    )
    inference_list = _string_list(supported.get("inferenceComputes")) or _string_list(
        tags.get(LEGACY_INFERENCE_ALLOW_LIST)
    )
    not_stated = [
        what
        for what, stated in (
            ("archive state (isArchived)", archive_stated),
            ("fine-tune compute list", finetune_list is not None),
            ("inference compute list", inference_list is not None),
            ("model_specific_defaults", MODEL_DEFAULTS_TAG in tags),
        )
        if not stated
    ]
    return FoundationModel(
        id=f"azureml://registries/{registry}/models/{name}/versions/{version}",
        name=name,
        version=version,
        finetune_defaults=_defaults(tags.get(MODEL_DEFAULTS_TAG)),
        finetune_allow_list=finetune_list,
        inference_allow_list=inference_list,
        archived=archived,
        finetune_deprecation=dates["finetuneDeprecationDate"],
        finetune_retirement=dates["finetuneRetirementDate"],
        fine_tuning_tasks=fine_tuning_tasks,
        not_stated=tuple(not_stated),
        unreadable=tuple(unreadable),
    )


def _defaults(value: Any) -> dict[str, Any]:
    """A YAML mapping (spec.yaml) or a Python literal in a string (a registry tag); anything else is no defaults."""
    if isinstance(value, Mapping):
        return dict(value)
    parsed = _literal(value)
    return dict(parsed) if isinstance(parsed, dict) else {}


def _string_list(value: Any) -> tuple[str, ...] | None:
    if isinstance(value, str):
        value = _literal(value)
    if isinstance(value, list | tuple) and value:
        return tuple(str(item) for item in value)
    return None


def _literal(text: Any) -> Any:
    if not isinstance(text, str):
        return None
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return None


def _time(value: Any) -> datetime | None:
    """An ISO date or time (quoted in YAML: a string; unquoted: a date); one without a zone is UTC."""
    if isinstance(value, datetime):
        parsed = value
    elif isinstance(value, date):
        parsed = datetime(value.year, value.month, value.day)
    elif isinstance(value, str) and value.strip():
        try:
            parsed = datetime.fromisoformat(value.strip())
        except ValueError:
            return None
    else:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def _mapping(value: Any) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def _is_true(value: Any) -> bool:
    return value is True or (isinstance(value, str) and value.strip().lower() == "true")


def _version_from_id(asset_id: str) -> str:
    return asset_id.rstrip("/").rsplit("/", 1)[-1]
