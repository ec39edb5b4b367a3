"""What a run and an endpoint cost (shared/domain/pricing.py), on a small table written here: figures by hand.

The table: one SKU of 2 GPUs at 120 effective TFLOPS each, 4.00 an hour; a 10B-parameter model. On one node it
trains 2 × 120e12 / (6 × 10e9) = 4,000 tokens/s.
"""

from __future__ import annotations

import json

import pytest

from shared.domain.errors import InvalidInput
from shared.domain.pricing import (
    InvalidPriceTable,
    OverBudget,
    PriceTable,
    UnknownPrice,
    actual_cost,
    builtin_price_table,
    check_budget,
    endpoint_cost,
    estimate_run,
    money,
    parse_price_table,
    price_table,
)
from shared.engine.azureml.dry_run import KNOWN_GPUS_PER_NODE
from shared.engine.azureml.foundation import INFERENCE_SIZE_PREFERENCE
from shared.settings import Settings

SKU = "Standard_Test_A100"
ENTRY = {"per_hour": 4.0, "gpus": 2, "gpu": "A100", "effective_tflops_per_gpu": 120.0}
TABLE = {
    "source": "https://example.test/prices",
    "retrieved": "2026-11-30",
    "currency": "USD",
    "region": "testregion",
    "note": "written for the tests",
    "throughput_source": "by hand",
    "skus": {SKU: ENTRY},
    "models": {"Big-Model": 10.0, "smollm2-135m-instruct": 0.135, "bigger-local": 0.27},
    "local": {"per_hour": 0.0, "tokens_per_second": {"tiny": 2000.0, "smollm2-135m-instruct": 50.0}, "source": "test"},
}


def table(**changes: object) -> PriceTable:
    return parse_price_table(json.dumps({**TABLE, **changes}).encode())


def azureml_estimate(prices: PriceTable | None = None, **overrides: object):
    arguments: dict = {
        "engine": "azureml",
        "base_model": "azureml://registries/azureml/models/Big-Model/versions/3",
        "instance_type": SKU,
        "nodes": 1,
        "train_rows": 10_000,
        "epochs": 3,
        "tokens_per_row": 120.0,
    }
    return estimate_run(prices or table(), **{**arguments, **overrides})


# -- the table ---------------------------------------------------------------------------------------------------


def test_the_builtin_table_prices_every_size_the_app_names():
    # given the fine-tuning sizes the dry run knows, the default fine-tuning size and the inference sizes
    prices = builtin_price_table()
    default = Settings.model_fields["azureml_finetune_instance_type"].default

    # then each has a price, with the GPUs per node the dry run assumes
    assert prices.currency == "USD"
    assert {size: getattr(prices.sku(size), "gpus", None) for size in KNOWN_GPUS_PER_NODE} == KNOWN_GPUS_PER_NODE
    assert prices.sku(default) is not None
    assert all(prices.sku(size) is not None for size in INFERENCE_SIZE_PREFERENCE)
    assert prices.parameters_billion(Settings.model_fields["base_model_id"].default) == 14.7
    assert price_table(None) is prices


def test_an_override_table_replaces_the_builtin_one():
    override = price_table(json.dumps(TABLE).encode())

    assert override.source == "https://example.test/prices"
    assert override.sku(SKU) is not None


def test_sku_lookup_ignores_case_and_model_lookup_takes_a_registry_id_or_a_name():
    prices = table()

    assert prices.sku("standard_test_a100") == prices.sku("STANDARD_TEST_A100") == prices.sku(SKU)
    assert prices.sku("Standard_Other") is None
    assert prices.parameters_billion("azureml://registries/azureml/models/Big-Model/versions/8") == 10.0
    assert prices.parameters_billion("azureml://registries/azureml/models/big-model/labels/latest") == 10.0
    assert prices.parameters_billion("BIG-MODEL") == 10.0
    assert prices.parameters_billion("Phi-4") is None


