"""The Engine contract: behaviour every adapter must show, whatever it runs on.

An adapter's test module subclasses EngineContract, imports the `trained` fixture, and provides three fixtures:
  engine        the adapter under test (module scope: one trained job is shared by the suite)
  job_spec      a factory run_id -> JobSpec whose training data the adapter can read (`job_specs` makes one)
  wait_s        how long a job may take to finish here
The tests read as the lifecycle uses the port: submit, follow, review, register, deploy, serve, tear down.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable

import pytest

from shared.domain.errors import EngineError
from shared.domain.finetune import FineTuneParameters
from shared.domain.jobs import JobStatus
from shared.domain.scoring import answer_text, scoring_request
from shared.domain.tags import MANAGED_TAG, RUN_TAG
from shared.engine.base import Engine, JobSpec, ModelRef, ScoringRequest, TrainingData


def wait_for_terminal(engine: Engine, name: str, timeout_s: float) -> JobStatus:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        status = engine.get_job(name).status
        if status.is_terminal:
            return status
        time.sleep(0.5)
    raise AssertionError(f"job {name} still {engine.get_job(name).status} after {timeout_s} s")


def wait_for_deployment(engine: Engine, endpoint_name: str, deployment_name: str, timeout_s: float = 60) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        deployment = engine.get_deployment(endpoint_name, deployment_name)
        assert deployment is not None and not deployment.has_failed, deployment
        if deployment.is_ready:
            return
        time.sleep(0.2)
    raise AssertionError(f"deployment {deployment_name} not ready after {timeout_s} s")


def job_specs(
    base_model: str, parameters: FineTuneParameters, data: Callable[[str], TrainingData]
) -> Callable[[str], JobSpec]:
    """A `job_spec` factory: the run id names the job and tags it, as the lifecycle's specs do."""

    def make(run_id: str) -> JobSpec:
        return JobSpec(
            run_id=run_id, base_model=base_model, parameters=parameters, data=data(run_id), tags={RUN_TAG: run_id}
        )

    return make


def fresh_run_id() -> str:
    return "ft-" + uuid.uuid4().hex[:12]


@pytest.fixture(scope="module")
def trained(engine: Engine, job_spec, wait_s: float):
    """One job trained to completion, shared by the tests that need its results. Adapter modules import it."""
    spec = job_spec(fresh_run_id())
    engine.submit_job(spec)
    assert wait_for_terminal(engine, spec.run_id, wait_s) == JobStatus.COMPLETED, engine.get_job(spec.run_id)
    return spec


class EngineContract:
    evaluates_base_model = True  # the job reports the base model's loss on the test split

    # -- jobs ------------------------------------------------------------------------------------

    def test_submitting_the_same_job_twice_creates_one_job(self, engine: Engine, job_spec):
        # given a new job
        spec = job_spec(fresh_run_id())

        # when it is submitted twice
        first = engine.submit_job(spec)
        second = engine.submit_job(spec)

        # then both answers name the same job, tagged with the run
        assert first.name == second.name == spec.run_id
        assert engine.get_job(spec.run_id).tags[RUN_TAG] == spec.run_id
        engine.cancel_job(spec.run_id)

    def test_a_job_can_be_canceled(self, engine: Engine, job_spec, wait_s: float):
        spec = job_spec(fresh_run_id())
        engine.submit_job(spec)

        canceled = engine.cancel_job(spec.run_id)

        assert canceled.status == JobStatus.CANCELED or wait_for_terminal(engine, spec.run_id, wait_s) == (
            JobStatus.CANCELED
        )
        assert engine.cancel_job(spec.run_id).status == JobStatus.CANCELED  # idempotent

    def test_an_unknown_job_is_a_clear_error(self, engine: Engine):
        with pytest.raises(EngineError) as raised:
            engine.get_job("ft-000000000000")
        assert raised.value.code == "job_not_found"

    def test_training_lowers_the_held_out_loss(self, engine: Engine, trained):
        metrics = engine.job_metrics(trained.run_id)

        assert metrics.eval_loss is not None
        assert metrics.loss_curve, "the loss curve has points"
        if self.evaluates_base_model:
            assert metrics.base_eval_loss is not None and metrics.eval_loss < metrics.base_eval_loss
        else:
            assert metrics.base_eval_loss is None, "an engine that does not evaluate the base model says so"
            assert metrics.loss_curve[-1][1] < metrics.loss_curve[0][1]

    # -- models ----------------------------------------------------------------------------------

    def test_registering_a_run_twice_returns_the_same_version(self, engine: Engine, trained):
        name = f"contract-{trained.run_id}"
        tags = {RUN_TAG: trained.run_id, "dataset_sha256": "ab" * 32}

        first = engine.register_model(trained.run_id, name, tags)
        second = engine.register_model(trained.run_id, name, tags)

        assert (first.name, first.version) == (second.name, second.version)
        assert first.tags[RUN_TAG] == trained.run_id
        assert engine.get_model(name, version=first.version) == first
        engine.set_model_alias(first, "champion")
        assert engine.get_model(name, alias="champion").version == first.version
        assert engine.get_model(f"absent-{trained.run_id}") is None

    # -- endpoints -------------------------------------------------------------------------------

    def test_a_deployment_serves_the_scoring_contract_and_is_torn_down(self, engine: Engine, trained):
        # given a registered model and a managed endpoint
        model: ModelRef = engine.register_model(trained.run_id, f"served-{trained.run_id}", {RUN_TAG: trained.run_id})
        name = f"ep-{trained.run_id[3:]}"
        endpoint = engine.create_or_update_endpoint(name, {MANAGED_TAG: "true"})
        assert engine.create_or_update_endpoint(name, {MANAGED_TAG: "true"}).scoring_uri == endpoint.scoring_uri

        # when a deployment is created, it starts at 0% traffic, and becomes ready
        engine.create_deployment(name, "blue", model)
        assert engine.create_deployment(name, "blue", model).name == "blue"  # idempotent
        wait_for_deployment(engine, name, "blue")
        assert dict(next(e for e in engine.list_endpoints() if e.name == name).traffic) == {"blue": 0}

        # then, pinned by name, it answers the seed's request
        pinned = ScoringRequest(name, scoring_request([{"role": "user", "content": "Hi!"}]), deployment_name="blue")
        answer = answer_text(engine.invoke(pinned))
        assert isinstance(answer, str)

        # and with all traffic it answers unpinned, and the endpoint counts the requests
        engine.set_traffic(name, {"blue": 100})
        engine.invoke(ScoringRequest(name, scoring_request([{"role": "user", "content": "Hello?"}])))
        listed = next(e for e in engine.list_endpoints() if e.name == name)
        assert listed.is_managed and listed.request_count >= 2 and listed.last_request_at is not None
        keys = engine.get_keys(name)
        assert keys.primary and keys.secondary and keys.primary != keys.secondary

        # when the endpoint is deleted, it is gone
        engine.delete_deployment(name, "blue")
        engine.delete_endpoint(name)
        engine.delete_endpoint(name)  # idempotent
        assert name not in {e.name for e in engine.list_endpoints()}
