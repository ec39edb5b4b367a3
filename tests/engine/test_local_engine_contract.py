"""The Engine contract, run against the real local engine with the tiny model and a real Azurite."""

from __future__ import annotations

import json
import urllib.request
import uuid
from pathlib import Path

import pytest

from shared.adapters.azurite import Azurite
from shared.adapters.storage import BlobStore
from shared.domain.finetune import LOCAL_PRESETS, parameters_for
from shared.domain.tags import MANAGED_TAG, RUN_TAG
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
def state_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("local-engine")


@pytest.fixture(scope="module")
def engine(state_dir: Path, store: BlobStore):
    engine = LocalEngine(state_dir, store, base_model="tiny")
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


def test_a_registered_model_is_served_with_ctranslate2(engine: LocalEngine, state_dir: Path, trained):  # noqa: F811
    # given a fine-tuned model registered in MLflow (its tokenizer apart from its weights, under components/)
    model = engine.register_model(trained.run_id, f"ct2-{trained.run_id}", {RUN_TAG: trained.run_id})
    name = f"ct-{trained.run_id[3:]}"
    engine.create_or_update_endpoint(name, {MANAGED_TAG: "true"})
    try:
        # when it is deployed
        engine.create_deployment(name, "blue", model)

        # then its deployment decodes with CTranslate2, not the transformers fallback
        config = json.loads((state_dir / "endpoints" / name / "endpoint.json").read_text())
        port = config["deployments"]["blue"]["port"]
        health = json.loads(urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=10).read())
        assert health["backend"] == "ctranslate2"
    finally:
        engine.delete_endpoint(name)
