"""Secrets in outside text are replaced before the text is kept on a run record."""

from __future__ import annotations

import pytest

from shared.domain.redaction import REDACTED, redact_secrets


@pytest.mark.parametrize(
    ("line", "secret"),
    [
        ("Authorization: Bearer abcdefghijklmnop1234", "abcdefghijklmnop1234"),
        ("DefaultEndpointsProtocol=https;AccountName=a;AccountKey=Zm9vYmFyYmF6cXV4==;EndpointSuffix=x", "Zm9vYmFyYmF6"),
        ('{"api_key": "sk-live-0123456789"}', "sk-live-0123456789"),
        ("AZURE_CLIENT_SECRET=s3cr3t-value", "s3cr3t-value"),
        ("url?sv=2024&sig=AbCdEf123456%3D&se=2026", "AbCdEf123456"),
        ("token eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NTYifQ.c2lnbmF0dXJl seen", "eyJhbGciOiJIUzI1NiJ9"),
        ("primary_key: 9f8e7d6c5b4a", "9f8e7d6c5b4a"),
    ],
)
def test_secret_values_are_replaced(line: str, secret: str):
    redacted = redact_secrets(line)

    assert secret not in redacted
    assert REDACTED in redacted


def test_ordinary_log_lines_are_kept_as_they_are():
    line = "Liveness probe failed: container exited with code 137 (out of memory); model loaded in 412 s"

    assert redact_secrets(line) == line
