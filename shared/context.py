"""What a use case needs: settings, storage, the ledger, the engine and a clock. Built once per process."""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from datetime import datetime

from shared.adapters.leases import EvaluationUnderWay, Leases
from shared.adapters.ledger import RunLedger
from shared.adapters.notifications import EventGridNotifier, NoNotifier, Notifier, announce
from shared.adapters.storage import BlobStore
from shared.domain.clock import utc_now
from shared.domain.runs import RunRecord
from shared.engine import build_engine, engine_profile
from shared.engine.base import Engine
from shared.engine.profile import EngineProfile
from shared.settings import Settings, get_settings


@dataclass
class AppContext:
    settings: Settings
    store: BlobStore
    ledger: RunLedger
    engine_factory: Callable[[], Engine]
    notifier: Notifier = field(default_factory=NoNotifier)
    now: Callable[[], datetime] = utc_now
    _engine: Engine | None = field(default=None, init=False, repr=False)

    def __post_init__(self) -> None:
        self.ledger.on_transition = self._announce

    def _announce(self, before: RunRecord, after: RunRecord) -> None:
        announce(self.notifier, after)  # the notifier as it is now: tests and hosts may replace it

    @classmethod
    def from_settings(cls, settings: Settings, engine_factory: Callable[[], Engine] | None = None) -> AppContext:
        store = BlobStore.from_settings(settings)
        notifier: Notifier = NoNotifier()
        if settings.notify_topic_endpoint:
            key = settings.notify_topic_key.get_secret_value() if settings.notify_topic_key else None
            notifier = EventGridNotifier(settings.notify_topic_endpoint, key, settings.storage_client_id)
        return cls(
            settings=settings,
            store=store,
            ledger=RunLedger(store, settings.runs_container),
            engine_factory=engine_factory or (lambda: build_engine(settings, store).engine),
            notifier=notifier,
        )

    @property
    def profile(self) -> EngineProfile:
        """What the configured engine implies (its base model, event topic, endpoint scope...): no engine needed."""
        return engine_profile(self.settings)

    def changing_endpoint(self, name: str, *, wait_s: float | None = None) -> AbstractContextManager[None]:
        """Hold the endpoint's lease for one change to it (ENDPOINT_LEASE_WAIT_S to get it, then EndpointBusy)."""
        leases = Leases(self.store, self.settings.runs_container)
        wait = self.settings.endpoint_lease_wait_s if wait_s is None else wait_s
        return leases.hold(f"endpoints/{name}", wait_s=wait)

    def evaluating(self, run_id: str) -> AbstractContextManager[None]:
        """Hold the run's evaluation lease while it is smoke-tested, evaluated and shifted: a duplicate delivery
        or the sweep, arriving meanwhile, gets EvaluationUnderWay at once instead of asking the same questions."""
        leases = Leases(self.store, self.settings.runs_container)
        return leases.hold(f"evaluations/{run_id}", wait_s=0, busy=EvaluationUnderWay)

    @property
    def engine(self) -> Engine:
        """Built on first use: intake of an invalid dataset never needs one."""
        if self._engine is None:
            self._engine = self.engine_factory()
        return self._engine


_installed: AppContext | None = None


def get_context() -> AppContext:
    global _installed
    if _installed is None:
        _installed = AppContext.from_settings(get_settings())
    return _installed


def install_context(context: AppContext | None) -> None:
    """Use this context for every handler in the process (the dev host, the demo and tests do); None resets."""
    global _installed
    _installed = context
