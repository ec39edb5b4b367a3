"""The Engine contract, run against the real local engine with the tiny model and a real Azurite."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest

from shared.adapters.azurite import Azurite
from shared.adapters.storage import BlobStore
from shared.domain.finetune import LOCAL_PRESETS, parameters_for
from shared.engine.base import TrainingData
from shared.engine.local.engine import LocalEngine
from shared.settings import Settings
from tests.engine.contract import EngineContract, job_specs, trained  # noqa: F401 (the suite's shared fixture)

SAMPLE = Path(__file__).resolve().parents[2] / "samples" / "ultrachat_sample.jsonl"


@pytest.fixture(scope="module")
def store(azurite: Azurite) -> BlobStore:
    return BlobStore.from_settings(Settings(storage_connection_string=azurite.connection_string))


@pytest.fixture(scope="module")
def training_data(store: BlobStore) -> TrainingData:
    container = f"prepared-{uuid.uuid4().hex[:8]}"
    store.ensure_container(container)
    lines = SAMPLE.read_bytes().splitlines(keepends=True)
    store.write(container, "run/train.jsonl", b"".join(lines[:200]))
    store.write(container, "run/test.jsonl", b"".join(lines[200:]))
    return TrainingData(container=container, train_blob="run/train.jsonl", test_blob="run/test.jsonl")


@pytest.fixture(scope="module")
def engine(tmp_path_factory: pytest.TempPathFactory, store: BlobStore):
    engine = LocalEngine(tmp_path_factory.mktemp("local-engine"), store, base_model="tiny")
    yield engine
    for endpoint in engine.list_endpoints():
        engine.delete_endpoint(endpoint.name)


@pytest.fixture(scope="module")
def job_spec(training_data: TrainingData):
    return job_specs("tiny", parameters_for(LOCAL_PRESETS["tiny"]), lambda run_id: training_data)


@pytest.fixture(scope="module")
def wait_s() -> float:
    return 240.0


class TestLocalEngine(EngineContract):
    pass
