"""The app's registered functions, as the Functions host indexes them (get_functions() works once per app)."""

from __future__ import annotations

import json
from collections.abc import Callable
from functools import cache
from typing import Any

import azure.functions as func


@cache
def _indexed() -> dict[str, Any]:
    import function_app
    from shared.devhost import index_app

    return {function.get_function_name(): function for function in index_app(function_app.app)}


def function(name: str) -> Callable[..., Any]:
    """The user function behind a registered name, callable with the binding's input."""
    return _indexed()[name].get_user_function()


def bindings(name: str) -> list[dict[str, Any]]:
    return json.loads(_indexed()[name].get_function_json())["bindings"]


def names() -> set[str]:
    return set(_indexed())


def http_request(
    method: str,
    route: str,
    *,
    body: bytes = b"",
    params: dict[str, str] | None = None,
    route_params: dict[str, str] | None = None,
) -> func.HttpRequest:
    return func.HttpRequest(
        method=method,
        url=f"http://127.0.0.1:7071/api/{route}",
        body=body,
        params=params or {},
        route_params=route_params or {},
    )
