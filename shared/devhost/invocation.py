"""Calling a user function with its trigger value, the way every trigger of the dev host does."""

from __future__ import annotations

import asyncio
import inspect
import logging
import time
from typing import Any

import azure.functions as func

from shared.devhost.indexing import HostedFunction

logger = logging.getLogger(__name__)


def invoke(function: HostedFunction, value: Any) -> Any:
    """Call the user function with its trigger value; log name, trigger, outcome and duration; re-raise."""
    started = time.perf_counter()
    outcome = "Failed"
    try:
        result = function.call(**{function.arg_name: value})
        if inspect.isawaitable(result):
            result = asyncio.run(_awaited(result))
        outcome = str(result.status_code) if isinstance(result, func.HttpResponse) else "Succeeded"
        return result
    finally:
        logger.info(
            "invoked %s (%s): %s in %d ms",
            function.name,
            function.trigger_type,
            outcome,
            round((time.perf_counter() - started) * 1000),
        )


async def _awaited(awaitable: Any) -> Any:
    return await awaitable
