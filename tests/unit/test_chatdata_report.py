"""Warnings, statistics, hash, split and dropping mode of the validation report (DESIGN.md, "Validation report")."""

from __future__ import annotations

import hashlib
import json
import math
import random

import numpy as np
import pytest

from shared.domain.chatdata import (
    ErrorCode,
    Split,
    ValidationOptions,
    WarningCode,
    render_markdown,
    split_of,
)
from tests.unit.chatdata_builders import (
    conversation,
    jsonl,
    line,
    message,
    valid_line,
    valid_lines,
    validate,
)

UTF8_BOM = b"\xef\xbb\xbf"
STAT_NAMES = ("min", "mean", "p50", "p95", "max")


def random_conversation(rng: random.Random) -> list[dict]:
    """A valid conversation of 1 to 4 exchanges, sometimes with a system prompt, with contents of random length."""
    messages = [message("system", "s" * rng.randint(1, 40))] if rng.random() < 0.3 else []
    for _ in range(rng.randint(1, 4)):
        messages.append(message("user", "u" * rng.randint(1, 300)))
        messages.append(message("assistant", "a" * rng.randint(1, 900)))
    return messages


def expected_summary(values: list[int]) -> dict[str, float]:
    """min/mean/p50/p95/max as numpy computes them (linear interpolation, numpy's default)."""
    return {
        "min": min(values),
        "mean": float(np.mean(values)),
        "p50": float(np.percentile(values, 50, method="linear")),
        "p95": float(np.percentile(values, 95, method="linear")),
        "max": max(values),
    }


def assert_summary_matches(actual: dict, values: list[int]) -> None:
    expected = expected_summary(values)
    assert set(actual) == set(STAT_NAMES)
    assert actual["min"] == expected["min"]
    assert actual["max"] == expected["max"]
    for name in ("mean", "p50", "p95"):
        # the report rounds to 2 decimals
        assert actual[name] == pytest.approx(expected[name], abs=0.005 + 1e-9), name


def estimated_tokens(characters: int, messages: int = 0) -> int:
    # the report's documented estimate: 4 characters a token, plus 4 a message for the chat template
    return math.ceil(characters / 4) + 4 * messages


# -- warnings ----------------------------------------------------------------------------------


def test_blank_lines_are_warned_about_and_ignored():
    # given: an empty line 5 and a whitespace-only line 9
    rows = valid_lines(20)
    data = jsonl([*rows[:4], b"", *rows[4:7], b" \t ", *rows[7:]])

    # when
    outcome = validate(data)

    # then
    assert outcome.report.valid is True
    assert outcome.report.rows == 20
    assert outcome.warnings == [(5, WarningCode.BLANK_LINE), (9, WarningCode.BLANK_LINE)]
    assert outcome.report.warning_counts == {WarningCode.BLANK_LINE: 2}
    assert outcome.emitted_lines == rows


def test_a_duplicate_prompt_id_is_warned_about_with_the_line_of_its_first_use():
    # given: lines 3 and 9 share a prompt_id, with different conversations
    rows = [valid_line(index, prompt_id=f"id-{index}") for index in range(20)]
    rows[8] = valid_line(8, prompt_id="id-2")

    # when
    outcome = validate(jsonl(rows))

    # then
    assert outcome.report.valid is True
    assert outcome.warnings == [(9, WarningCode.DUPLICATE_PROMPT_ID)]
    assert "line 3" in outcome.report.warnings[0].message
    assert outcome.report.warning_counts == {WarningCode.DUPLICATE_PROMPT_ID: 1}


def test_a_duplicate_conversation_is_warned_about_with_the_line_of_its_first_occurrence():
    # given: line 10 repeats the conversation of line 4, under another top-level key
    rows = valid_lines(20)
    rows[9] = line(json.loads(rows[3])["messages"], source="copy")

    # when
    outcome = validate(jsonl(rows))

    # then
    assert outcome.report.valid is True
    assert outcome.warnings == [(10, WarningCode.DUPLICATE_CONVERSATION)]
    assert "line 4" in outcome.report.warnings[0].message


