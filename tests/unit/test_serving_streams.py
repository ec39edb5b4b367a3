"""The pure parts of streaming: text released token by token (unfinished characters and stop sequences held back),
and OpenAI's chunk shapes."""

from __future__ import annotations

import json

import pytest

from shared.engine.local.serving.openai_shapes import DONE, ChunkWriter, chat_completion, usage_of
from shared.engine.local.serving.streaming import TextStream, held_back


# a byte-level "tokenizer": each id is one byte of UTF-8, so a multi-byte character spans several tokens
def decode(ids) -> str:
    return bytes(ids).decode("utf-8", errors="replace")


def push_all(stream: TextStream, text: str) -> list[str]:
    return [stream.push(byte) for byte in text.encode("utf-8")]


def test_text_is_released_as_it_is_decoded_and_adds_up_to_the_whole():
    stream = TextStream(decode)

    pieces = push_all(stream, "héllo wörld")

    assert "".join(pieces) + stream.flush() == "héllo wörld"
    assert pieces[:2] == ["h", ""]  # the first byte of é alone is not a character yet
    assert pieces[2] == "é"


def test_a_stop_sequence_is_cut_with_what_follows_and_never_shown():
    # given a stop sequence that arrives one byte at a time
    stream = TextStream(decode, stop=["END"])

    # when the answer says it in the middle
    pieces = push_all(stream, "one two EN")
    assert "".join(pieces) == "one two "  # "EN" could begin "END": held back
    more = push_all(stream, "D three")

    # then nothing from the stop sequence on is shown, and the stream says it stopped
    assert "".join(more) == ""
    assert stream.stopped and stream.text == "one two "
    assert stream.flush() == ""


def test_a_held_back_prefix_that_turns_out_not_to_stop_is_released():
    stream = TextStream(decode, stop=["END"])

    shown = "".join(push_all(stream, "an ENd"))

    assert shown == "an ENd" and not stream.stopped


@pytest.mark.parametrize(
    ("text", "stops", "expected"),
    [("abc", ["cde"], 1), ("abcd", ["cde"], 2), ("abc", ["x"], 0), ("ab", ["abc", "b"], 2), ("", ["a"], 0)],
)
def test_held_back_is_the_longest_suffix_that_begins_a_stop(text: str, stops: list[str], expected: int):
    assert held_back(text, stops) == expected


def test_chunks_carry_the_role_first_and_the_finish_reason_last():
    writer = ChunkWriter("blue")

    events = [writer.text(0, "Hel"), writer.text(0, "lo"), writer.finish(0, "length")]
    chunks = [json.loads(event.removeprefix(b"data: ")) for event in events]

    assert all(event.endswith(b"\n\n") for event in events)
    assert [c["choices"][0]["delta"] for c in chunks] == [
        {"role": "assistant", "content": "Hel"},
        {"content": "lo"},
        {},
    ]
    assert [c["choices"][0]["finish_reason"] for c in chunks] == [None, None, "length"]
    assert {c["id"] for c in chunks} == {writer.id} and {c["object"] for c in chunks} == {"chat.completion.chunk"}
    assert DONE == b"data: [DONE]\n\n"


def test_an_empty_answer_still_gets_its_role_and_the_usage_chunk_has_no_choices():
    writer = ChunkWriter("blue")

    finished = json.loads(writer.finish(1, "stop").removeprefix(b"data: "))
    usage = json.loads(writer.usage([{"prompt_tokens": 5, "completion_tokens": 0}]).removeprefix(b"data: "))

    assert finished["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    assert usage["choices"] == [] and usage["usage"] == {"prompt_tokens": 5, "completion_tokens": 0, "total_tokens": 5}


def test_n_choices_count_their_shared_prompt_once():
    details = [{"prompt_tokens": 7, "completion_tokens": 3, "finish_reason": "stop"}] * 2

    completion = chat_completion("green", ["a", "b"], details)

    assert usage_of(details) == {"prompt_tokens": 7, "completion_tokens": 6, "total_tokens": 13}
    assert [c["message"]["content"] for c in completion["choices"]] == ["a", "b"]
    assert completion["usage"]["total_tokens"] == 13 and completion["model"] == "green"
