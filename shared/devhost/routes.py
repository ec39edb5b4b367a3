"""HTTP-triggered functions: route templates, matching by path and method, function keys, request and reply."""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs, quote, unquote, urlencode

import azure.functions as func

from shared.devhost.indexing import HostedFunction
from shared.devhost.invocation import invoke
from shared.devhost.keys import KEY_HEADER, KEY_PARAMETER, admits
from shared.devhost.replies import Reply, unauthorized

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class HttpRoute:
    function: HostedFunction
    template: str
    pattern: re.Pattern[str]
    methods: frozenset[str] | None  # None: any method
    auth_level: str
    rank: tuple[int, ...]

    @classmethod
    def of(cls, function: HostedFunction) -> HttpRoute:
        template = str(function.trigger.get("route") or function.name).strip("/")
        pattern, rank = _compile_route(template)
        methods = function.trigger.get("methods")
        return cls(
            function=function,
            template=template,
            pattern=pattern,
            methods=frozenset(m.upper() for m in methods) if methods else None,
            auth_level=str(function.trigger.get("authLevel") or "FUNCTION").upper(),
            rank=rank,
        )


def _compile_route(template: str) -> tuple[re.Pattern[str], tuple[int, ...]]:
    """An ASP.NET-style route template as a regex over the decoded path, and its rank (more specific first)."""
    parts: list[str] = []
    rank: list[int] = []
    for segment in template.split("/") if template else []:
        match = re.fullmatch(r"\{(\*)?([A-Za-z_][A-Za-z0-9_]*)(?::([^}?=]+))?(\?)?(?:=[^}]*)?\}", segment)
        if match is None:
            parts.append("/" + re.escape(segment))
            rank.append(0)
            continue
        catch_all, name, constraint, optional = match.groups()
        if catch_all:
            parts.append(f"(?:/(?P<{name}>.*))?")
            rank.append(3)
            continue
        body = r"-?\d+" if constraint in ("int", "long") else r"[^/]+"
        parts.append(f"(?:/(?P<{name}>{body}))?" if optional else f"/(?P<{name}>{body})")
        rank.append(1 if constraint else 2)
    return re.compile("".join(parts) + "/?", re.IGNORECASE), tuple(rank)


class HttpFunctions:
    """The HTTP-triggered functions under `/<prefix>/`, most specific route first."""

    def __init__(self, functions: Iterable[HostedFunction], *, prefix: str, base_url: str, key: str) -> None:
        self.routes = sorted(
            (HttpRoute.of(f) for f in functions if f.trigger_type == "httpTrigger"), key=lambda route: route.rank
        )
        self.prefix = prefix
        self._base_url = base_url
        self._key = key

    def url_of(self, route: HttpRoute) -> str:
        return f"{self._base_url}/{self.prefix}/{route.template}"

    def handle(
        self,
        method: str,
        path: str,
        raw_query: str,
        query: Mapping[str, list[str]],
        headers: Mapping[str, str],
        body: bytes,
    ) -> Reply:
        """One request; `path` is the (still encoded) path after the prefix."""
        decoded = "/".join(unquote(segment) for segment in path.split("/"))
        allowed: set[str] = set()
        for route in self.routes:
            match = route.pattern.fullmatch(decoded)
            if match is None:
                continue
            if (
                route.methods is not None
                and method not in route.methods
                and not (method == "HEAD" and "GET" in route.methods)
            ):
                allowed |= route.methods
                continue
            if route.auth_level != "ANONYMOUS" and not admits(self._key, headers, query):
                return unauthorized()
            return self._call(route, method, path, raw_query, headers, body, match)
        if allowed:
            reply = Reply.error(405, "method_not_allowed", f"{method} is not allowed here")
            reply.headers.append(("Allow", ", ".join(sorted(allowed))))
            return reply
        return Reply.error(404, "not_found", f"no function serves {self.prefix}{path}")

    def _call(
        self,
        route: HttpRoute,
        method: str,
        path: str,
        raw_query: str,
        headers: Mapping[str, str],
        body: bytes,
        match: re.Match[str],
    ) -> Reply:
        # The key is the host's business: the function sees neither the `code` parameter nor the key header,
        # so a handler that logs its URL cannot leak it.
        pairs = [(k, v) for k, v in _query_pairs(raw_query) if k != KEY_PARAMETER]
        visible_query = urlencode(pairs, quote_via=quote)
        url = f"{self._base_url}/{self.prefix}{path}" + (f"?{visible_query}" if visible_query else "")
        params: dict[str, str] = {}
        for key, value in pairs:
            params.setdefault(key, value)
        request = func.HttpRequest(
            method=method,
            url=url,
            headers={k: v for k, v in headers.items() if k.lower() != KEY_HEADER},
            params=params,
            route_params={k: v for k, v in match.groupdict().items() if v is not None},
            body=body,
        )
        try:
            result = invoke(route.function, request)
        except Exception:
            logger.exception("%s raised", route.function.name)
            return Reply(500)
        return _reply_of(result)


def _query_pairs(raw_query: str) -> Iterator[tuple[str, str]]:
    for key, values in parse_qs(raw_query, keep_blank_values=True).items():
        for value in values:
            yield key, value


def _reply_of(result: Any) -> Reply:
    """A function's return value as the Functions host answers it."""
    if isinstance(result, func.HttpResponse):
        headers = [(k, v) for k, v in result.headers.items() if k.lower() not in ("content-length", "content-type")]
        content_type = result.headers.get("content-type") or (
            f"{result.mimetype}; charset={result.charset}" if result.mimetype.startswith("text/") else result.mimetype
        )
        headers.append(("Content-Type", content_type))
        return Reply(result.status_code, result.get_body() or b"", headers)
    if isinstance(result, str):
        return Reply(200, result.encode(), [("Content-Type", "text/plain; charset=utf-8")])
    if isinstance(result, bytes):
        return Reply(200, result, [("Content-Type", "application/octet-stream")])
    return Reply(204)