def test_a_conversation_that_differs_only_in_one_role_is_not_a_duplicate():
    # given
    rows = valid_lines(20)
    rows[9] = line([message("system", "Question 3?"), message("user", "hi"), message("assistant", "Answer 3.")])
    rows[10] = line([message("user", "Question 3?"), message("user", "Answer 3."), message("assistant", "ok")])

    # when
    outcome = validate(jsonl(rows))

    # then
    assert outcome.warnings == []


def test_examples_longer_than_max_seq_length_are_counted_and_warned_about():
    # given: estimated tokens = ceil(characters / 4) + 4 per message; the limit is 30
    at_limit = line(conversation("x" * 87, "y"))  # 88 characters: 22 + 8 = 30 tokens
    over_limit = line(conversation("x" * 88, "y"))  # 89 characters: 23 + 8 = 31 tokens
    rows = valid_lines(20)
    rows[2], rows[6], rows[7] = over_limit, at_limit, line(conversation("z" * 500, "y"))
    rows[14] = over_limit.replace(b"y", b"w")
    options = ValidationOptions(max_seq_length=30)

    # when
    outcome = validate(jsonl(rows), options)

    # then
    assert outcome.report.valid is True
    assert outcome.warnings == [
        (3, WarningCode.EXCEEDS_MAX_SEQ_LENGTH),
        (8, WarningCode.EXCEEDS_MAX_SEQ_LENGTH),
        (15, WarningCode.EXCEEDS_MAX_SEQ_LENGTH),
    ]
    assert outcome.report.stats["exceeds_max_seq_length"] == 3
    assert outcome.report.stats["max_seq_length"] == 30
    assert "about 31 tokens" in outcome.report.warnings[0].message


def test_warning_counts_are_complete_while_the_listed_warnings_are_capped():
    # given: 15 blank lines
    data = jsonl([*valid_lines(20), *[b""] * 15])

    # when
    outcome = validate(data, ValidationOptions(max_listed_problems=4))

    # then
    assert outcome.report.warning_counts == {WarningCode.BLANK_LINE: 15}
    assert outcome.warnings == [(line_no, WarningCode.BLANK_LINE) for line_no in (21, 22, 23, 24)]


# -- statistics ----------------------------------------------------------------------------------


def test_stats_are_the_real_distribution_of_the_valid_examples():
    # given: 301 valid conversations of random shape, and invalid lines that must not count
    rng = random.Random(20240517)
    conversations = [random_conversation(rng) for _ in range(301)]
    rows = [line(messages) for messages in conversations]
    data = jsonl([*rows[:100], b"{broken", *rows[100:], line([message("user", "x" * 5000)])])
    options = ValidationOptions(max_invalid_fraction=0.1)

    # when
    outcome = validate(data, options)

    # then
    characters = [sum(len(m["content"]) for m in messages) for messages in conversations]
    assistant = [sum(len(m["content"]) for m in messages if m["role"] == "assistant") for messages in conversations]
    examples, answers = outcome.report.stats["examples"], outcome.report.stats["assistant"]
    assert_summary_matches(examples["messages"], [len(messages) for messages in conversations])
    assert_summary_matches(examples["turns"], [sum(m["role"] == "assistant" for m in c) for c in conversations])
    assert_summary_matches(examples["characters"], characters)
    assert_summary_matches(
        examples["estimated_tokens"],
        [estimated_tokens(chars, len(messages)) for chars, messages in zip(characters, conversations, strict=True)],
    )
    assert_summary_matches(answers["characters"], assistant)
    assert_summary_matches(answers["estimated_tokens"], [estimated_tokens(chars) for chars in assistant])
    assert outcome.report.stats["bytes"] == len(data)
    assert outcome.report.stats["duplicate_check"] == "complete"


