"""Properties of the validator over generated input: it never raises, and chunking never changes its answer."""

from __future__ import annotations

import itertools
import json

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from shared.domain.chatdata import ErrorCode, Split, ValidationOptions, WarningCode, validate_chunks
from tests.unit.chatdata_builders import chunked, jsonl, line_count, validate

UTF8_BOM = b"\xef\xbb\xbf"
EVERY_CODE = set(ErrorCode)
EVERYTHING_LISTED = 1_000_000

PROPERTY_SETTINGS = settings(
    max_examples=200,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

# -- strategies ---------------------------------------------------------------------------------------

json_scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**63 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=12)
)
json_values = st.recursive(
    json_scalars,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=12,
)
roles = st.sampled_from(["system", "user", "assistant", "User", "ASSISTANT", "tool", ""]) | json_scalars
contents = st.text(max_size=12) | st.sampled_from(["", " ", "\t\n", "\u3000"]) | json_values
message_like = st.one_of(
    st.fixed_dictionaries(
        {"role": roles, "content": contents},
        optional={"name": st.text(max_size=5), "weight": st.integers(0, 1)},
    ),
    st.fixed_dictionaries({}, optional={"role": roles, "content": contents, "extra": json_scalars}),
    json_scalars,
)
row_like = st.fixed_dictionaries(
    {"messages": st.lists(message_like, max_size=6) | json_values},
    optional={"prompt_id": st.text(max_size=4) | json_scalars, "prompt": st.text(max_size=8)},
)

non_blank_text = st.text(min_size=1, max_size=40).filter(lambda text: not text.isspace())
valid_messages = st.builds(
    lambda system, exchanges: (
        ([{"role": "system", "content": system}] if system is not None else [])
        + [
            {"role": role, "content": content}
            for user, assistant in exchanges
            for role, content in (("user", user), ("assistant", assistant))
        ]
    ),
    st.none() | non_blank_text,
    st.lists(st.tuples(non_blank_text, non_blank_text), min_size=1, max_size=4),
)
valid_rows = st.builds(
    lambda messages, extra: {"messages": messages, **extra},
    valid_messages,
    st.fixed_dictionaries({}, optional={"prompt_id": st.text(max_size=6), "prompt": st.text(max_size=10)}),
)


@st.composite
def near_valid_rows(draw: st.DrawFn) -> dict:
    """A valid row with one thing changed (or not): exercises the contract near its edges."""
    row = draw(valid_rows)
    messages = row["messages"]
    index = draw(st.integers(0, len(messages) - 1))
    change = draw(
        st.sampled_from(["none", "role", "content", "drop_key", "add_key", "name", "insert", "append", "messages"])
    )
    if change == "role":
        messages[index]["role"] = draw(roles)
    elif change == "content":
        messages[index]["content"] = draw(contents)
    elif change == "drop_key":
        del messages[index][draw(st.sampled_from(["role", "content"]))]
    elif change == "add_key":
        messages[index][draw(st.text(max_size=6))] = draw(json_scalars)
    elif change == "name":
        messages[index]["name"] = draw(st.text(max_size=6))
    elif change == "insert":
        messages.insert(index, draw(message_like))
    elif change == "append":
        messages.append(draw(message_like))
    elif change == "messages":
        row["messages"] = draw(st.lists(message_like, max_size=2) | json_values)
    return row


rows_of_any_kind = json_values | row_like | near_valid_rows()

line_pieces = st.one_of(
    valid_rows.map(lambda row: json.dumps(row, ensure_ascii=False).encode()),
    rows_of_any_kind.map(lambda row: json.dumps(row).encode()),
    st.binary(max_size=40),
    st.sampled_from([b"", b" ", b"\r", b"{", b"[]", b"null", b'{"messages": []}', b"\xff\xfe", b"caf\xc3"]),
)
jsonl_files = st.builds(
    lambda lines, newline, last_newline: newline.join(lines) + (newline if last_newline else b""),
    st.lists(line_pieces, max_size=25),
    st.sampled_from([b"\n", b"\r\n"]),
    st.booleans(),
)

line_limits = st.integers(8, 400) | st.just(1 << 20)


@st.composite
def chunkings(draw: st.DrawFn, data: bytes) -> list[bytes]:
    """`data` cut at arbitrary points (repeated cuts give empty chunks)."""
    cuts = sorted(draw(st.lists(st.integers(0, len(data)), max_size=12)))
    bounds = [0, *cuts, len(data)]
    return [data[start:end] for start, end in itertools.pairwise(bounds)]


