"""Text from outside (container logs, service messages) made safe to keep on a run record, which never holds a
secret: values that look like keys, tokens, passwords or connection-string parts are replaced. Pure."""

from __future__ import annotations

import re

REDACTED = "[redacted]"

_PATTERNS = (
    # Authorization: Bearer <token>, and bare JWTs
    re.compile(r"(?i)\b(bearer)\s+[A-Za-z0-9._~+/=-]{8,}"),
    re.compile(r"\beyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{4,}"),
    # key=value and "key": "value" where the key names a secret (connection-string parts included)
    re.compile(
        r"(?i)\b([\w-]*(?:key|token|secret|password|passwd|pwd|signature|sig|credential)[\w-]*)"
        r"(\"?\s*[:=]\s*\"?)([^\s\";,&]{4,})"
    ),
)


def redact_secrets(text: str) -> str:
    text = _PATTERNS[0].sub(lambda m: f"{m.group(1)} {REDACTED}", text)
    text = _PATTERNS[1].sub(REDACTED, text)
    return _PATTERNS[2].sub(lambda m: f"{m.group(1)}{m.group(2)}{REDACTED}", text)
