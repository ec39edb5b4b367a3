"""Line names, line.json, and the identity of runs across lines: the pure rules."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from shared.domain.finetune import parameters_for
from shared.domain.lines import (
    DEFAULT_LINE,
    InvalidLineConfig,
    InvalidLineName,
    line_config_blob,
    line_of,
    parse_line_config,
)
from shared.domain.naming import endpoint_name_for, line_model_name
from shared.domain.runs import DatasetRef, RunRecord, RunState, new_run, run_id_for

SHA = "ab" * 32


@pytest.mark.parametrize(
    ("blob", "line"),
    [
        ("train.jsonl", DEFAULT_LINE),
        ("support/train.jsonl", "support"),
        ("support-bot-2/2026/12/a.jsonl", "support-bot-2"),
        ("ab/x.jsonl", "ab"),
        ("a" * 24 + "/x.jsonl", "a" * 24),
    ],
)
def test_the_first_folder_names_the_line(blob: str, line: str):
    assert line_of(blob) == line


@pytest.mark.parametrize("folder", ["a", "a" * 25, "Support", "9lives", "-x", "sup_port", "süpport", "sup port"])
def test_a_folder_that_is_no_line_name_is_refused_with_its_code(folder: str):
    with pytest.raises(InvalidLineName) as refused:
        line_of(f"{folder}/data.jsonl")
    assert refused.value.code == "invalid_line_name"


@pytest.mark.parametrize(
    ("document", "key"),
    [
        (b'{"acumulate": true}', "acumulate"),
        (b'{"accumulate": "yes"}', "accumulate"),
        (b'{"idle_minutes": 0}', "idle_minutes"),
        (b'{"idle_minutes": 1.5}', "idle_minutes"),
        (b'{"max_job_retries": -1}', "max_job_retries"),
        (b'{"gate": {"min_improvement": 2}}', "gate.min_improvement"),
        (b'{"gate": {"tolerance": 0.1}}', "gate.tolerance"),
        (b'{"base_model": 7}', "base_model"),
        (b"[1, 2]", "(the document)"),
        (b"{not json", "(the document)"),
    ],
)
def test_an_unusable_line_json_is_refused_naming_the_key(document: bytes, key: str):
    with pytest.raises(InvalidLineConfig) as refused:
        parse_line_config("support", document)
    assert refused.value.code == "invalid_line_config"
    assert refused.value.message.startswith(f"support/line.json: {key}: ")


def test_a_full_line_json_parses():
    config = parse_line_config(
        "legal",
        b'{"base_model": "tiny", "parameters": {"learning_rate": 0.001}, "accumulate": true, "idle_minutes": 90,'
        b' "gate": {"min_improvement": 0.05, "champion_tolerance": 0.01}, "max_job_retries": 0}',
    )
    assert (config.base_model, config.accumulate, config.idle_minutes, config.max_job_retries) == ("tiny", True, 90, 0)
    assert (config.gate.min_improvement, config.gate.champion_tolerance) == (0.05, 0.01)
    assert line_config_blob("legal") == "legal/line.json" and line_config_blob(DEFAULT_LINE) == "line.json"


def test_the_same_content_in_two_lines_is_two_runs_and_the_default_line_keeps_old_ids():
    parameters = parameters_for()
    before_lines = run_id_for(SHA, parameters, "tiny")
    assert run_id_for(SHA, parameters, "tiny", line=DEFAULT_LINE) == before_lines
    assert (
        len(
            {
                before_lines,
                run_id_for(SHA, parameters, "tiny", line="a1"),
                run_id_for(SHA, parameters, "tiny", line="b1"),
            }
        )
        == 3
    )


def test_each_line_has_its_model_and_endpoint_and_the_default_line_keeps_its_names():
    assert (
        line_model_name(DEFAULT_LINE, "HuggingFaceTB/SmolLM2-135M-Instruct", "-ft-chat")
        == "SmolLM2-135M-Instruct-ft-chat"
    )
    assert line_model_name("support", "HuggingFaceTB/SmolLM2-135M-Instruct", "-ft-chat") == "support-ft-chat"
    assert line_model_name("support", "tiny", "-ft-chat") == "support-ft-chat"  # a new base model keeps the line's
    assert endpoint_name_for("support-ft-chat") == "ep-support-ft-chat"


def test_a_record_from_before_lines_loads_as_a_run_of_the_default_line():
    now = datetime(2026, 11, 1, tzinfo=UTC)
    record = new_run(
        run_id="ft-0123456789ab",
        dataset=DatasetRef(container="datasets", blob="a.jsonl", sha256=SHA, size_bytes=1),
        parameters=parameters_for(),
        base_model="tiny",
        engine="local",
        now=now,
    )
    stored = record.model_dump(mode="json", by_alias=True)
    for key in ("line", "line_config", "line_config_sha256", "uploads", "job_retries"):
        stored.pop(key)
    loaded = RunRecord.model_validate(stored)
    assert (loaded.line, loaded.line_config, loaded.uploads, loaded.job_retries) == (DEFAULT_LINE, None, [], [])
    assert loaded.state == RunState.RECEIVED and loaded.order == (now, "ft-0123456789ab")
