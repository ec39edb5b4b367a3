"""Every error code of the validation report, with its exact code and 1-based line (DESIGN.md, "Validation report")."""

from __future__ import annotations

import pytest

from shared.domain.chatdata import MIN_TRAIN_ROWS, ErrorCode, ValidationOptions
from tests.unit.chatdata_builders import (
    conversation,
    jsonl,
    line,
    message,
    valid_line,
    valid_lines,
    validate,
)

BAD_LINE_NO = 12
VALID_BEFORE = BAD_LINE_NO - 1
VALID_AFTER = 8
SHORT_LINES = ValidationOptions(max_line_bytes=200)


def with_bad_line(bad: bytes) -> bytes:
    """11 valid rows, the bad one on line 12, then 8 more valid rows: 20 rows, enough to train on."""
    return jsonl([*valid_lines(VALID_BEFORE), bad, *valid_lines(VALID_AFTER, start=100)])


USER = message("user", "What is 2 + 2?")
ASSISTANT = message("assistant", "4.")
SYSTEM = message("system", "You are terse.")

# (code, the bad line, options): each bad line has exactly one problem.
LINE_ERROR_CASES = [
    pytest.param(ErrorCode.INVALID_UTF8, b'{"messages": "caf\xe9"}', None, id="invalid_utf8"),
    pytest.param(ErrorCode.INVALID_JSON, b'{"messages": [{"role": "user", ', None, id="invalid_json"),
    pytest.param(ErrorCode.NOT_AN_OBJECT, b'[{"role": "user", "content": "hi"}]', None, id="not_an_object-list"),
    pytest.param(ErrorCode.NOT_AN_OBJECT, b'"just a string"', None, id="not_an_object-string"),
    pytest.param(ErrorCode.MISSING_MESSAGES, b'{"prompt": "hi", "prompt_id": "p1"}', None, id="missing_messages"),
    pytest.param(ErrorCode.MESSAGES_NOT_A_LIST, b'{"messages": "hi"}', None, id="messages_not_a_list"),
    pytest.param(ErrorCode.MESSAGES_NOT_A_LIST, b'{"messages": {"role": "user"}}', None, id="messages_an_object"),
    pytest.param(ErrorCode.TOO_FEW_MESSAGES, line([]), None, id="too_few_messages"),
    pytest.param(ErrorCode.MESSAGE_NOT_AN_OBJECT, line([USER, "oops", ASSISTANT]), None, id="message_not_an_object"),
    pytest.param(
        ErrorCode.MESSAGE_MISSING_KEY,
        line([message("user", "hi"), {"role": "assistant"}, ASSISTANT]),
        None,
        id="message_missing_key-content",
    ),
    pytest.param(
        ErrorCode.MESSAGE_MISSING_KEY,
        line([USER, {"content": "hello"}, ASSISTANT]),
        None,
        id="message_missing_key-role",
    ),
    pytest.param(
        ErrorCode.MESSAGE_UNRECOGNIZED_KEY,
        line([USER, message("assistant", "4.", weight=0)]),
        None,
        id="message_unrecognized_key",
    ),
    pytest.param(ErrorCode.UNRECOGNIZED_ROLE, line([USER, message("tool", "{}"), ASSISTANT]), None, id="role-tool"),
    pytest.param(
        ErrorCode.UNRECOGNIZED_ROLE, line([USER, message("User", "again?"), ASSISTANT]), None, id="role-capitalised"
    ),
    pytest.param(
        ErrorCode.CONTENT_NOT_A_STRING, line([message("user", 42), ASSISTANT]), None, id="content_not_a_string"
    ),
    pytest.param(ErrorCode.CONTENT_NOT_A_STRING, line([message("user", None), ASSISTANT]), None, id="content_null"),
    pytest.param(ErrorCode.EMPTY_CONTENT, line([USER, message("assistant", "")]), None, id="empty_content-empty"),
    pytest.param(
        ErrorCode.EMPTY_CONTENT, line([message("user", " \t\n "), ASSISTANT]), None, id="empty_content-whitespace"
    ),
    pytest.param(ErrorCode.SYSTEM_NOT_FIRST, line([USER, SYSTEM, ASSISTANT]), None, id="system_not_first"),
    pytest.param(ErrorCode.MISSING_USER_MESSAGE, line([SYSTEM, ASSISTANT]), None, id="missing_user_message"),
    pytest.param(
        ErrorCode.MISSING_ASSISTANT_MESSAGE, line([USER, message("user", "?")]), None, id="missing_assistant_message"
    ),
    pytest.param(
        ErrorCode.LAST_MESSAGE_NOT_ASSISTANT, line([USER, ASSISTANT, USER]), None, id="last_message_not_assistant"
    ),
    pytest.param(ErrorCode.LINE_TOO_LONG, line(conversation("x" * 300, "ok")), SHORT_LINES, id="line_too_long"),
]

