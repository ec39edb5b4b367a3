"""Text out of a growing list of token ids: what each new token adds, held back while it could be the start of a stop
sequence, and cut where one is found. Pure: the decoder is passed in (the tokenizer's `decode`).

Decoding every token alone breaks multi-byte characters and merged spaces, and decoding the whole list each time is
quadratic, so the text is decoded from a short window behind the newest token (the approach of Hugging Face's
text-generation-inference): the window's text without and with the new tokens, and the difference, once it no longer
ends in an unfinished character (U+FFFD).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

Decode = Callable[[Sequence[int]], str]
UNFINISHED = "\ufffd"


class TextStream:
    """The text of one answer as its tokens arrive. `push` returns the text that can be shown now; `stopped` turns
    True when a stop sequence was found (the text ends before it, and later tokens add nothing)."""

    def __init__(self, decode: Decode, stop: Sequence[str] | None = None) -> None:
        self._decode = decode
        self._stop = [s for s in (stop or []) if s]
        self._ids: list[int] = []
        self._prefix_offset = 0
        self._read_offset = 0
        self._text = ""  # everything decoded so far
        self._shown = 0  # how much of it was returned
        self.stopped = False

    @property
    def text(self) -> str:
        """The answer so far, without a stop sequence and what follows it."""
        return self._text

    def push(self, token_id: int) -> str:
        if self.stopped:
            return ""
        self._ids.append(token_id)
        before = self._decode(self._ids[self._prefix_offset : self._read_offset])
        after = self._decode(self._ids[self._prefix_offset :])
        if len(after) <= len(before) or after.endswith(UNFINISHED):
            return ""  # a character or a word boundary still incomplete: wait for the next token
        self._text += after[len(before) :]
        self._prefix_offset, self._read_offset = self._read_offset, len(self._ids)
        return self._release()

    def flush(self) -> str:
        """What is still held back, at the end of the answer."""
        if self.stopped:
            return ""
        rest = self._text[self._shown :]
        self._shown = len(self._text)
        return rest

    def _release(self) -> str:
        if self._stop:
            # a stop sequence may straddle what was shown and the new text: search from before it
            start = max(0, self._shown - max(len(s) for s in self._stop))
            cuts = [index for index in (self._text.find(s, start) for s in self._stop) if index >= 0]
            if cuts:
                self._text = self._text[: min(cuts)]
                self.stopped = True
                rest = self._text[self._shown :]
                self._shown = len(self._text)
                return rest
        end = len(self._text) - held_back(self._text, self._stop)
        if end <= self._shown:
            return ""
        released = self._text[self._shown : end]
        self._shown = end
        return released


def held_back(text: str, stop: Sequence[str]) -> int:
    """How many characters at the end of `text` could begin a stop sequence (and so must not be shown yet)."""
    longest = 0
    for sequence in stop:
        for size in range(min(len(sequence) - 1, len(text)), longest, -1):
            if text.endswith(sequence[:size]):
                longest = size
                break
    return longest
