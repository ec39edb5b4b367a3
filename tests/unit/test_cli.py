"""`autopilot validate`: exit codes 0 valid, 1 invalid, 2 unreadable or bad usage; never a traceback."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from shared.cli import main

SAMPLES = Path(__file__).resolve().parents[2] / "samples"


def test_a_valid_file_exits_0_with_a_readable_report(capsys: pytest.CaptureFixture[str]):
    code = main(["validate", str(SAMPLES / "ultrachat_sample.jsonl")])

    out = capsys.readouterr().out
    assert code == 0
    assert "Verdict: **valid**" in out and "Rows: 240" in out


def test_an_invalid_file_exits_1_and_json_prints_only_the_report(capsys: pytest.CaptureFixture[str]):
    code = main(["validate", str(SAMPLES / "ultrachat_broken.jsonl"), "--json"])

    report = json.loads(capsys.readouterr().out)
    assert code == 1
    assert report["valid"] is False
    assert report["errors"][0] == {"line": 6, "code": "invalid_json",
                                   "message": "not valid JSON: unexpected end of data at character 92"}


def test_test_fraction_sets_the_split(capsys: pytest.CaptureFixture[str]):
    main(["validate", str(SAMPLES / "ultrachat_sample.jsonl"), "--json", "--test-fraction", "0"])
    assert json.loads(capsys.readouterr().out)["split"] == {"train": 240, "test": 0}


@pytest.mark.parametrize(
    "argv",
    [
        ["validate", "/no/such/file.jsonl"],
        ["validate", str(SAMPLES)],  # a directory
        ["validate", str(SAMPLES / "ultrachat_sample.jsonl"), "--test-fraction", "1.5"],
        ["validate", str(SAMPLES / "ultrachat_sample.jsonl"), "--test-fraction", "half"],
        ["validate"],
        ["frobnicate"],
    ],
)
def test_unreadable_input_and_bad_usage_exit_2(argv: list[str]):
    try:
        code = main(argv)
    except SystemExit as exit_:  # argparse's own usage errors
        code = exit_.code
    assert code == 2


def test_arbitrary_bytes_on_stdin_give_a_verdict_not_a_traceback(tmp_path: Path):
    # given garbage bytes, through the real console entry point
    garbage = bytes(range(256)) * 64 + b"\n{\n\xff\xfe\n"

    result = subprocess.run([sys.executable, "-m", "shared.cli", "validate", "-", "--json"], input=garbage,
                            capture_output=True, cwd=Path(__file__).resolve().parents[2])

    assert result.returncode == 1
    assert b"Traceback" not in result.stderr
    assert json.loads(result.stdout)["valid"] is False
