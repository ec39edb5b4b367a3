"""The polling blob trigger: Azurite emits no Event Grid events, so each watched container is listed and every
(blob, ETag) is delivered once, with receipts on disk and a poison threshold."""

from __future__ import annotations

import json
import logging
import threading
from datetime import UTC, datetime
from pathlib import Path

from azure.storage.blob import BlobServiceClient

from shared.adapters.files import write_json_atomically
from shared.devhost.blobs import BlobDelivery, BlobWatch

logger = logging.getLogger(__name__)

POISON_BLOB_THRESHOLD = 5  # host.json extensions.blobs.poisonBlobThreshold default


class BlobReceipts:
    """Which (function, blob, ETag) were delivered, in a JSON file, so that a restart does not redeliver."""

    def __init__(self, path: Path) -> None:
        self._path = path
        self._lock = threading.Lock()
        try:
            self._entries: dict[str, dict[str, str]] = json.loads(path.read_text())
        except FileNotFoundError:
            self._entries = {}
        except ValueError:
            logger.warning("blob receipts file %s is unreadable; starting afresh", path)
            self._entries = {}

    def __contains__(self, key: str) -> bool:
        with self._lock:
            return key in self._entries

    def add(self, key: str, status: str) -> None:
        with self._lock:
            self._entries[key] = {"status": status, "at": datetime.now(UTC).isoformat()}
            write_json_atomically(self._path, self._entries)


class BlobPoller:
    """Polls one watch's container every `interval_s` until `stopping` is set."""

    def __init__(
        self,
        watch: BlobWatch,
        *,
        service: BlobServiceClient,
        receipts: BlobReceipts,
        deliver: BlobDelivery,
        stopping: threading.Event,
        interval_s: float,
        poison_threshold: int = POISON_BLOB_THRESHOLD,
    ) -> None:
        self.watch = watch
        self._service = service
        self._receipts = receipts
        self._deliver = deliver
        self._stopping = stopping
        self._interval_s = interval_s
        self._poison_threshold = poison_threshold
        self._failures: dict[str, int] = {}

    def run(self) -> None:
        watch, failing = self.watch, False
        while not self._stopping.is_set():
            try:
                self.poll_once()
                failing = False
            except Exception as exc:
                log = logger.debug if failing else logger.warning
                log("blob poll of %s for %s failed: %s", watch.container, watch.function.name, exc)
                failing = True
            self._stopping.wait(self._interval_s)

    def poll_once(self) -> None:
        """One scan of the container: every (blob, ETag) without a receipt is delivered."""
        watch = self.watch
        container = self._service.get_container_client(watch.container)
        for blob in container.list_blobs(name_starts_with=watch.prefix or None):
            if self._stopping.is_set():
                return
            if not watch.matches(blob.name):
                continue
            etag = str(blob.etag).strip('"')
            key = f"{watch.function.name}|{self._service.url}{watch.container}/{blob.name}|{etag}"
            if key in self._receipts:
                continue
            try:
                self._deliver(watch.function, watch.container, blob.name)
            except Exception:
                self._failed(key, blob.name, etag)
                continue
            self._failures.pop(key, None)
            self._receipts.add(key, "delivered")

    def _failed(self, key: str, blob_name: str, etag: str) -> None:
        watch = self.watch
        tries = self._failures.get(key, 0) + 1
        self._failures[key] = tries
        if tries >= self._poison_threshold:
            logger.exception(
                "%s failed on %s/%s (ETag %s) %d times; giving up on this version (poison blob)",
                watch.function.name,
                watch.container,
                blob_name,
                etag,
                tries,
            )
            self._receipts.add(key, "poison")
            self._failures.pop(key, None)
        else:
            logger.exception(
                "%s failed on %s/%s (try %d of %d); retrying on the next poll",
                watch.function.name,
                watch.container,
                blob_name,
                tries,
                self._poison_threshold,
            )
