"""`autopilot demo`: the intake stage end to end on the bundled samples, against a real local Azurite.

It uploads two datasets and delivers each upload to the registered `on_dataset_uploaded` function the
way the Functions host does with the SDK-type binding (a BlobClient), then prints what happened: the
verdicts, where the reports went, and the run records. It stops every process it started.
"""

from __future__ import annotations

import logging
import tempfile
import time
from pathlib import Path

import orjson
from azure.storage.blob import BlobServiceClient

from shared.azurite import REPO_ROOT, start_azurite
from shared.context import AppContext, install_context
from shared.settings import Settings

SAMPLES = REPO_ROOT / "samples"
UPLOADS = [
    ("ultrachat/train_sft.jsonl", SAMPLES / "ultrachat_sample.jsonl"),
    ("ultrachat/broken.jsonl", SAMPLES / "ultrachat_broken.jsonl"),
    ("ultrachat/train_sft_copy.jsonl", SAMPLES / "ultrachat_sample.jsonl"),  # same bytes, another name
]


def run_demo() -> int:
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="autopilot-demo-") as workdir:
        _step("starting Azurite (blob emulator) on loopback")
        azurite = start_azurite(Path(workdir) / "azurite")
        try:
            settings = Settings(storage_connection_string=azurite.connection_string,
                                local_state_dir=Path(workdir) / "state")
            _run_intake(settings)
        finally:
            azurite.stop()
            install_context(None)
            _step(f"stopped Azurite (pid {azurite.process.pid})")
    print(f"\ndemo finished in {time.perf_counter() - started:.1f} s")
    return 0


def _run_intake(settings: Settings) -> None:
    import function_app  # as the Functions host does: index the app, then invoke by function name

    context = AppContext.from_settings(settings)
    install_context(context)
    for container in (settings.datasets_container, settings.runs_container):
        context.store.ensure_container(container)
    functions = {f.get_function_name(): f.get_user_function() for f in function_app.app.get_functions()}
    on_dataset_uploaded = functions["on_dataset_uploaded"]
    service = BlobServiceClient.from_connection_string(settings.storage_connection_string.get_secret_value())

    run_ids = []
    for blob_name, sample in UPLOADS:
        _step(f"upload {sample.name} -> {settings.datasets_container}/{blob_name}")
        client = service.get_blob_client(settings.datasets_container, blob_name)
        client.upload_blob(sample.read_bytes(), overwrite=True)
        for delivery in (1, 2):  # Event Grid delivers at least once: show that a redelivery changes nothing
            began = time.perf_counter()
            on_dataset_uploaded(client)
            print(f"    BlobCreated delivery {delivery}: on_dataset_uploaded returned in "
                  f"{(time.perf_counter() - began) * 1000:.0f} ms")
        record = _run_for(context, blob_name)
        run_ids.append(record.run_id)
        print(f"    run {record.run_id}: {record.state}"
              + (f" ({record.error.code})" if record.error else "")
              + f"; report: {record.artifacts.report_md}")

    _step("validation report of the broken upload (report.md)")
    broken = context.ledger.get(run_ids[1])
    container, _, name = broken.artifacts.report_md.partition("/")
    report_md, _ = context.store.read(container, name)
    print("\n".join("    " + line for line in report_md.decode().splitlines()[:24]))

    _step("run records (GET /api/runs/{run_id})")
    for run_id in dict.fromkeys(run_ids):
        record = context.ledger.get(run_id)
        print(orjson.dumps(record.model_dump(mode="json", by_alias=True), option=orjson.OPT_INDENT_2).decode())
    print("\nThe valid upload was prepared (train.jsonl/test.jsonl beside it) and recorded as one run, even when\n"
          "uploaded under two names; it ends 'failed: engine_not_configured' because no training engine is part of\n"
          "this build yet: nothing pretends to train.")


def _run_for(context: AppContext, blob_name: str):
    for record in context.ledger.list(limit=1000):
        if any(source.endswith("/" + blob_name) for source in record.sources):
            return record
    raise RuntimeError(f"no run recorded for {blob_name}")


def _step(text: str) -> None:
    print(f"\n==> {text}", flush=True)
    logging.getLogger(__name__).debug(text)