@pytest.mark.parametrize(
    ("changes", "named"),
    [
        ({"skus": {SKU: {**ENTRY, "per_hour": -1}}}, f"skus.{SKU}.per_hour"),
        ({"skus": {SKU: {**ENTRY, "gpus": 0}}}, f"skus.{SKU}.gpus"),
        ({"retrieved": "yesterday"}, "retrieved"),
        ({"currency": None}, "currency"),
        ({"surcharge": 1.0}, "surcharge"),
    ],
)
def test_a_bad_table_is_refused_naming_the_key(changes: dict, named: str):
    with pytest.raises(InvalidPriceTable) as refused:
        table(**changes)

    assert refused.value.code == "invalid_price_table"
    assert isinstance(refused.value, InvalidInput)
    assert named in refused.value.message


def test_a_table_that_is_not_json_or_lacks_a_key_is_refused():
    missing = {key: value for key, value in TABLE.items() if key != "local"}

    with pytest.raises(InvalidPriceTable, match="JSON"):
        parse_price_table(b"{not json")
    with pytest.raises(InvalidPriceTable, match="local: Field required"):
        parse_price_table(json.dumps(missing).encode())


# -- before a run ------------------------------------------------------------------------------------------------


def test_an_azureml_run_is_estimated_from_tokens_throughput_and_price():
    # when 10,000 rows × 3 epochs × 120 tokens = 3.6M tokens are trained at 4,000 tokens/s on one node
    estimate = azureml_estimate()

    # then it runs 3.6e6 / 4,000 s = 0.25 h on 2 GPUs, at 4.00 a node-hour
    assert estimate.billed_tokens == 3_600_000
    assert estimate.tokens_per_second == pytest.approx(4000.0)
    assert estimate.gpus == 2
    assert estimate.machine_hours == pytest.approx(0.25)
    assert estimate.gpu_hours == pytest.approx(0.5)
    assert estimate.price_per_hour == 4.0
    assert estimate.cost == 1.00
    assert estimate.summary() == f"≈ 3.6M tokens, 0.5 GPU-hours on 1 × {SKU}, ≈ $1.00"
    assert any("6 FLOPs per parameter" in line for line in estimate.assumptions)
    assert any("2026-11-30" in line and "4 USD per node-hour" in line for line in estimate.assumptions)


def test_more_nodes_finish_sooner_for_the_same_cost():
    estimate = azureml_estimate(nodes=2)

    assert (estimate.gpus, estimate.tokens_per_second) == (4, pytest.approx(8000.0))
    assert estimate.machine_hours == pytest.approx(0.125)
    assert estimate.cost == 1.00


def test_max_steps_caps_the_rows_trained():
    # when 30,000 rows would be trained but max_steps 100 of 16 rows stops at 1,600: 192,000 tokens
    estimate = azureml_estimate(max_steps=100, effective_batch=16)

    # then 192,000 / 4,000 s = 0.01333 h, 0.0533 → 0.05
    assert estimate.billed_tokens == 192_000
    assert estimate.machine_hours == pytest.approx(192_000 / 4000 / 3600)
    assert estimate.cost == 0.05
    assert any("1,600" in line for line in estimate.assumptions)


def test_max_steps_beyond_the_data_changes_nothing():
    assert azureml_estimate(max_steps=10_000, effective_batch=16).billed_tokens == 3_600_000


def test_an_unknown_model_is_assumed_to_have_7b_parameters():
    estimate = azureml_estimate(base_model="azureml://registries/azureml/models/Mystery/versions/1")

    assert estimate.tokens_per_second == pytest.approx(2 * 120e12 / (6 * 7e9))
    assert any("7B assumed" in line for line in estimate.assumptions)


def test_an_unknown_instance_type_is_refused_naming_it_and_the_setting():
    with pytest.raises(UnknownPrice) as refused:
        azureml_estimate(instance_type="Standard_Unpriced")

    assert refused.value.code == "unknown_price"
    assert "Standard_Unpriced" in refused.value.message
    assert "PRICE_TABLE_FILE" in refused.value.message


