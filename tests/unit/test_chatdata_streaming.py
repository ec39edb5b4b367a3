"""The validator reads a stream of chunks: the result must not depend on where the chunks end."""

from __future__ import annotations

import pytest

from shared.domain.chatdata import DatasetValidator, ErrorCode, ValidationOptions, WarningCode
from shared.domain.chatdata.lines import LineSplitter, LineTooLong
from tests.unit.chatdata_builders import conversation, jsonl, line, message, valid_line, valid_lines, validate

UTF8_BOM = b"\xef\xbb\xbf"
LIMIT = 300
OPTIONS = ValidationOptions(max_line_bytes=LIMIT, max_invalid_fraction=0.5)


def mixed_input() -> bytes:
    """Valid rows, every kind of trouble, CRLF lines, and a last line without its newline."""
    rows = [
        *valid_lines(6),
        b"",
        b"{not json",
        b'{"messages": "caf\xe9"}',
        line(conversation("long " * 100, "answer")),
        valid_line(6) + b"\r",
        b"\r",
        line([message("user", "only me")]),
        valid_line(2),
        *valid_lines(10, start=7),
        b"   ",
        line(conversation(), prompt_id="a"),
        line(conversation("other", "one"), prompt_id="a"),
    ]
    return UTF8_BOM + jsonl(rows) + valid_line(99)


def feed_all(splitter: LineSplitter, chunks: list[bytes]) -> list[bytes | LineTooLong]:
    out: list[bytes | LineTooLong] = []
    for chunk in chunks:
        out += splitter.feed(chunk)
    return out + splitter.finish()


# -- the whole validator ----------------------------------------------------------------------------------


@pytest.mark.parametrize("chunk_size", [1, 2, 3, 7, 64, 299, 300, 301, 4096])
def test_the_report_is_the_same_whatever_the_chunking(chunk_size):
    # given
    data = mixed_input()
    whole = validate(data, OPTIONS)

    # when
    chunked = validate(data, OPTIONS, chunk_size=chunk_size)

    # then
    assert chunked.report == whole.report
    assert chunked.emitted == whole.emitted


def test_the_mixed_input_is_reported_line_by_line():
    # when
    outcome = validate(mixed_input(), OPTIONS, chunk_size=7)

    # then
    report = outcome.report
    assert outcome.problems == [
        (8, ErrorCode.INVALID_JSON),
        (9, ErrorCode.INVALID_UTF8),
        (10, ErrorCode.LINE_TOO_LONG),
        (13, ErrorCode.TOO_FEW_MESSAGES),
        (13, ErrorCode.MISSING_ASSISTANT_MESSAGE),
    ]
    assert outcome.warnings == [
        (7, WarningCode.BLANK_LINE),
        (12, WarningCode.BLANK_LINE),
        (14, WarningCode.DUPLICATE_CONVERSATION),
        (25, WarningCode.BLANK_LINE),
        (27, WarningCode.DUPLICATE_PROMPT_ID),
    ]
    assert report.rows == 25
    assert report.valid is True
    assert report.dropped_lines == [8, 9, 10, 13]
    assert len(outcome.emitted) == 21
    assert outcome.emitted_lines[0] == valid_line(0)
    assert outcome.emitted_lines[6] == valid_line(6)
    assert outcome.emitted_lines[-1] == valid_line(99)


def test_a_long_line_spanning_many_chunks_is_too_long_and_later_lines_keep_their_numbers():
    # given: line 3 is over 5,000 bytes, fed 7 bytes at a time against a 200-byte limit
    long_line = line(conversation("x" * 5000, "y"))
    rows = [*valid_lines(2, start=10), long_line, *valid_lines(20, start=20)]
    rows[4] = b"{broken"
    data = jsonl(rows)
    options = ValidationOptions(max_line_bytes=200, max_invalid_fraction=0.2)

    # when
    outcome = validate(data, options, chunk_size=7)

    # then
    assert outcome.problems == [(3, ErrorCode.LINE_TOO_LONG), (5, ErrorCode.INVALID_JSON)]
    assert outcome.report.errors[0].message == f"{len(long_line)} bytes; the limit is 200"
    assert outcome.report.rows == 23
    assert outcome.report.dropped_lines == [3, 5]
    assert outcome.emitted_lines == [rows[0], rows[1], rows[3], *rows[5:]]


@pytest.mark.parametrize("chunk_size", [None, 1, 5])
def test_a_line_exactly_at_the_limit_is_accepted_and_one_byte_more_is_not(chunk_size):
    # given
    at_limit = valid_line(1000)
    over = valid_line(1001) + b" "
    limit = len(at_limit)
    assert len(over) == limit + 1
    data = jsonl([*valid_lines(20), at_limit, over])

    # when
    outcome = validate(data, ValidationOptions(max_line_bytes=limit), chunk_size=chunk_size)

    # then
    assert outcome.problems == [(22, ErrorCode.LINE_TOO_LONG)]
    assert outcome.report.errors[0].message == f"{limit + 1} bytes; the limit is {limit}"


