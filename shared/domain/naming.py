"""Names the app gives to models, endpoints and deployments. Pure.

Endpoint and deployment names follow Azure's rules (3-32 characters, letters, digits and hyphens, starting with
a letter). One stable endpoint per fine-tuned model name keeps clients on the same URL across retrains.
"""

from __future__ import annotations

import hashlib
import re

MAX_ENDPOINT_NAME = 32
# Azure ML's rule for endpoint and deployment names: 3-32 characters, ASCII letters, digits and hyphens, starting
# with a letter and not ending with a hyphen.
RESOURCE_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9-]{1,30}[A-Za-z0-9]$")


def is_resource_name(name: str) -> bool:
    return bool(RESOURCE_NAME.fullmatch(name))


def finetuned_model_name(base_model: str, suffix: str) -> str:
    """`Phi-3-mini-4k-instruct` + suffix from a registry asset id, a hub id, a folder or a short name."""
    if "/models/" in base_model:  # azureml://registries/<r>/models/<name>/versions|labels/<v>
        base = base_model.split("/models/", 1)[1].split("/", 1)[0]
    else:
        base = base_model.rstrip("/").rsplit("/", 1)[-1]
    return re.sub(r"[^A-Za-z0-9._-]+", "-", base + suffix).strip("-") or "model"


def line_model_name(line: str, base_model: str, suffix: str, default_line: str = "default") -> str:
    """A line's registry model name: `<line><suffix>`, whatever its base model, so its champion and endpoint stay
    when the line moves to another base model. The default line keeps the name it had before lines."""
    if line == default_line:
        return finetuned_model_name(base_model, suffix)
    return f"{line}{suffix}"


def endpoint_name_for(model_name: str, scope: str = "") -> str:
    """`ep-<model>`. Azure ML endpoint names are unique per region across all customers, so a non-empty `scope`
    (the workspace's resource id) adds a short digest of it: the same model gets different names in two workspaces."""
    slug = re.sub(r"[^a-z0-9]+", "-", model_name.lower()).strip("-")
    name = f"ep-{slug}"
    if scope or len(name) > MAX_ENDPOINT_NAME:
        digest = hashlib.sha256(f"{scope}|{model_name}".encode() if scope else model_name.encode()).hexdigest()[:6]
        name = f"{name[: MAX_ENDPOINT_NAME - 7].rstrip('-')}-{digest}"
    return name


def deployment_name_for(run_id: str) -> str:
    """One deployment per run: `d-` and the run id's 12 hex digits (blue/green by name, not by colour)."""
    return "d-" + run_id.removeprefix("ft-")
