"""The cost of a run before it runs, against a real Azurite: the estimate goes into the run and its validation
report, and a run estimated over its budget (MAX_RUN_COST, or its line's max_run_cost) is refused, not submitted."""

from __future__ import annotations

import json
from pathlib import Path

import orjson
import pytest

from shared.adapters.azurite import Azurite
from shared.context import AppContext, install_context
from shared.domain.runs import RunState
from shared.settings import Settings
from tests.conftest import settings_for
from tests.fakes import FakeEngine
from tests.functional.test_intake import VALID, only_run, read_blob, upload
from tests.registered import function

PRICES = Path(__file__).resolve().parents[2] / "shared" / "domain" / "prices.json"
on_dataset_uploaded = function("on_dataset_uploaded")
# the sample: 214 training rows of 73.72 estimated tokens, 1 epoch (SmolLM2's preset), at 28.4 tokens/s locally
SAMPLE_TOKENS = round(214 * 1 * 73.72)
SAMPLE_HOURS = SAMPLE_TOKENS / 28.4 / 3600


def priced_machine(tmp_path: Path, per_hour: float) -> Path:
    """A price table in which this machine costs `per_hour` (the built-in one bills it at zero)."""
    table = json.loads(PRICES.read_text())
    table["local"]["per_hour"] = per_hour
    path = tmp_path / "prices.json"
    path.write_text(json.dumps(table))
    return path


def context_with(settings: Settings, engine: FakeEngine) -> AppContext:
    context = AppContext.from_settings(settings, engine_factory=lambda: engine)
    context.store.ensure_container(settings.datasets_container)
    context.ledger.ensure_ready()
    install_context(context)
    return context


@pytest.fixture(autouse=True)
def uninstalled():
    yield
    install_context(None)


def test_a_run_records_its_estimate_and_its_report_shows_it(ctx: AppContext, engine: FakeEngine, settings: Settings):
    # when the sample is uploaded (the built-in table: this machine costs nothing)
    on_dataset_uploaded(upload(settings, "support/first.jsonl", VALID))

    # then the run is submitted with its estimate: the tokens, the machine time, and zero cost
    run = only_run(ctx)
    assert run.state == RunState.SUBMITTED and list(engine.jobs) == [run.run_id]
    estimate = run.cost_estimate
    assert estimate is not None
    assert (estimate.train_rows, estimate.epochs, estimate.billed_tokens, estimate.cost) == (214, 1, SAMPLE_TOKENS, 0)
    assert estimate.machine_hours == pytest.approx(SAMPLE_HOURS)
    report = orjson.loads(read_blob(ctx, run.artifacts.report_json))
    assert report["cost_estimate"]["billed_tokens"] == SAMPLE_TOKENS
    markdown = read_blob(ctx, run.artifacts.report_md).decode()
    assert "## Estimated cost of the run" in markdown
    assert f"- Billed tokens: {SAMPLE_TOKENS:,} (214 training rows x 1 epochs x 74 tokens)" in markdown


def test_a_run_over_max_run_cost_is_refused_with_the_figures(azurite: Azurite, tmp_path: Path, engine: FakeEngine):
    # given a machine at $8 an hour, and a budget of $1 (the sample is estimated at 8 x 0.154 h = $1.23)
    settings = settings_for(azurite, tmp_path, price_table_file=priced_machine(tmp_path, 8.0), max_run_cost=1.0)
    ctx = context_with(settings, engine)

    # when the sample is uploaded, twice
    client = upload(settings, "support/first.jsonl", VALID)
    on_dataset_uploaded(client)
    on_dataset_uploaded(client)

    # then one run, refused before anything was submitted, with its estimate
    run = only_run(ctx)
    assert run.state == RunState.REJECTED and engine.jobs == {}
    assert run.error is not None and run.error.code == "over_budget"
    assert run.error.message.startswith(
        f"estimated cost USD {round(SAMPLE_HOURS * 8, 2):.2f} exceeds MAX_RUN_COST 1.00"
    )
    assert run.cost_estimate is not None and run.cost_estimate.cost == round(SAMPLE_HOURS * 8, 2) == 1.23
    assert run.history[-1].reason.startswith("over_budget: estimated cost USD 1.23")
    assert (run.artifacts.train, run.artifacts.test) == (None, None)  # no prepared splits for a refused run
    assert run.artifacts.report_json is not None


def test_a_lines_max_run_cost_overrides_the_setting(azurite: Azurite, tmp_path: Path, engine: FakeEngine):
    # given the $1 budget, and two lines: one allows $2 a run, one only $0.50
    settings = settings_for(azurite, tmp_path, price_table_file=priced_machine(tmp_path, 8.0), max_run_cost=1.0)
    ctx = context_with(settings, engine)
    upload(settings, "generous/line.json", b'{"max_run_cost": 2}')
    upload(settings, "strict/line.json", b'{"max_run_cost": 0.5}')

    # when the sample goes to both
    on_dataset_uploaded(upload(settings, "generous/a.jsonl", VALID))
    on_dataset_uploaded(upload(settings, "strict/a.jsonl", VALID))

    # then the generous line's run is submitted, and the strict line's refused, naming the line's own limit
    runs = {run.line: run for run in ctx.ledger.list()}
    assert runs["generous"].state == RunState.SUBMITTED
    strict = runs["strict"]
    assert strict.state == RunState.REJECTED and strict.error is not None
    assert strict.error.message.startswith("estimated cost USD 1.23 exceeds line strict's max_run_cost 0.50")
    assert list(engine.jobs) == [runs["generous"].run_id]


def test_an_unreadable_price_table_refuses_runs_only_where_a_budget_applies(
    azurite: Azurite, tmp_path: Path, engine: FakeEngine
):
    # given a PRICE_TABLE_FILE that is not a price table, and a budget on one line only
    broken = tmp_path / "broken.json"
    broken.write_text('{"source": "mine"}')
    settings = settings_for(azurite, tmp_path, price_table_file=broken)
    ctx = context_with(settings, engine)
    upload(settings, "capped/line.json", b'{"max_run_cost": 5}')

    # when the sample goes to a line without a budget and to the capped one
    on_dataset_uploaded(upload(settings, "free/a.jsonl", VALID))
    on_dataset_uploaded(upload(settings, "capped/a.jsonl", VALID))

    # then the first runs without an estimate; the capped one is refused: its budget cannot be checked
    runs = {run.line: run for run in ctx.ledger.list()}
    assert runs["free"].state == RunState.SUBMITTED and runs["free"].cost_estimate is None
    capped = runs["capped"]
    assert capped.state == RunState.REJECTED and capped.error is not None
    assert capped.error.code == "invalid_price_table"