# (code, the file, options): problems of the whole dataset, reported with line None.
DATASET_ERROR_CASES = [
    pytest.param(ErrorCode.EMPTY_DATASET, b"", None, id="empty_dataset-no-bytes"),
    pytest.param(ErrorCode.EMPTY_DATASET, b"\n  \n\r\n", None, id="empty_dataset-blank-lines"),
    pytest.param(
        ErrorCode.TOO_FEW_EXAMPLES,
        jsonl(valid_lines(MIN_TRAIN_ROWS - 1)),
        ValidationOptions(test_fraction=0.0),
        id="too_few_examples",
    ),
]


@pytest.mark.parametrize(("code", "bad_line", "options"), LINE_ERROR_CASES)
def test_a_bad_line_is_reported_with_its_code_and_line_number(code, bad_line, options):
    # given
    data = with_bad_line(bad_line)

    # when
    outcome = validate(data, options)

    # then
    report = outcome.report
    assert report.valid is False
    assert report.error_counts == {code: 1}
    assert outcome.problems == [(BAD_LINE_NO, code)]
    assert report.rows == VALID_BEFORE + 1 + VALID_AFTER
    assert report.split.train + report.split.test == VALID_BEFORE + VALID_AFTER
    assert report.dropped_lines == []


@pytest.mark.parametrize(("code", "data", "options"), DATASET_ERROR_CASES)
def test_a_dataset_problem_is_reported_without_a_line_number(code, data, options):
    # when
    outcome = validate(data, options)

    # then
    assert outcome.report.valid is False
    assert outcome.report.error_counts == {code: 1}
    assert outcome.problems == [(None, code)]


def test_every_error_code_is_covered_by_a_case():
    # given
    line_codes = {case.values[0] for case in LINE_ERROR_CASES}
    dataset_codes = {case.values[0] for case in DATASET_ERROR_CASES}

    # then
    assert line_codes | dataset_codes == set(ErrorCode)
    assert dataset_codes == {ErrorCode.EMPTY_DATASET, ErrorCode.TOO_FEW_EXAMPLES}


def test_too_few_examples_counts_only_valid_training_rows():
    # given: 9 valid rows and 5 invalid ones
    data = jsonl([*valid_lines(MIN_TRAIN_ROWS - 1), *[b"{not json"] * 5])

    # when
    outcome = validate(data, ValidationOptions(test_fraction=0.0))

    # then
    assert outcome.report.valid is False
    assert outcome.report.rows == MIN_TRAIN_ROWS - 1 + 5
    assert outcome.report.error_counts == {ErrorCode.INVALID_JSON: 5, ErrorCode.TOO_FEW_EXAMPLES: 1}
    assert outcome.problems[0] == (None, ErrorCode.TOO_FEW_EXAMPLES)
    assert "9 valid training examples" in outcome.report.errors[0].message


def test_too_few_examples_counts_rows_held_out_for_test_as_missing():
    # given: exactly the minimum, but some of it goes to the test split
    data = jsonl(valid_lines(MIN_TRAIN_ROWS))
    options = ValidationOptions(test_fraction=0.5)

    # when
    outcome = validate(data, options)

    # then
    assert outcome.report.split.test > 0
    assert outcome.report.split.train < MIN_TRAIN_ROWS
    assert outcome.problems == [(None, ErrorCode.TOO_FEW_EXAMPLES)]


