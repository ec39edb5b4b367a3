"""Blob triggers: which blobs a function watches, and one blob delivered bound as its parameter's type asks."""

from __future__ import annotations

import inspect
import re
import typing
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from azure.functions.blob import InputStream
from azure.storage.blob import BlobClient, ContainerClient

from shared.devhost.indexing import DevHostError, HostedFunction
from shared.devhost.invocation import invoke

BlobDelivery = Callable[[HostedFunction, str, str], None]  # delivers (function, container, blob name)


@dataclass(frozen=True)
class BlobWatch:
    function: HostedFunction
    container: str
    prefix: str
    pattern: re.Pattern[str]
    parameter: str  # what the function's parameter takes: BlobClient, ContainerClient, ..., bytes, str, InputStream

    @classmethod
    def of(cls, function: HostedFunction) -> BlobWatch:
        path = str(function.trigger["path"]).lstrip("/")
        container, _, blob_pattern = path.partition("/")
        if not container or "{" in container:
            raise DevHostError(f"{function.name}: blob path {path!r} must start with a fixed container name")
        prefix = blob_pattern.split("{", 1)[0]
        regex, position = "", 0
        for match in re.finditer(r"\{([^}]+)\}", blob_pattern):
            regex += re.escape(blob_pattern[position : match.start()]) + f"(?P<{match.group(1)}>.+?)"
            position = match.end()
        regex += re.escape(blob_pattern[position:])
        return cls(function, container, prefix, re.compile(regex or ".+"), blob_parameter(function))

    def matches(self, blob_name: str) -> bool:
        return self.pattern.fullmatch(blob_name) is not None


def blob_parameter(function: HostedFunction) -> str:
    """What the trigger parameter's annotation asks for (InputStream unless it names another supported type)."""
    try:
        annotation = typing.get_type_hints(function.call).get(function.arg_name)
    except Exception:  # unresolvable annotations: read the raw one
        annotation = inspect.signature(function.call).parameters[function.arg_name].annotation
    name = annotation if isinstance(annotation, str) else getattr(annotation, "__name__", "")
    name = name.rsplit(".", 1)[-1]
    if name in ("BlobClient", "ContainerClient", "StorageStreamDownloader", "bytes", "str"):
        return name
    return "InputStream"


def deliver_blob(connection_string: str, function: HostedFunction, container: str, blob_name: str) -> None:
    """Deliver one blob to a blob-triggered function, bound as its parameter's type asks."""
    client = BlobClient.from_connection_string(connection_string, container, blob_name)
    kind = blob_parameter(function)
    value: Any
    if kind == "BlobClient":
        value = client
    elif kind == "ContainerClient":
        value = ContainerClient.from_connection_string(connection_string, container)
    elif kind == "StorageStreamDownloader":
        value = client.download_blob()
    else:
        downloader = client.download_blob()
        data = downloader.readall()
        if kind == "bytes":
            value = data
        elif kind == "str":
            value = data.decode()
        else:
            value = InputStream(
                data=data,
                name=f"{container}/{blob_name}",
                uri=client.url,
                length=len(data),
                metadata=downloader.properties.metadata,
            )
    try:
        invoke(function, value)
    finally:
        client.close()