@pytest.mark.parametrize("chunk_size", [None, 1, 13])
def test_the_last_line_without_a_newline_is_validated(chunk_size):
    # given
    data = jsonl(valid_lines(20)) + line([message("user", "hello?"), message("user", "where is my answer?")])

    # when
    outcome = validate(data, chunk_size=chunk_size)

    # then
    assert outcome.problems == [(21, ErrorCode.MISSING_ASSISTANT_MESSAGE)]
    assert outcome.report.rows == 21


@pytest.mark.parametrize("chunk_size", [None, 1, 13])
def test_a_valid_last_line_without_a_newline_is_emitted(chunk_size):
    # given
    rows = valid_lines(20)
    data = jsonl(rows[:-1]) + rows[-1]

    # when
    outcome = validate(data, chunk_size=chunk_size)

    # then
    assert outcome.report.valid is True
    assert outcome.emitted_lines == rows


def test_empty_chunks_change_nothing():
    # given
    data = jsonl([*valid_lines(20), b"{"])
    chunks = [b"", *[bytes([byte]) for byte in data[:50]], b"", b"", data[50:], b""]
    validator = DatasetValidator(OPTIONS)

    # when
    for chunk in chunks:
        validator.feed(chunk)
    report = validator.finish()

    # then
    assert report == validate(data, OPTIONS).report


def test_finish_may_be_called_only_once():
    # given
    validator = DatasetValidator()
    validator.feed(jsonl(valid_lines(20)))
    validator.finish()

    # then
    with pytest.raises(RuntimeError):
        validator.finish()


@pytest.mark.parametrize("chunk_size", [1, 2, 10])
def test_a_bom_does_not_make_the_result_depend_on_the_chunking(chunk_size):
    # given: line 1, the longest, is exactly max_line_bytes long once its BOM is removed
    lines = sorted(valid_lines(21), key=len, reverse=True)
    data = UTF8_BOM + jsonl(lines)
    options = ValidationOptions(max_line_bytes=len(lines[0]))

    # when
    whole = validate(data, options)
    chunked = validate(data, options, chunk_size=chunk_size)

    # then
    assert whole.report.valid is True
    assert chunked.report == whole.report


# -- LineSplitter ---------------------------------------------------------------------------------------


def test_line_splitter_returns_the_lines_a_chunk_completes():
    # given
    splitter = LineSplitter(max_line_bytes=100)

    # when
    lines = splitter.feed(b"one\ntwo\n\nthree")

    # then
    assert lines == [b"one", b"two", b""]
    assert splitter.finish() == [b"three"]


def test_line_splitter_holds_a_line_pending_across_chunks():
    # given
    splitter = LineSplitter(max_line_bytes=100)

    # when
    first = splitter.feed(b"ab")
    second = splitter.feed(b"c")
    third = splitter.feed(b"d\nef")
    fourth = splitter.feed(b"\n")

    # then
    assert (first, second, third, fourth) == ([], [], [b"abcd"], [b"ef"])
    assert splitter.finish() == []


def test_line_splitter_keeps_carriage_returns():
    splitter = LineSplitter(max_line_bytes=100)

    assert feed_all(splitter, [b"a\r", b"\nb\r\n"]) == [b"a\r", b"b\r"]


def test_line_splitter_turns_a_pending_line_over_the_limit_into_line_too_long():
    # given
    splitter = LineSplitter(max_line_bytes=4)

    # when
    lines = feed_all(splitter, [b"ok\nabc", b"de", b"fgh\nnext\n", b"xy", b"z"])

    # then
    assert lines == [b"ok", LineTooLong(8), b"next", b"xyz"]


def test_line_splitter_accepts_a_pending_line_exactly_at_the_limit():
    splitter = LineSplitter(max_line_bytes=4)

    assert feed_all(splitter, [b"ab", b"cd\n", b"ab", b"cde\n"]) == [b"abcd", LineTooLong(5)]


def test_line_splitter_reports_the_full_length_of_an_unfinished_long_line():
    splitter = LineSplitter(max_line_bytes=4)

    assert feed_all(splitter, [b"x" * 3] * 5) == [LineTooLong(15)]


def test_line_splitter_leaves_a_long_line_within_one_chunk_to_the_caller():
    # given: the caller checks the length of lines that never spanned chunks
    splitter = LineSplitter(max_line_bytes=4)

    # then
    assert splitter.feed(b"abcdefgh\n") == [b"abcdefgh"]


def test_line_splitter_ignores_empty_chunks_and_sees_nothing_in_nothing():
    splitter = LineSplitter(max_line_bytes=4)

    assert feed_all(splitter, [b"", b"", b""]) == []
    assert feed_all(LineSplitter(max_line_bytes=4), [b"a", b"", b"b"]) == [b"ab"]