def test_the_minimum_number_of_training_rows_is_enough():
    # given
    data = jsonl(valid_lines(MIN_TRAIN_ROWS))

    # when
    outcome = validate(data, ValidationOptions(test_fraction=0.0))

    # then
    assert outcome.report.valid is True
    assert outcome.report.errors == []
    assert outcome.report.split.train == MIN_TRAIN_ROWS


def test_a_line_with_several_problems_reports_each_of_them():
    # given: a capitalised role (so no user message either) and an empty answer
    bad = line([message("User", "hi"), message("assistant", "  ")])

    # when
    outcome = validate(with_bad_line(bad))

    # then
    assert outcome.report.error_counts == {
        ErrorCode.UNRECOGNIZED_ROLE: 1,
        ErrorCode.EMPTY_CONTENT: 1,
        ErrorCode.MISSING_USER_MESSAGE: 1,
    }
    assert {problem.line for problem in outcome.report.errors} == {BAD_LINE_NO}


def test_a_single_message_is_too_few_and_lacks_the_other_role():
    # when
    outcome = validate(with_bad_line(line([USER])))

    # then
    assert sorted(outcome.problems) == [
        (BAD_LINE_NO, ErrorCode.MISSING_ASSISTANT_MESSAGE),
        (BAD_LINE_NO, ErrorCode.TOO_FEW_MESSAGES),
    ]


def test_error_counts_are_complete_while_the_listed_errors_are_capped():
    # given: 30 bad lines, of three kinds, after 20 valid ones
    bad = [b"{oops", line([USER]), line([USER, ASSISTANT, USER])] * 10
    data = jsonl([*valid_lines(20), *bad])
    options = ValidationOptions(max_listed_problems=5)

    # when
    outcome = validate(data, options)

    # then
    assert outcome.report.error_counts == {
        ErrorCode.INVALID_JSON: 10,
        ErrorCode.TOO_FEW_MESSAGES: 10,
        ErrorCode.MISSING_ASSISTANT_MESSAGE: 10,
        ErrorCode.LAST_MESSAGE_NOT_ASSISTANT: 10,
    }
    assert len(outcome.report.errors) == 5
    assert [problem_line for problem_line, _ in outcome.problems] == [21, 22, 22, 23, 24]
    assert outcome.problems[0] == (21, ErrorCode.INVALID_JSON)


def test_the_name_key_on_a_message_is_tolerated():
    # given
    named = line([message("user", "Hi, I'm Ada.", name="ada"), message("assistant", "Hello Ada.", name="bot")])

    # when
    outcome = validate(jsonl([*valid_lines(19), named]))

    # then
    assert outcome.report.valid is True
    assert outcome.report.error_counts == {}
    assert named in outcome.emitted_lines


@pytest.mark.parametrize("role", ["User", "ASSISTANT", "System", " user", "user "])
def test_roles_are_matched_case_sensitively_and_exactly(role):
    # given
    bad = line([USER, message(role, "text"), ASSISTANT])

    # when
    outcome = validate(with_bad_line(bad))

    # then
    assert outcome.problems == [(BAD_LINE_NO, ErrorCode.UNRECOGNIZED_ROLE)]
    assert repr(role) in outcome.report.errors[0].message


def test_extra_top_level_keys_are_fine():
    # given: ultrachat rows carry prompt and prompt_id beside messages
    rows = [
        valid_line(index, prompt=f"Question {index}?", prompt_id=f"{index:064x}", source="ultrachat")
        for index in range(20)
    ]

    # when
    outcome = validate(jsonl(rows))

    # then
    assert outcome.report.valid is True
    assert outcome.report.errors == []
    assert sorted(outcome.emitted_lines) == sorted(rows)


def test_a_system_message_first_is_fine():
    # given
    rows = [line(conversation(f"Q{index}", f"A{index}", system="Be brief.")) for index in range(20)]

    # when
    outcome = validate(jsonl(rows))

    # then
    assert outcome.report.valid is True
    assert outcome.report.errors == []


def test_error_messages_locate_the_problem():
    # given
    data = with_bad_line(line([USER, message("assistant", 7)]))

    # when
    outcome = validate(data)

    # then
    assert outcome.report.errors[0].message == "messages[1].content is a number, not a string"
