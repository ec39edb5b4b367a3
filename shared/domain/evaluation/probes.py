"""The forgetting probes: short general prompts with rule-based checks, bundled as probes.json. Pure."""

from __future__ import annotations

import json
import re
import string
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

Category = Literal["knowledge", "arithmetic", "instruction", "format"]

_EDGES = string.punctuation + string.whitespace + "“”‘’«»…"
# an optional leading minus, digits with or without thousands separators, an optional decimal part
_NUMBER = re.compile(r"(?:(?<![\w.,])([-−]))?(?<![\d.,])(\d{1,3}(?:,\d{3})+(?!\d)|\d+)(\.\d+)?")
_JSON_FENCE = re.compile(r"^```(?:json)?\s*(.*?)\s*```$", re.DOTALL | re.IGNORECASE)
_LIST_MARKER = re.compile(r"^(?:[-*•]|\d{1,3}[.)])\s+\S")


class _Check(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ContainsAny(_Check):
    """Some value occurs as a whole word or phrase, case-insensitively."""

    kind: Literal["contains_any"]
    values: tuple[str, ...] = Field(min_length=1)

    def passes(self, answer: str) -> bool:
        return any(_phrase(value).search(answer) for value in self.values)


class NumberIs(_Check):
    """The first number in the answer equals value, within tolerance."""

    kind: Literal["number"]
    value: float
    tolerance: float = Field(default=0.0, ge=0.0)

    def passes(self, answer: str) -> bool:
        found = first_number(answer)
        return found is not None and abs(found - self.value) <= self.tolerance


class JsonObject(_Check):
    """The answer, bare or in a ```json fence, is a JSON object with these keys (and these values, ignoring case)."""

    kind: Literal["json_object"]
    required_keys: tuple[str, ...] = Field(min_length=1)
    equals: dict[str, str] = Field(default_factory=dict)

    def passes(self, answer: str) -> bool:
        text = answer.strip()
        if fenced := _JSON_FENCE.match(text):
            text = fenced.group(1)
        try:
            parsed = json.loads(text)
        except ValueError:
            return False
        if not isinstance(parsed, dict) or not all(key in parsed for key in self.required_keys):
            return False
        return all(key in parsed and _same_text(parsed[key], wanted) for key, wanted in self.equals.items())


class OneWord(_Check):
    """Exactly one word once surrounding punctuation is gone; one of values, ignoring case, when values are given."""

    kind: Literal["one_word"]
    values: tuple[str, ...] = ()

    def passes(self, answer: str) -> bool:
        word = answer.strip(_EDGES)
        if not word or len(word.split()) != 1:
            return False
        return not self.values or word.casefold() in {value.casefold() for value in self.values}


class RegexMatch(_Check):
    """re.search of pattern on the stripped answer; flags "i" ignores case."""

    kind: Literal["regex"]
    pattern: str
    flags: Literal["", "i"] = ""

    @field_validator("pattern")
    @classmethod
    def _compiles(cls, pattern: str) -> str:
        try:
            re.compile(pattern)  # a bad pattern fails loading the probe set, not a probe run
        except re.error as exc:
            raise ValueError(f"not a regular expression: {exc}") from exc
        return pattern

    def passes(self, answer: str) -> bool:
        return re.search(self.pattern, answer.strip(), re.IGNORECASE if self.flags == "i" else 0) is not None


class MaxWords(_Check):
    """At most limit words, and at least one."""

    kind: Literal["max_words"]
    limit: int = Field(ge=1)

    def passes(self, answer: str) -> bool:
        words = [word for word in answer.split() if any(char.isalnum() for char in word)]
        return 0 < len(words) <= self.limit


class AllLowercase(_Check):
    kind: Literal["all_lowercase"]

    def passes(self, answer: str) -> bool:
        letters = [char for char in answer if char.isalpha()]
        return bool(letters) and all(char.islower() for char in letters)


class AllUppercase(_Check):
    kind: Literal["all_uppercase"]

    def passes(self, answer: str) -> bool:
        letters = [char for char in answer if char.isalpha()]
        return bool(letters) and all(char.isupper() for char in letters)


class ListItems(_Check):
    """Exactly count list lines ("-", "*", "1.", "1)"); without any such line, exactly count comma-separated items."""

    kind: Literal["list_items"]
    count: int = Field(ge=1)

    def passes(self, answer: str) -> bool:
        return count_list_items(answer) == self.count


ProbeCheck = Annotated[
    ContainsAny | NumberIs | JsonObject | OneWord | RegexMatch | MaxWords | AllLowercase | AllUppercase | ListItems,
    Field(discriminator="kind"),
]


class Probe(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    id: str = Field(pattern=r"^[a-z0-9][a-z0-9-]*$")
    category: Category
    prompt: str = Field(min_length=1)
    check: ProbeCheck


class ProbeSet(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    about: str
    version: int
    probes: tuple[Probe, ...] = Field(min_length=1)

    @model_validator(mode="after")
    def _unique_ids(self) -> ProbeSet:
        ids = [probe.id for probe in self.probes]
        if duplicates := sorted({probe_id for probe_id in ids if ids.count(probe_id) > 1}):
            raise ValueError(f"duplicate probe ids: {', '.join(duplicates)}")
        return self


@dataclass(frozen=True)
class ProbeOutcome:
    probe_id: str
    category: str
    answer: str
    passed: bool


@cache
def load_probes() -> tuple[Probe, ...]:
    """The bundled probe set, validated."""
    text = Path(__file__).with_name("probes.json").read_text(encoding="utf-8")
    return ProbeSet.model_validate_json(text).probes


def probe_messages(probe: Probe) -> list[dict[str, str]]:
    return [{"role": "user", "content": probe.prompt}]


def probe_passes(probe: Probe, answer: str) -> bool:
    return probe.check.passes(answer)


def probe_pass_rate(outcomes: Sequence[ProbeOutcome]) -> float:
    """The share of outcomes that passed; 0.0 for none."""
    return sum(outcome.passed for outcome in outcomes) / len(outcomes) if outcomes else 0.0


def pass_rate_by_category(outcomes: Sequence[ProbeOutcome]) -> dict[str, float]:
    """The pass rate of each category that has outcomes, by category name."""
    by_category: defaultdict[str, list[ProbeOutcome]] = defaultdict(list)
    for outcome in outcomes:
        by_category[outcome.category].append(outcome)
    return {category: probe_pass_rate(by_category[category]) for category in sorted(by_category)}


def first_number(text: str) -> float | None:
    """The first number in the text: "-7", "1,000", "3.5"; None when there is none. Number words are not read."""
    match = _NUMBER.search(text)
    if match is None:
        return None
    sign, digits, decimals = match.groups()
    return float(("-" if sign else "") + digits.replace(",", "") + (decimals or ""))


def count_list_items(text: str) -> int:
    """The lines that start with a list marker; without any, the comma-separated items."""
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    marked = [line for line in lines if _LIST_MARKER.match(line)]
    if marked:
        return len(marked)
    return sum(1 for item in text.split(",") if item.strip(_EDGES))


def _phrase(value: str) -> re.Pattern[str]:
    words = (re.escape(word) for word in value.split())
    return re.compile(r"(?<!\w)" + r"\s+".join(words) + r"(?!\w)", re.IGNORECASE)


def _same_text(value: object, wanted: str) -> bool:
    text = value if isinstance(value, str) else json.dumps(value)
    return text.strip().casefold() == wanted.strip().casefold()
