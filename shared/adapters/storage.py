"""Blob access over azure-storage-blob: streaming reads and conditional writes, SDK errors mapped to ours."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from datetime import datetime
from typing import IO, Any, TypedDict

from azure.core import MatchConditions
from azure.core.exceptions import (
    AzureError,
    HttpResponseError,
    ResourceExistsError,
    ResourceModifiedError,
    ResourceNotFoundError,
)
from azure.core.pipeline import PipelineRequest
from azure.storage.blob import BlobLeaseClient, BlobServiceClient, ContentSettings, ExponentialRetry

from shared.domain.errors import AutopilotError, NotFound, StorageUnavailable
from shared.settings import STORAGE_CONNECTION_SETTING, Settings

logger = logging.getLogger(__name__)

CHUNK_BYTES = 4 * 1024 * 1024
CONNECT_TIMEOUT_S = 3
MIN_RETRY_WAIT_S = 0.05


class BlobNotFound(NotFound):
    code = "blob_not_found"


class StorageNotConfigured(AutopilotError):
    code = "storage_not_configured"
    http_status = 503


class ETagMismatch(AutopilotError):
    """A conditional write lost: the blob changed (or appeared) since it was read."""

    code = "etag_mismatch"
    http_status = 412


class _ClientOptions(TypedDict):
    max_single_get_size: int
    max_chunk_get_size: int
    retry_policy: ExponentialRetry
    connection_timeout: int


class BudgetedRetry(ExponentialRetry):
    """The SDK's exponential retry, within a time budget for the whole call: a retry that would end past it is not
    made, and the last wait is cut to what is left. The count alone let three retries of one call stack to 17 s."""

    def __init__(self, *, budget_s: float, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.budget_s = budget_s

    def configure_retries(self, request: PipelineRequest) -> dict[str, Any]:
        settings = super().configure_retries(request)
        settings["deadline"] = time.monotonic() + self.budget_s
        return settings

    def increment(self, settings: dict[str, Any], request: Any, response: Any = None, error: Any = None) -> bool:
        retry = super().increment(settings, request, response=response, error=error)
        return retry and settings["deadline"] - time.monotonic() > MIN_RETRY_WAIT_S

    def get_backoff_time(self, settings: dict[str, Any]) -> float:
        return max(0.0, min(super().get_backoff_time(settings), settings["deadline"] - time.monotonic()))


class _Unmodified(TypedDict, total=False):
    """The keywords of a read or write that must find the blob at this ETag; empty: unconditional."""

    etag: str
    match_condition: MatchConditions


@dataclass(frozen=True)
class BlobInfo:
    container: str
    name: str
    etag: str
    size: int
    last_modified: datetime | None = None


class HeldLease:
    """A lease this process holds on a blob: renewed while a change runs, released when it ends."""

    def __init__(self, what: str, client: BlobLeaseClient) -> None:
        self._what = what
        self._client = client

    def renew(self) -> None:
        with _mapped_errors(self._what):
            self._client.renew()

    def release(self) -> None:
        with _mapped_errors(self._what):
            self._client.release()


class BlobStore:
    def __init__(self, service: BlobServiceClient) -> None:
        self._service = service

    @classmethod
    def from_settings(cls, settings: Settings) -> BlobStore:
        options: _ClientOptions = {
            "max_single_get_size": CHUNK_BYTES,
            "max_chunk_get_size": CHUNK_BYTES,
            # The SDK's default backoff (15 s, then 18, 24) outlasts an HTTP request; the platform retries anyway.
            "retry_policy": BudgetedRetry(
                budget_s=settings.storage_retry_budget_s,
                initial_backoff=0.5,
                increment_base=2,
                retry_total=settings.storage_retries,
                random_jitter_range=0.5,
            ),
            "connection_timeout": CONNECT_TIMEOUT_S,
        }
        if settings.storage_connection_string is not None:
            secret = settings.storage_connection_string.get_secret_value()
            return cls(BlobServiceClient.from_connection_string(secret, **options))
        if settings.storage_account_url:
            from azure.identity import DefaultAzureCredential  # only in Azure, with a managed identity

            credential = DefaultAzureCredential(managed_identity_client_id=settings.storage_client_id)
            return cls(BlobServiceClient(settings.storage_account_url, credential=credential, **options))
        raise StorageNotConfigured(
            f"no storage configured: set {STORAGE_CONNECTION_SETTING} (a connection string) "
            f"or {STORAGE_CONNECTION_SETTING}__blobServiceUri (managed identity)"
        )

    @property
    def account_url(self) -> str:
        return self._service.url

    def ensure_container(self, container: str) -> None:
        with _mapped_errors(container), suppress(ResourceExistsError):
            self._service.create_container(container)

    def info(self, container: str, name: str) -> BlobInfo:
        with _mapped_errors(f"{container}/{name}"):
            props = self._service.get_blob_client(container, name).get_blob_properties()
        return BlobInfo(
            container=container, name=name, etag=props.etag, size=props.size, last_modified=props.last_modified
        )

    def iter_chunks(self, container: str, name: str, *, etag: str | None = None) -> Iterator[bytes]:
        """Stream the blob in chunks of about 4 MiB; with `etag`, fail rather than read a newer version."""
        conditions: _Unmodified = {"etag": etag, "match_condition": MatchConditions.IfNotModified} if etag else {}
        with _mapped_errors(f"{container}/{name}"):
            downloader = self._service.get_blob_client(container, name).download_blob(**conditions)
            yield from downloader.chunks()

    def iter_lines(self, container: str, name: str, *, etag: str | None = None) -> Iterator[bytes]:
        """The blob's non-blank lines, without their line ends, streamed (as `iter_chunks`)."""
        pending = b""
        for chunk in self.iter_chunks(container, name, etag=etag):
            pending += chunk
            *complete, pending = pending.split(b"\n")
            yield from (line for line in complete if line.strip())
        if pending.strip():
            yield pending

    def read(self, container: str, name: str) -> tuple[bytes, str]:
        """The whole blob and its ETag. For small documents (run records, reports)."""
        with _mapped_errors(f"{container}/{name}"):
            downloader = self._service.get_blob_client(container, name).download_blob()
            return downloader.readall(), downloader.properties.etag

    def write(
        self,
        container: str,
        name: str,
        data: bytes | IO[bytes],
        *,
        content_type: str = "application/octet-stream",
        if_match: str | None = None,
        if_absent: bool = False,
    ) -> str:
        """Upload and return the new ETag. `if_match` / `if_absent` make the write conditional (ETagMismatch)."""
        conditions: _Unmodified = {}
        if if_match is not None:
            conditions = {"etag": if_match, "match_condition": MatchConditions.IfNotModified}
        with _mapped_errors(f"{container}/{name}"):
            result = self._service.get_blob_client(container, name).upload_blob(
                data, content_settings=ContentSettings(content_type=content_type), overwrite=not if_absent, **conditions
            )
        return result["etag"]

    def list_names(self, container: str, prefix: str | None = None) -> Iterator[str]:
        with _mapped_errors(container):
            yield from self._service.get_container_client(container).list_blob_names(name_starts_with=prefix)

    def try_lease(self, container: str, name: str, duration_s: int) -> HeldLease | None:
        """Take the lease on `name` (an empty blob, made when missing) for `duration_s` (15-60 s); None when
        someone else holds it."""
        what = f"{container}/{name}"
        blob = self._service.get_blob_client(container, name)
        with _mapped_errors(what):
            if not blob.exists():
                with suppress(ResourceExistsError):  # made meanwhile, or leased already: either way it exists
                    blob.upload_blob(b"", overwrite=False)
            client = BlobLeaseClient(blob)
            try:
                client.acquire(lease_duration=duration_s)
            except HttpResponseError as exc:
                if exc.status_code == 409:  # LeaseAlreadyPresent
                    return None
                raise
        return HeldLease(what, client)

    def delete(self, container: str, name: str) -> None:
        with _mapped_errors(f"{container}/{name}"), suppress(ResourceNotFoundError):
            self._service.get_blob_client(container, name).delete_blob()


@contextmanager
def _mapped_errors(what: str) -> Iterator[None]:
    try:
        yield
    except ResourceNotFoundError as exc:
        raise BlobNotFound(f"{what} does not exist") from exc
    except (ResourceModifiedError, ResourceExistsError) as exc:
        raise ETagMismatch(f"{what} changed or already exists") from exc
    except AzureError as exc:
        raise StorageUnavailable(f"storage error on {what}: {type(exc).__name__}: {_first_line(exc)}") from exc


def _first_line(exc: Exception) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else ""
