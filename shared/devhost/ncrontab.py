"""NCRONTAB schedules as Azure Functions timer triggers read them: six fields, evaluated in UTC.

`{second} {minute} {hour} {day} {month} {day-of-week}`, each `*`, a value, a range `a-b`, a step `*/n`, `a-b/n`
or `a/n` (from a to the field's end), or a comma-separated list of those. Months and days of the week may be
named (`Jan`, `Mon`); day-of-week 0 is Sunday. As in NCrontab, a time matches when every field matches (a
restricted day AND a restricted day-of-week must both hold). Pure: no clock, no I/O.
"""

from __future__ import annotations

import calendar
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

_MONTHS = {name.lower(): number for number, name in enumerate(calendar.month_abbr) if name}
_WEEKDAYS = {"sun": 0, "mon": 1, "tue": 2, "wed": 3, "thu": 4, "fri": 5, "sat": 6}
# A schedule that matches nothing within this many years matches nothing ever (the calendar repeats every 28).
_SEARCH_YEARS = 29


@dataclass(frozen=True)
class _FieldKind:
    name: str
    low: int
    high: int
    names: dict[str, int] | None = None


_FIELDS = (
    _FieldKind("second", 0, 59),
    _FieldKind("minute", 0, 59),
    _FieldKind("hour", 0, 23),
    _FieldKind("day", 1, 31),
    _FieldKind("month", 1, 12, _MONTHS),
    _FieldKind("day-of-week", 0, 6, _WEEKDAYS),
)


@dataclass(frozen=True)
class Schedule:
    """A parsed schedule: the allowed values of each field."""

    expression: str
    seconds: frozenset[int]
    minutes: frozenset[int]
    hours: frozenset[int]
    days: frozenset[int]
    months: frozenset[int]
    weekdays: frozenset[int]  # 0 = Sunday

    def matches_day(self, moment: datetime) -> bool:
        # datetime.weekday() is 0 for Monday; NCRONTAB counts from Sunday.
        return moment.month in self.months and moment.day in self.days and (moment.weekday() + 1) % 7 in self.weekdays


def parse(expression: str) -> Schedule:
    """Parse a six-field NCRONTAB expression; ValueError says which field is wrong and why."""
    if not isinstance(expression, str):
        raise ValueError(f"an NCRONTAB schedule is a string, got {type(expression).__name__}")
    fields = expression.split()
    if len(fields) != len(_FIELDS):
        raise ValueError(
            f"NCRONTAB schedule {expression!r} has {len(fields)} field(s); expected 6: "
            "{second} {minute} {hour} {day} {month} {day-of-week}, e.g. '0 */15 * * * *'"
        )
    values = [_parse_field(text, kind, expression) for text, kind in zip(fields, _FIELDS, strict=True)]
    return Schedule(expression, *values)


def next_occurrence(schedule: str | Schedule, after: datetime) -> datetime:
    """The first time strictly after `after` that the schedule matches, to the second, in UTC.

    An aware `after` gives an aware UTC result; a naive one is taken as UTC and gives a naive result.
    """
    parsed = schedule if isinstance(schedule, Schedule) else parse(schedule)
    aware = after.tzinfo is not None
    start = after.astimezone(UTC).replace(tzinfo=None) if aware else after
    moment = start.replace(microsecond=0) + timedelta(seconds=1)
    horizon = moment.year + _SEARCH_YEARS
    while moment.year < horizon:
        if moment.month not in parsed.months:
            moment = _first_of_next_month(moment)
        elif not parsed.matches_day(moment):
            moment = datetime(moment.year, moment.month, moment.day) + timedelta(days=1)
        elif moment.hour not in parsed.hours:
            moment = moment.replace(minute=0, second=0) + timedelta(hours=1)
        elif moment.minute not in parsed.minutes:
            moment = moment.replace(second=0) + timedelta(minutes=1)
        elif moment.second not in parsed.seconds:
            moment += timedelta(seconds=1)
        else:
            return moment.replace(tzinfo=UTC) if aware else moment
    raise ValueError(
        f"NCRONTAB schedule {parsed.expression!r} never occurs (no matching date in {_SEARCH_YEARS} years)"
    )


def _first_of_next_month(moment: datetime) -> datetime:
    if moment.month == 12:
        return datetime(moment.year + 1, 1, 1)
    return datetime(moment.year, moment.month + 1, 1)


def _parse_field(text: str, kind: _FieldKind, expression: str) -> frozenset[int]:
    allowed: set[int] = set()
    for item in text.split(","):
        allowed.update(_parse_item(item, kind, expression))
    return frozenset(allowed)


def _parse_item(item: str, kind: _FieldKind, expression: str) -> range:
    def fail(reason: str) -> ValueError:
        return ValueError(f"NCRONTAB schedule {expression!r}: {kind.name} field {item!r}: {reason}")

    if not item:
        raise fail("empty list element")
    span, slash, step_text = item.partition("/")
    step = 1
    if slash:
        if not step_text.isdigit() or int(step_text) == 0:
            raise fail(f"the step must be a positive whole number, got {step_text!r}")
        step = int(step_text)
    if span == "*":
        low, high = kind.low, kind.high
    elif "-" in span:
        first, _, last = span.partition("-")
        low, high = _value(first, kind, fail), _value(last, kind, fail)
        if low > high:
            raise fail(f"the range runs backwards ({low} > {high})")
    else:
        low = _value(span, kind, fail)
        high = kind.high if slash else low  # `a/n` steps from a to the end of the field
    return range(low, high + 1, step)


def _value(text: str, kind: _FieldKind, fail: Callable[[str], ValueError]) -> int:
    if kind.names and text.lower() in kind.names:
        return kind.names[text.lower()]
    if not text.isdigit():
        expected = f"a number {kind.low}-{kind.high}" + (" or a name" if kind.names else "")
        raise fail(f"{text!r} is not {expected}")
    value = int(text)
    if not kind.low <= value <= kind.high:
        raise fail(f"{value} is out of range {kind.low}-{kind.high}")
    return value
