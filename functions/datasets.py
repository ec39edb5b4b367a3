"""Blob trigger: a dataset uploaded to the datasets container becomes a run."""

from __future__ import annotations

import logging

import azure.functions as func
import azurefunctions.extensions.bindings.blob as blob_binding

from shared.context import get_context
from shared.settings import STORAGE_CONNECTION_SETTING
from shared.usecases.intake import intake_dataset

logger = logging.getLogger(__name__)

bp = func.Blueprint()


# The SDK-type binding hands over a BlobClient instead of the bytes, so the service streams the blob
# rather than the host loading it into memory. EventGrid is the only blob source on Flex Consumption.
@bp.function_name("on_dataset_uploaded")
@bp.blob_trigger(
    arg_name="client",
    path="%DATASETS_CONTAINER%/{name}",
    connection=STORAGE_CONNECTION_SETTING,
    source=func.BlobSource.EVENT_GRID,
)
def on_dataset_uploaded(client: blob_binding.BlobClient) -> None:
    outcome = intake_dataset(get_context(), client.container_name, client.blob_name)
    logger.info(
        "on_dataset_uploaded %s/%s: %s %s (%s)",
        client.container_name,
        client.blob_name,
        outcome.status,
        outcome.run_id or "-",
        outcome.detail,
        extra={"run_id": outcome.run_id},
    )
