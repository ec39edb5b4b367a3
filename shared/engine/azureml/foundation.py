"""The base model's id and the compute it is fine-tuned and served on: what the notebook checks before it submits.
Pure.

BASE_MODEL_ID names a model in a registry, pinned by version or label (its metadata is read in model_card.py).
Compute checks follow the notebook: the cluster exists and has not failed, its size is allowed (or, without an
allow-list, is not a K80 size), and its GPUs per node come from the workspace's list of sizes. The inference size,
unless set, is chosen from the model's own inference list, leaving out sizes Azure is retiring.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

from shared.domain.errors import EngineError

BASE_MODEL_SETTING = "BASE_MODEL_ID"
INFERENCE_SIZE_SETTING = "AZUREML_INFERENCE_INSTANCE_TYPE"
UNSUPPORTED_GPU_SIZES = frozenset({"standard_nc6", "standard_nc12", "standard_nc24", "standard_nc24r"})  # K80
# GPU families Azure has retired or is retiring (K80 NC, P100 NCv2, V100 NCv3 and NDv2, P40 ND): never a default.
RETIRING_GPU_SIZES = re.compile(r"^standard_(nc\d+r?|nc\d+r?s_v2|nc\d+r?s_v3|nd\d+r?s|nd40rs_v2)$", re.IGNORECASE)
# Current inference sizes by pay-as-you-go price per hour, lowest first (Linux, US East, as Azure's price list
# ranks them): the default is the first of these the model's inference list names.
INFERENCE_SIZE_PREFERENCE = (
    "Standard_NC4as_T4_v3",
    "Standard_NC8as_T4_v3",
    "Standard_NC16as_T4_v3",
    "Standard_NC24ads_A100_v4",
    "Standard_NC64as_T4_v3",
    "Standard_NC40ads_H100_v5",
    "Standard_NC48ads_A100_v4",
    "Standard_NC80adis_H100_v5",
    "Standard_NC96ads_A100_v4",
    "Standard_ND96asr_v4",
    "Standard_ND96amsr_A100_v4",
    "Standard_ND96isr_H100_v5",
)

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


def check_compute_size(size: str, allow_list: Iterable[str] | None, *, purpose: str = "fine-tuning") -> None:
    if allow_list is not None:
        if size.lower() not in {s.lower() for s in allow_list}:
            raise ComputeNotUsable(
                f"VM size {size} is not allowed for {purpose} this model; use one of {', '.join(sorted(allow_list))}"
            )
    elif size.lower() in UNSUPPORTED_GPU_SIZES:
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


def is_retiring(size: str) -> bool:
    return bool(RETIRING_GPU_SIZES.match(size.strip()))


def serving_size_warning(configured: str | None) -> str | None:
    """A set serving size that Azure is retiring still works until it does not: say so on every run."""
    if configured and is_retiring(configured):
        return (
            f"{INFERENCE_SIZE_SETTING}={configured} is a GPU size Azure is retiring: deployments on it will stop "
            "being possible; choose a current size from the model's inference list, or unset the setting"
        )
    return None


def inference_size(configured: str | None, allow_list: Iterable[str] | None) -> str:
    """The VM size deployments use: the setting when given (checked against the model's list), otherwise the
    cheapest current size in the model's inference list. A model without a list needs the setting: guessing a size
    could give a deployment that runs out of memory only after hours of training."""
    if configured:
        check_compute_size(configured, allow_list, purpose=f"serving ({INFERENCE_SIZE_SETTING})")
        return configured
    listed = list(allow_list or ())
    if not listed:
        raise ComputeNotUsable(f"the base model lists no inference sizes: set {INFERENCE_SIZE_SETTING}")
    by_name = {size.lower(): size for size in listed}
    for preferred in INFERENCE_SIZE_PREFERENCE:
        if preferred.lower() in by_name:
            return by_name[preferred.lower()]
    current = [size for size in listed if not is_retiring(size)]
    if current:
        return current[0]
    raise ComputeNotUsable(
        f"every size in the model's inference list is retiring ({', '.join(listed)}): set {INFERENCE_SIZE_SETTING}"
    )