@pytest.mark.parametrize(
    "lengths",
    [
        [5],
        [5, 9],
        [1, 2, 3, 4],
        [7] * 10 + [1000],
        [3, 1, 4, 1, 5, 9, 2, 6, 5, 3, 5, 8, 9, 7, 9],
        list(range(1, 21)),
    ],
    ids=["one", "two", "four", "outlier", "ties", "twenty"],
)
def test_percentiles_interpolate_linearly_as_numpy_does(lengths):
    # given: one row per length, the answer holding that many characters
    rows = [line([message("user", f"q{index}"), message("assistant", "a" * n)]) for index, n in enumerate(lengths)]

    # when
    outcome = validate(jsonl(rows), ValidationOptions(min_train_rows=0))

    # then
    assert_summary_matches(outcome.report.stats["assistant"]["characters"], lengths)


def test_stats_of_a_dataset_without_valid_examples_are_empty():
    # when
    outcome = validate(b"{broken\n")

    # then
    assert outcome.report.stats["examples"]["characters"] is None
    assert outcome.report.stats["assistant"]["estimated_tokens"] is None
    assert outcome.report.stats["bytes"] == 8


@pytest.mark.parametrize("chunk_size", [None, 1, 1000])
def test_sha256_is_the_hash_of_the_bytes(chunk_size):
    # given
    data = jsonl([*valid_lines(30), b"{broken", b"", "caf\u00e9".encode()])

    # when
    outcome = validate(data, chunk_size=chunk_size)

    # then
    assert outcome.report.sha256 == hashlib.sha256(data).hexdigest()


def test_sha256_of_nothing():
    assert validate(b"").report.sha256 == hashlib.sha256(b"").hexdigest()


# -- split ------------------------------------------------------------------------------------------


def test_the_split_is_deterministic():
    # given
    data = jsonl(valid_lines(300))

    # when
    first = validate(data)
    second = validate(data)

    # then
    assert first.emitted == second.emitted
    assert first.report == second.report
    assert {split for split, _ in first.emitted} == {Split.TRAIN, Split.TEST}


def test_rows_with_the_same_prompt_id_land_in_the_same_split():
    # given: 100 prompt ids, each on two rows with different conversations
    rows = [valid_line(index, prompt_id=f"prompt-{index % 100}") for index in range(200)]
    options = ValidationOptions(test_fraction=0.5)

    # when
    outcome = validate(jsonl(rows), options)

    # then
    splits_of_id: dict[str, set[Split]] = {}
    for split, row in outcome.emitted:
        splits_of_id.setdefault(json.loads(row)["prompt_id"], set()).add(split)
    assert len(splits_of_id) == 100
    assert all(len(splits) == 1 for splits in splits_of_id.values())
    assert {split for (split,) in splits_of_id.values()} == {Split.TRAIN, Split.TEST}
    assert all(splits == {split_of(prompt_id.encode(), 0.5)} for prompt_id, splits in splits_of_id.items())
    assert outcome.report.warning_counts == {WarningCode.DUPLICATE_PROMPT_ID: 100}


def test_the_split_follows_the_prompt_id_not_the_conversation():
    # given: the same conversation under 200 prompt ids
    rows = [line(conversation(), prompt_id=f"p{index}") for index in range(200)]

    # when
    outcome = validate(jsonl(rows), ValidationOptions(test_fraction=0.5))

    # then
    assert {split for split, _ in outcome.emitted} == {Split.TRAIN, Split.TEST}


def test_the_test_split_holds_about_the_requested_fraction():
    # given
    rows = [valid_line(index, prompt_id=f"{index:08d}") for index in range(2000)]

    # when
    outcome = validate(jsonl(rows), ValidationOptions(test_fraction=0.1))

    # then
    report = outcome.report
    assert report.split.train + report.split.test == 2000
    assert report.split.test / 2000 == pytest.approx(0.1, abs=0.03)
    assert sum(split is Split.TEST for split, _ in outcome.emitted) == report.split.test
    assert sum(split is Split.TRAIN for split, _ in outcome.emitted) == report.split.train