def accepted_by_contract(row: object) -> bool:
    """The data contract of DESIGN.md, written plainly: is this parsed row a valid example?"""
    if not isinstance(row, dict) or not isinstance(row.get("messages"), list) or len(row["messages"]) < 2:
        return False
    roles_seen = []
    for index, message in enumerate(row["messages"]):
        if not isinstance(message, dict) or not {"role", "content"} <= message.keys() <= {"role", "content", "name"}:
            return False
        role, content = message["role"], message["content"]
        if not isinstance(role, str) or role not in ("system", "user", "assistant") or (role == "system" and index):
            return False
        if not isinstance(content, str) or not content.strip():
            return False
        roles_seen.append(role)
    return "user" in roles_seen and roles_seen[-1] == "assistant"


# -- properties ---------------------------------------------------------------------------------------


@PROPERTY_SETTINGS
@given(st.data(), st.binary(max_size=400) | jsonl_files, line_limits)
def test_any_bytes_in_any_chunks_give_a_consistent_report(data, content, max_line_bytes):
    # given
    chunks = data.draw(chunkings(content))
    options = ValidationOptions(max_line_bytes=max_line_bytes, max_listed_problems=EVERYTHING_LISTED, min_train_rows=1)
    emitted: list[tuple[Split, bytes]] = []

    # when
    report = validate_chunks(chunks, options, on_example=lambda split, row: emitted.append((split, row)))

    # then
    lines = line_count(content)
    invalid_lines = {problem.line for problem in report.errors if problem.line is not None}
    assert all(1 <= problem.line <= lines for problem in report.errors if problem.line is not None)
    assert all(1 <= problem.line <= lines for problem in report.warnings)
    assert {problem.code for problem in report.errors} <= EVERY_CODE
    assert {problem.code for problem in report.warnings} <= set(WarningCode)
    assert report.split.train + report.split.test + len(invalid_lines) == report.rows
    assert report.rows + report.warning_counts.get(WarningCode.BLANK_LINE, 0) == lines
    assert sum(report.error_counts.values()) == len(report.errors)
    assert report.stats["bytes"] == len(content)
    if not invalid_lines:
        assert len(emitted) == report.rows


@PROPERTY_SETTINGS
@given(st.lists(rows_of_any_kind, min_size=1, max_size=20))
def test_any_json_value_as_a_row_is_judged_by_the_contract(rows):
    # given
    data = jsonl(json.dumps(row).encode() for row in rows)
    options = ValidationOptions(max_listed_problems=EVERYTHING_LISTED, max_invalid_fraction=0.99, min_train_rows=0)

    # when
    outcome = validate(data, options)

    # then
    rejected = {line_no for line_no, row in enumerate(rows, 1) if not accepted_by_contract(row)}
    assert outcome.invalid_lines == rejected
    assert outcome.report.rows == len(rows)
    assert len(outcome.emitted) == len(rows) - len(rejected)
    assert {code for _, code in outcome.problems} <= EVERY_CODE - {ErrorCode.INVALID_UTF8, ErrorCode.LINE_TOO_LONG}


@PROPERTY_SETTINGS
@given(st.data(), jsonl_files, line_limits, st.floats(0.0, 0.9))
def test_the_report_does_not_depend_on_the_chunking(data, content, max_line_bytes, test_fraction):
    # given: any content, a UTF-8 BOM in front half of the time
    content = (UTF8_BOM if data.draw(st.booleans(), label="bom") else b"") + content
    chunk_size = data.draw(st.integers(1, max(1, len(content))), label="chunk_size")
    options = ValidationOptions(max_line_bytes=max_line_bytes, test_fraction=test_fraction, max_invalid_fraction=0.5)

    # when
    whole = validate(content, options)
    in_chunks = validate(content, options, chunk_size=chunk_size)
    in_arbitrary_chunks = validate_chunks(data.draw(chunkings(content)), options)

    # then
    assert in_chunks.report == whole.report
    assert in_chunks.emitted == whole.emitted
    assert in_arbitrary_chunks == whole.report


@PROPERTY_SETTINGS
@given(st.lists(valid_rows, min_size=10, max_size=30), st.sampled_from([b"\n", b"\r\n"]), st.booleans())
def test_valid_conversations_are_always_accepted(rows, newline, last_newline):
    # given
    lines = [json.dumps(row, ensure_ascii=False).encode() for row in rows]
    data = newline.join(lines) + (newline if last_newline else b"")

    # when
    outcome = validate(data, ValidationOptions(test_fraction=0.0))

    # then
    assert outcome.report.valid is True
    assert outcome.report.errors == []
    assert outcome.report.error_counts == {}
    assert outcome.report.split.model_dump() == {"train": len(rows), "test": 0}
    assert outcome.emitted == [(Split.TRAIN, row) for row in lines]
    assert outcome.report.stats["examples"]["messages"]["min"] >= 2


def test_chunked_builder_splits_without_loss():
    # the helper the properties rely on
    assert b"".join(chunked(b"abcdefg", 3)) == b"abcdefg"
    assert chunked(b"", 3) == [b""]
