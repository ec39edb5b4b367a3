"""A failed Azure ML job's cause and whether it is worth resubmitting, read by the adapter from run history over the
HTTP-level fake (tests/engine/azureml_service/): a system error or a preempted node is transient, a user error or
an unknown cause is not."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from shared.domain.errors import EngineError
from shared.domain.finetune import parameters_for
from shared.domain.jobs import JobStatus
from shared.engine.azureml.engine import AzureMLEngine
from shared.engine.azureml.job_failures import FailedRun, JobFailure, classify
from tests.engine.azureml_service import recorded
from tests.engine.azureml_service.names import WORKSPACE_ID
from tests.engine.azureml_service.service import AzureMLService
from tests.engine.azureml_service.transport import Request, Response
from tests.engine.contract import fresh_run_id, job_specs
from tests.engine.test_azureml_engine_contract import BASE_MODEL_ID, adapter_over, prepared_splits

PREEMPTED = (
    "AzureMLCompute job failed. PreemptionError: Nodes of this job got pre-empted. Check if the run has failed or "
    "restarted. Reason: Received pre-emption warning signal"
)  # the service's words, microsoft/MLOpsPython#346
PIPELINE_FAILED = recorded.run_error(
    "UserError", "Pipeline has failed child jobs. Failed nodes: /chat_completion_pipeline."
)
OUT_OF_GPU_MEMORY = recorded.run_error(
    "UserError", "CUDA out of memory. Try a smaller per_device_train_batch_size.", "Memory"
)


@pytest.fixture(scope="module")
def service() -> Iterator[AzureMLService]:
    service = AzureMLService()
    yield service
    service.close()


@pytest.fixture(scope="module")
def engine(service: AzureMLService) -> AzureMLEngine:
    return adapter_over(service)


def submitted(engine: AzureMLEngine) -> str:
    spec = job_specs(BASE_MODEL_ID, parameters_for(), prepared_splits)(fresh_run_id())
    return engine.submit_job(spec).name


def logs_hint(name: str) -> str:
    """The studio URL the SDK makes of the job's Studio service: with the tenant of the fake credential's tokens."""
    tenant = "66666666-7777-8888-9999-000000000000"
    return f"see its logs in Azure ML studio: https://ml.azure.com/runs/{name}?wsid={WORKSPACE_ID}&tid={tenant}"


def test_a_system_error_in_the_finetune_step_is_transient_with_its_cause(service, engine):
    name = submitted(engine)
    error = recorded.run_error("SystemError", "An internal error occurred while loading the model.", "ClientError")
    service.fail_job(name, error, job_error=PIPELINE_FAILED)

    job = engine.get_job(name)

    assert job.status == JobStatus.FAILED
    assert job.failure_transient is True  # the step's SystemError, not the pipeline's UserError, is the cause
    assert job.error == (
        "pipeline job Failed (chat_completion_finetune: SystemError/ClientError: An internal error occurred while "
        f"loading the model.); {logs_hint(name)}"
    )
    assert ("runs.get_details", f"{name}_finetune") in service.calls


def test_a_preempted_node_is_transient_though_the_service_files_it_under_user_error(service, engine):
    name = submitted(engine)
    service.fail_job(name, recorded.run_error("UserError", PREEMPTED), job_error=PIPELINE_FAILED)

    job = engine.get_job(name)

    assert job.failure_transient is True
    assert job.error == f"pipeline job Failed (chat_completion_finetune: UserError: {PREEMPTED}); {logs_hint(name)}"


def test_a_user_error_is_not_transient(service, engine):
    name = submitted(engine)
    service.fail_job(name, OUT_OF_GPU_MEMORY, job_error=PIPELINE_FAILED)

    job = engine.get_job(name)

    assert job.status == JobStatus.FAILED
    assert job.failure_transient is False
    assert job.error == (
        "pipeline job Failed (chat_completion_finetune: UserError/Memory: CUDA out of memory. Try a smaller "
        f"per_device_train_batch_size.); {logs_hint(name)}"
    )


def test_a_preempted_step_beside_a_user_error_is_not_transient(service, engine):
    name = submitted(engine)
    service.fail_job(name, recorded.run_error("UserError", PREEMPTED), step="model_import")
    service.fail_job(name, OUT_OF_GPU_MEMORY, job_error=PIPELINE_FAILED)

    job = engine.get_job(name)

    assert job.failure_transient is False
    assert job.error == (
        f"pipeline job Failed (chat_completion_model_import: UserError: {PREEMPTED}; chat_completion_finetune: "
        f"UserError/Memory: CUDA out of memory. Try a smaller per_device_train_batch_size.); {logs_hint(name)}"
    )


def test_a_failure_without_any_error_is_not_transient(service, engine):
    name = submitted(engine)
    service.fail_job(name, None)

    job = engine.get_job(name)

    assert job.failure_transient is False
    assert job.error == f"pipeline job Failed; {logs_hint(name)}"


def test_a_job_that_failed_before_its_steps_is_read_from_its_own_error(service, engine):
    name = submitted(engine)
    service.fail_job(
        name, None, step="", job_error=recorded.run_error("ServiceError", "The job could not be scheduled.")
    )

    job = engine.get_job(name)

    assert job.failure_transient is True
    assert (
        job.error == f"pipeline job Failed ({name}: ServiceError: The job could not be scheduled.); {logs_hint(name)}"
    )


def test_a_canceled_job_is_not_read_further_and_not_transient(service, engine):
    name = submitted(engine)
    service.set_job_status(name, "Canceled")

    job = engine.get_job(name)

    assert (job.status, job.failure_transient) == (JobStatus.CANCELED, False)
    assert job.error == f"pipeline job Canceled; {logs_hint(name)}"
    assert ("runs.get_details", name) not in service.calls


def test_a_run_history_that_does_not_answer_is_retried_not_guessed(service, engine, monkeypatch):
    name = submitted(engine)
    service.fail_job(name, recorded.run_error("SystemError", "An internal error occurred."))
    adapter = service.transport.session.get_adapter("https://")
    answer = adapter._handler

    def unavailable(request: Request) -> Response:
        if request.path.endswith(f"/runs/{name}/details"):
            return Response(503, recorded.error("ServiceUnavailable", "run history is unavailable"))
        return answer(request)

    monkeypatch.setattr(adapter, "_handler", unavailable)

    with pytest.raises(EngineError) as raised:
        engine.get_job(name)

    assert (raised.value.code, raised.value.transient) == ("azureml_unavailable", True)


@pytest.mark.parametrize(
    ("code", "message", "inner", "transient"),
    [
        ("SystemError", "internal", None, True),
        ("ServiceError", "internal", None, True),
        ("TransientError", "try again", None, True),
        ("UserError", "bad data", "PreemptionError", True),
        ("UserError", "Execution failed. User process 'python' exited with status code 1.", None, False),
        ("ValidationError", "the input is invalid", None, False),
        ("AzureStorageError", "the blob is missing", None, False),
        ("UserError", "quota exceeded for family NCADSA100v4", "QuotaExceeded", False),
    ],
)
def test_which_root_codes_are_transient(code, message, inner, transient):
    failure = classify(FailedRun("job", None), [FailedRun("step", {"error": recorded.run_error(code, message, inner)})])

    assert failure.transient is transient


def test_an_unreadable_error_is_not_transient():
    unreadable = [FailedRun("step", {"error": "SystemError"}), FailedRun("other", {"error": {"error": {"code": 3}}})]

    assert classify(FailedRun("job", {"error": None}), unreadable) == JobFailure(cause=None, transient=False)