def test_rows_without_prompt_id_are_split_about_the_requested_fraction_too():
    # when
    outcome = validate(jsonl(valid_lines(2000)), ValidationOptions(test_fraction=0.2))

    # then
    assert outcome.report.split.test / 2000 == pytest.approx(0.2, abs=0.03)


def test_a_test_fraction_of_zero_puts_everything_in_train():
    # given
    rows = valid_lines(500)

    # when
    outcome = validate(jsonl(rows), ValidationOptions(test_fraction=0.0))

    # then
    assert outcome.report.split.model_dump() == {"train": 500, "test": 0}
    assert outcome.emitted == [(Split.TRAIN, row) for row in rows]


def test_split_of_is_a_pure_function_of_key_and_fraction():
    # given
    keys = [f"key-{index}".encode() for index in range(1000)]

    # then
    assert [split_of(key, 0.3) for key in keys] == [split_of(key, 0.3) for key in keys]
    assert {split_of(key, 0.0) for key in keys} == {Split.TRAIN}
    # a larger fraction only moves keys from train to test
    assert all(split_of(key, 0.5) is Split.TEST for key in keys if split_of(key, 0.3) is Split.TEST)


# -- line endings ---------------------------------------------------------------------------------


def test_crlf_line_endings_and_a_bom_are_accepted_and_not_emitted():
    # given
    rows = valid_lines(20)
    data = UTF8_BOM + jsonl([*rows[:10], b"", *rows[10:]], newline=b"\r\n")

    # when
    outcome = validate(data)

    # then
    assert outcome.report.valid is True
    assert outcome.report.errors == []
    assert outcome.warnings == [(11, WarningCode.BLANK_LINE)]
    assert outcome.emitted_lines == rows
    assert outcome.report.sha256 == hashlib.sha256(data).hexdigest()
    assert outcome.report.stats["bytes"] == len(data)


def test_a_bom_is_only_accepted_on_the_first_line():
    # given
    rows = valid_lines(20)
    rows[4] = UTF8_BOM + rows[4]

    # when
    outcome = validate(jsonl(rows))

    # then
    assert outcome.problems == [(5, ErrorCode.INVALID_JSON)]


# -- dropping mode -----------------------------------------------------------------------------------


def with_two_bad_lines() -> tuple[bytes, list[bytes]]:
    """20 valid rows, with an invalid one on line 6 and another on line 15 (22 lines)."""
    rows = valid_lines(20)
    data = jsonl([*rows[:5], b'{"messages": 3}', *rows[5:13], line([message("user", "alone")]), *rows[13:]])
    return data, rows


def test_dropping_mode_drops_a_tolerated_fraction_of_bad_lines():
    # given
    data, rows = with_two_bad_lines()
    options = ValidationOptions(max_invalid_fraction=0.2)

    # when
    outcome = validate(data, options)

    # then
    report = outcome.report
    assert report.valid is True
    assert report.dropped_lines == [6, 15]
    assert report.rows == 22
    assert report.split.train + report.split.test == 20
    assert outcome.emitted_lines == rows
    assert report.error_counts == {
        ErrorCode.MESSAGES_NOT_A_LIST: 1,
        ErrorCode.TOO_FEW_MESSAGES: 1,
        ErrorCode.MISSING_ASSISTANT_MESSAGE: 1,
    }
    assert {problem.line for problem in report.errors} == {6, 15}


def test_strict_mode_rejects_the_same_data():
    # given
    data, _ = with_two_bad_lines()

    # when
    outcome = validate(data)

    # then
    assert outcome.report.valid is False
    assert outcome.report.dropped_lines == []
    assert outcome.invalid_lines == {6, 15}


