"""function_app as the Functions host indexes it: names, bindings, auth, and a cold start free of heavy imports."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from tests.registered import bindings, names

REPO = Path(__file__).resolve().parents[2]
HEAVY_MODULES = ("azure.ai.ml", "torch", "transformers", "mlflow", "pandas")


def test_registered_function_names_are_the_stable_ones():
    assert names() >= {"on_dataset_uploaded", "validate_dataset", "get_run", "list_runs"}


def test_blob_trigger_reads_the_container_setting_through_event_grid():
    (trigger,) = bindings("on_dataset_uploaded")
    assert trigger == {
        "direction": "IN",
        "type": "blobTrigger",
        "name": "client",
        "path": "%DATASETS_CONTAINER%/{name}",
        "connection": "DatasetStorage",
        "source": "EventGrid",
    }


def test_http_functions_require_a_function_key_and_use_the_design_routes():
    routes = {
        name: next(b for b in bindings(name) if b["type"] == "httpTrigger")
        for name in ("validate_dataset", "get_run", "list_runs")
    }
    assert {name: (b["route"], b["methods"], b["authLevel"]) for name, b in routes.items()} == {
        "validate_dataset": ("validate", ["POST"], "FUNCTION"),
        "get_run": ("runs/{run_id}", ["GET"], "FUNCTION"),
        "list_runs": ("runs", ["GET"], "FUNCTION"),
    }


def test_importing_function_app_pulls_in_no_heavy_library():
    # given a fresh interpreter, as on a cold start
    probe = (
        "import sys, time; t = time.perf_counter(); import function_app; "
        "print(__import__('json').dumps({'seconds': time.perf_counter() - t, "
        f"'heavy': [m for m in {HEAVY_MODULES!r} if m in sys.modules]}}))"
    )

    # when function_app is imported
    result = subprocess.run([sys.executable, "-c", probe], cwd=REPO, capture_output=True, text=True, check=True)

    # then none of the ML stack came with it (the import time is reported, not asserted: machines are noisy)
    measured = json.loads(result.stdout)
    assert measured["heavy"] == []
    print(f"import function_app: {measured['seconds']:.2f} s")


def test_host_json_uses_the_v4_extension_bundle():
    host = json.loads((REPO / "host.json").read_text())
    assert host["version"] == "2.0"
    assert host["extensionBundle"] == {"id": "Microsoft.Azure.Functions.ExtensionBundle", "version": "[4.*, 5.0.0)"}


def test_local_settings_example_documents_every_setting():
    from pydantic import AliasChoices

    from shared.settings import Settings

    # given the names the app reads (the first choice of each field's aliases)
    app_settings = set()
    for field in Settings.model_fields.values():
        alias = field.validation_alias
        app_settings.add(alias.choices[0] if isinstance(alias, AliasChoices) else alias)

    # when reading the example file
    example = json.loads((REPO / "local.settings.json.example").read_text())

    # then every setting is documented, and every value in the example has its explanation
    assert app_settings <= set(example["Comments"]), sorted(app_settings - set(example["Comments"]))
    assert set(example["Values"]) <= set(example["Comments"])
