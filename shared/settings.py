"""The app's settings: one typed object, read from app settings (Azure) or the environment (locally).

Nothing else in the app reads os.environ. Names are fixed by DESIGN.md; every one is documented in
local.settings.json.example.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import AliasChoices, BeforeValidator, Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

# The blob trigger's `connection` names this app setting (or its `__blobServiceUri` form for managed identity).
STORAGE_CONNECTION_SETTING = "DatasetStorage"


def _empty_is_unset(value: Any) -> Any:
    """An app setting written empty (the template writes every setting) means "not set"."""
    return None if isinstance(value, str) and not value.strip() else value


class Settings(BaseSettings):
    model_config = SettingsConfigDict(populate_by_name=True, extra="ignore", frozen=True)

    # Engine
    engine: Literal["local", "azureml"] = Field("local", alias="AUTOPILOT_ENGINE")
    local_base_model: str = Field("smollm2-135m-instruct", alias="LOCAL_BASE_MODEL")
    base_model_id: str = Field("azureml://registries/azureml/models/Phi-4/versions/8", alias="BASE_MODEL_ID")
    local_state_dir: Path = Field(Path(".state"), alias="LOCAL_STATE_DIR")
    # Where the local engine POSTs its Azure ML-shaped job events: the Functions Event Grid webhook of on_job_event
    # (Core Tools or `autopilot serve`; the dev host adds its function key). Empty: no webhook.
    local_events_webhook: str | None = Field(
        "http://127.0.0.1:7071/runtime/webhooks/eventgrid?functionName=on_job_event", alias="LOCAL_EVENTS_WEBHOOK"
    )

    # Storage
    storage_connection_string: SecretStr | None = Field(
        None, validation_alias=AliasChoices(STORAGE_CONNECTION_SETTING, "storage_connection_string")
    )
    storage_account_url: str | None = Field(
        None,
        validation_alias=AliasChoices(f"{STORAGE_CONNECTION_SETTING}__blobServiceUri", "storage_account_url"),
    )
    storage_client_id: str | None = Field(
        None, validation_alias=AliasChoices(f"{STORAGE_CONNECTION_SETTING}__clientId", "storage_client_id")
    )
    storage_retries: int = Field(3, ge=0, le=10, alias="STORAGE_RETRIES")
    # the longest one storage call may spend retrying: the API answers 503 within seconds when storage is down
    storage_retry_budget_s: float = Field(4.0, gt=0, le=60, alias="STORAGE_RETRY_BUDGET_S")
    # how long a change to an endpoint waits for another run's change to it (then it is delivered again)
    endpoint_lease_wait_s: float = Field(60.0, ge=0, le=600, alias="ENDPOINT_LEASE_WAIT_S")
    datasets_container: str = Field("datasets", alias="DATASETS_CONTAINER")
    runs_container: str = Field("runs", alias="RUNS_CONTAINER")
    prepared_prefix: str = Field("prepared/", alias="PREPARED_PREFIX")

    # Validation
    test_fraction: float = Field(0.1, ge=0.0, lt=1.0, alias="TEST_FRACTION")
    max_invalid_fraction: float = Field(0.0, ge=0.0, lt=1.0, alias="MAX_INVALID_FRACTION")
    max_line_bytes: int = Field(1 << 20, gt=0, alias="MAX_LINE_BYTES")
    max_listed_problems: int = Field(100, ge=0, alias="MAX_LISTED_PROBLEMS")
    max_request_bytes: int = Field(100 * 1024 * 1024, gt=0, alias="MAX_REQUEST_BYTES")

    # Fine-tuning parameters for runs started by uploads (JSON object; names as chat_completion_pipeline's inputs),
    # over the defaults and the local engine's preset for the base model.
    finetune_overrides: dict[str, Any] = Field(default_factory=dict, alias="FINETUNE_OVERRIDES")

    # Lifecycle
    finetuned_model_suffix: str = Field("-ft-chat", alias="FINETUNED_MODEL_SUFFIX")
    gate_min_improvement: float = Field(0.02, ge=0, lt=1, alias="GATE_MIN_IMPROVEMENT")
    gate_champion_tolerance: float = Field(0.05, ge=0, alias="GATE_CHAMPION_TOLERANCE")
    keep_previous_deployment: bool = Field(False, alias="KEEP_PREVIOUS_DEPLOYMENT")
    smoke_test_timeout_s: float = Field(120.0, gt=0, alias="SMOKE_TEST_TIMEOUT_S")
    # A deployment still provisioning this long after the run began deploying is rolled back (deployment_timeout).
    deploy_timeout_minutes: float = Field(120, gt=0, alias="DEPLOY_TIMEOUT_MINUTES")
    max_step_attempts: int = Field(3, ge=1, alias="MAX_STEP_ATTEMPTS")
    notify_topic_endpoint: str | None = Field(None, alias="NOTIFY_TOPIC_ENDPOINT")
    notify_topic_key: SecretStr | None = Field(None, alias="NOTIFY_TOPIC_KEY")
    idle_minutes: float = Field(60, gt=0, alias="IDLE_MINUTES")
    idle_grace_minutes: float = Field(30, ge=0, alias="IDLE_GRACE_MINUTES")
    reconcile_after_minutes: float = Field(10, ge=0, alias="RECONCILE_AFTER_MINUTES")
    idle_sweep_schedule: str = Field("0 */15 * * * *", alias="IDLE_SWEEP_SCHEDULE")
    devhost_function_key: SecretStr | None = Field(None, alias="DEVHOST_FUNCTION_KEY")

    # The dashboard (/api/ui): anonymous at the host, authenticated by the app (README "The dashboard").
    dashboard_key: Annotated[SecretStr | None, BeforeValidator(_empty_is_unset)] = Field(None, alias="DASHBOARD_KEY")
    # Trust App Service Authentication's principal header: only where Easy Auth is on (it strips forged ones).
    dashboard_trust_easy_auth: bool = Field(False, alias="DASHBOARD_TRUST_EASY_AUTH")
    dashboard_session_hours: float = Field(8, gt=0, le=24 * 30, alias="DASHBOARD_SESSION_HOURS")

    # Cost (README "What it costs"): a price table over the built-in one, and the most a run may be estimated at.
    price_table_file: Annotated[Path | None, BeforeValidator(_empty_is_unset)] = Field(None, alias="PRICE_TABLE_FILE")
    max_run_cost: Annotated[float | None, BeforeValidator(_empty_is_unset)] = Field(None, ge=0, alias="MAX_RUN_COST")

    # The evaluation after a deployment is up at 0% (README "How a model gets promoted"): held-out conversations and
    # the forgetting probes, answered greedily by the challenger and by the champion (or the base model).
    eval_max_examples: int = Field(32, ge=1, le=1000, alias="EVAL_MAX_EXAMPLES")
    eval_max_new_tokens: int = Field(128, ge=8, le=1024, alias="EVAL_MAX_NEW_TOKENS")
    # conversations per scoring call; the local router takes at most 16 per request
    eval_batch_size: int = Field(16, ge=1, le=16, alias="EVAL_BATCH_SIZE")
    eval_timeout_s: float = Field(300.0, gt=0, alias="EVAL_TIMEOUT_S")  # per scoring call
    eval_primary_metric: Literal["rouge_l", "f1"] = Field("rouge_l", alias="EVAL_PRIMARY_METRIC")
    eval_repetition_threshold: float = Field(0.5, gt=0, le=1, alias="EVAL_REPETITION_THRESHOLD")
    eval_probes: bool = Field(True, alias="EVAL_PROBES")
    gate_score_tolerance: float = Field(0.02, ge=0, le=1, alias="GATE_SCORE_TOLERANCE")
    gate_max_degenerate_rate: float = Field(0.2, ge=0, le=1, alias="GATE_MAX_DEGENERATE_RATE")
    gate_max_forgetting_drop: float = Field(0.1, ge=0, le=1, alias="GATE_MAX_FORGETTING_DROP")
    # The optional AI-assisted judge (azure-ai-evaluation's similarity, coherence, fluency): off unless an Azure
    # OpenAI endpoint and deployment are set. Without a key, the app's managed identity signs in (Entra ID).
    azure_openai_endpoint: Annotated[str | None, BeforeValidator(_empty_is_unset)] = Field(
        None, alias="AZURE_OPENAI_ENDPOINT"
    )
    azure_openai_deployment: Annotated[str | None, BeforeValidator(_empty_is_unset)] = Field(
        None, alias="AZURE_OPENAI_DEPLOYMENT"
    )
    azure_openai_api_key: SecretStr | None = Field(None, alias="AZURE_OPENAI_API_KEY")
    azure_openai_api_version: str = Field("2024-10-21", alias="AZURE_OPENAI_API_VERSION")
    eval_judge_gates: bool = Field(False, alias="EVAL_JUDGE_GATES")  # the judge's similarity gates too
    gate_judge_tolerance: float = Field(0.25, ge=0, le=4, alias="GATE_JUDGE_TOLERANCE")

    # Unset: required for the local engine, which evaluates the base model; not for azureml, whose pipeline does not.
    gate_require_base_eval: bool | None = Field(None, alias="GATE_REQUIRE_BASE_EVAL")

    # Azure ML engine
    azure_subscription_id: str | None = Field(None, alias="AZURE_SUBSCRIPTION_ID")
    azure_resource_group: str | None = Field(None, alias="AZURE_RESOURCE_GROUP")
    azureml_workspace_name: str | None = Field(None, alias="AZUREML_WORKSPACE_NAME")
    azure_client_id: str | None = Field(None, alias="AZURE_CLIENT_ID")
    azureml_registry_name: str = Field("azureml", alias="AZUREML_REGISTRY_NAME")
    azureml_pipeline_version: str = Field("0.0.82", alias="AZUREML_PIPELINE_VERSION")
    azureml_compute: str = Field("serverless", alias="AZUREML_COMPUTE")
    azureml_finetune_instance_type: str = Field("Standard_NC24ads_A100_v4", alias="AZUREML_FINETUNE_INSTANCE_TYPE")
    azureml_datastore: str = Field("ftautopilot", alias="AZUREML_DATASTORE")
    azureml_experiment_name: str = Field("ft-autopilot", alias="AZUREML_EXPERIMENT_NAME")
    # Unset: the cheapest current size in the base model's inference list (NCv3, the notebook's old default, retires).
    azureml_inference_instance_type: Annotated[str | None, BeforeValidator(_empty_is_unset)] = Field(
        None, alias="AZUREML_INFERENCE_INSTANCE_TYPE"
    )

    @model_validator(mode="after")
    def _overrides_are_parameters(self) -> Settings:
        from shared.domain.finetune import FineTuneParameters

        try:
            FineTuneParameters.model_validate(self.finetune_overrides)
        except ValueError as exc:
            raise ValueError(f"FINETUNE_OVERRIDES: {exc}") from exc
        return self

    @model_validator(mode="after")
    def _prefix_is_a_folder(self) -> Settings:
        if not self.prepared_prefix.endswith("/") or self.prepared_prefix.startswith("/"):
            raise ValueError("PREPARED_PREFIX must be a relative folder ending with '/', e.g. 'prepared/'")
        return self

    @property
    def azureml_workspace_id(self) -> str | None:
        """The Azure ML workspace's resource id (its Event Grid topic), when its three settings are given."""
        if self.azure_subscription_id and self.azure_resource_group and self.azureml_workspace_name:
            return (
                f"/subscriptions/{self.azure_subscription_id}/resourceGroups/{self.azure_resource_group}"
                f"/providers/Microsoft.MachineLearningServices/workspaces/{self.azureml_workspace_name}"
            )
        return None


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return Settings()