def test_strict_mode_emits_nothing_after_the_first_bad_line():
    # given
    data, rows = with_two_bad_lines()

    # when
    outcome = validate(data)

    # then
    assert outcome.emitted_lines == rows[:5]


def test_dropping_mode_rejects_more_bad_lines_than_tolerated():
    # given: 3 bad lines out of 23 rows, over 10 %
    data = jsonl([*valid_lines(20), b"{", b"[]", b"null"])
    options = ValidationOptions(max_invalid_fraction=0.1)

    # when
    outcome = validate(data, options)

    # then
    assert outcome.report.valid is False
    assert outcome.report.dropped_lines == []
    assert outcome.problems == [
        (21, ErrorCode.INVALID_JSON),
        (22, ErrorCode.NOT_AN_OBJECT),
        (23, ErrorCode.NOT_AN_OBJECT),
    ]


def test_dropping_mode_still_needs_enough_training_rows():
    # given
    data = jsonl([*valid_lines(9), b"{"])

    # when
    outcome = validate(data, ValidationOptions(max_invalid_fraction=0.5, test_fraction=0.0))

    # then
    assert outcome.report.valid is False
    assert outcome.report.dropped_lines == []
    assert outcome.problems == [(None, ErrorCode.TOO_FEW_EXAMPLES), (10, ErrorCode.INVALID_JSON)]


# -- rendering and options ------------------------------------------------------------------------------


def test_render_markdown_of_an_invalid_report_names_the_verdict_codes_and_lines():
    # given
    data = jsonl([*valid_lines(11), b"{broken", *valid_lines(8, start=50), b""])
    report = validate(data).report

    # when
    text = render_markdown(report)

    # then
    assert "**invalid**" in text
    assert "`invalid_json`" in text
    assert "line 12" in text
    assert "`blank_line`" in text
    assert report.sha256 in text


def test_render_markdown_of_a_valid_report():
    # given
    report = validate(jsonl(valid_lines(20))).report

    # when
    text = render_markdown(report, title="ultrachat sample")

    # then
    assert text.startswith("# ultrachat sample\n")
    assert "**valid**" in text
    assert "**invalid**" not in text
    assert f"train {report.split.train}, test {report.split.test}" in text


def test_render_markdown_lists_dropped_lines():
    # given
    data, _ = with_two_bad_lines()
    report = validate(data, ValidationOptions(max_invalid_fraction=0.2)).report

    # when
    text = render_markdown(report)

    # then
    assert "Dropped invalid lines (2): 6, 15" in text


def test_the_report_json_has_the_contract_keys():
    # given
    report = validate(jsonl([*valid_lines(20), b"{"])).report

    # when
    document = json.loads(report.to_json_bytes())

    # then
    assert {"valid", "rows", "sha256", "error_counts", "errors", "warnings", "stats", "split"} <= set(document)
    assert document["errors"] == [{"line": 21, "code": "invalid_json", "message": report.errors[0].message}]
    assert document["split"] == {"train": report.split.train, "test": report.split.test}


@pytest.mark.parametrize(
    "bad",
    [
        {"test_fraction": -0.1},
        {"test_fraction": 1.0},
        {"test_fraction": 1.5},
        {"max_invalid_fraction": -0.01},
        {"max_invalid_fraction": 1.0},
        {"max_line_bytes": 0},
        {"max_listed_problems": -1},
        {"max_seq_length": 0},
    ],
    ids=lambda bad: "-".join(f"{key}={value}" for key, value in bad.items()),
)
def test_validation_options_reject_values_out_of_range(bad):
    with pytest.raises(ValueError):
        ValidationOptions(**bad)


@pytest.mark.parametrize("fraction", [0.0, 0.5, 0.999])
def test_validation_options_accept_fractions_in_range(fraction):
    options = ValidationOptions(test_fraction=fraction, max_invalid_fraction=fraction)

    assert options.test_fraction == fraction
