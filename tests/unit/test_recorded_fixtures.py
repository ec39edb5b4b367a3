"""The recorded service answers and specs the Azure ML fake is made of are the published files, unchanged: each
matches the sha256 its provenance README lists."""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

import pytest

RECORDINGS = Path(__file__).resolve().parents[1] / "fixtures" / "recordings"
LISTED = re.findall(r"^([0-9a-f]{64})  (\S+)$", (RECORDINGS / "README.md").read_text(encoding="utf-8"), re.MULTILINE)


def test_the_readme_lists_every_recorded_file():
    on_disk = {str(path.relative_to(RECORDINGS)) for path in RECORDINGS.rglob("*") if path.is_file()}

    assert {name for _, name in LISTED} == on_disk - {"README.md"}
    assert len(LISTED) == 14


@pytest.mark.parametrize(("digest", "name"), LISTED, ids=[name for _, name in LISTED])
def test_a_recorded_file_is_the_published_one(digest, name):
    assert hashlib.sha256((RECORDINGS / name).read_bytes()).hexdigest() == digest