def test_a_local_run_costs_nothing_and_shows_its_hours():
    # when 200 rows × 75 tokens = 15,000 tokens train at the measured 50 tokens/s
    estimate = estimate_run(
        table(),
        engine="local",
        base_model="smollm2-135m-instruct",
        instance_type=None,
        nodes=1,
        train_rows=200,
        epochs=1,
        tokens_per_row=75.0,
    )

    # then 15,000 / 50 s = 0.0833 h, free
    assert (estimate.gpus, estimate.price_per_hour, estimate.cost) == (0, 0.0, 0.0)
    assert estimate.machine_hours == pytest.approx(15_000 / 50 / 3600)
    assert estimate.gpu_hours == 0.0
    assert estimate.summary() == "≈ 15.0k tokens, 0.083 machine-hours on the local machine, ≈ $0.00"


def test_a_local_model_without_a_figure_is_scaled_from_smollm2_or_left_unestimated():
    def local(base_model: str):
        return estimate_run(
            table(),
            engine="local",
            base_model=base_model,
            instance_type=None,
            nodes=1,
            train_rows=10,
            epochs=1,
            tokens_per_row=100.0,
        )

    # twice SmolLM2's parameters: half its 50 tokens/s
    assert local("bigger-local").tokens_per_second == pytest.approx(25.0)
    unknown = local("/models/somewhere/else")
    assert (unknown.tokens_per_second, unknown.machine_hours) == (0.0, 0.0)
    assert any("no throughput known" in line for line in unknown.assumptions)
    assert "duration unknown" in unknown.summary()


def test_negative_counts_are_refused():
    with pytest.raises(InvalidInput, match="nodes"):
        azureml_estimate(nodes=0)
    with pytest.raises(InvalidInput, match="tokens_per_row"):
        azureml_estimate(tokens_per_row=-1.0)


# -- the budget --------------------------------------------------------------------------------------------------


def test_a_run_over_budget_is_refused_with_its_figures():
    with pytest.raises(OverBudget) as refused:
        check_budget(azureml_estimate(), 0.99, limit_source="MAX_RUN_COST")

    assert (refused.value.code, refused.value.http_status) == ("over_budget", 422)
    assert refused.value.message == (
        f"estimated cost USD 1.00 exceeds MAX_RUN_COST 0.99 (≈ 3.6M tokens, 0.5 GPU-hours on 1 × {SKU}, ≈ $1.00)"
    )


def test_a_run_exactly_at_the_budget_or_without_one_goes_ahead():
    estimate = azureml_estimate()

    check_budget(estimate, 1.00, limit_source="MAX_RUN_COST")
    check_budget(estimate, None, limit_source="MAX_RUN_COST")


# -- after a run, and endpoints ----------------------------------------------------------------------------------


def test_a_finished_run_costs_its_duration_times_nodes_times_price():
    # 5,400 s = 1.5 h on 2 nodes at 4.00
    cost = actual_cost(table(), engine="azureml", instance_type=SKU.lower(), nodes=2, seconds=5400)

    assert (cost.machine_hours, cost.price_per_hour, cost.cost) == (1.5, 4.0, 12.00)
    assert cost.summary() == "1.5 hours on 2 × standard_test_a100, $12.00"
    assert actual_cost(table(), engine="local", instance_type=None, nodes=1, seconds=5400).cost == 0.0


def test_an_endpoint_costs_its_instances_and_saves_the_hours_torn_down():
    # 3 instances at 4.00: 12.00 an hour; 10 h deployed; 5.5 h torn down
    cost = endpoint_cost(
        table(), engine="azureml", instance_type=SKU, instance_count=3, hours_deployed=10, hours_torn_down=5.5
    )

    assert cost.per_hour == 12.0
    assert cost.cost_so_far == 120.00
    assert cost.saved == 66.00 == cost.hours_torn_down * cost.per_hour


def test_a_local_endpoint_is_free_and_an_unpriced_one_is_refused():
    local = endpoint_cost(
        table(), engine="local", instance_type=None, instance_count=1, hours_deployed=3, hours_torn_down=1
    )

    assert (local.per_hour, local.cost_so_far, local.saved) == (0.0, 0.0, 0.0)
    with pytest.raises(UnknownPrice):
        endpoint_cost(
            table(), engine="azureml", instance_type="Standard_X", instance_count=1, hours_deployed=1, hours_torn_down=0
        )


def test_money_is_written_with_the_dollar_sign_only_for_usd():
    assert money(1.466, "USD") == "$1.47"
    assert money(1.466, "EUR") == "1.47 EUR"
