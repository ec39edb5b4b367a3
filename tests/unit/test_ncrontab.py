"""NCRONTAB schedules as the timer trigger reads them: six fields, UTC, next occurrence strictly after a time."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest

from shared.devhost.ncrontab import next_occurrence, parse


def at(*fields: int) -> datetime:
    return datetime(*fields, tzinfo=UTC)


def occurrences(schedule: str, after: datetime, count: int) -> list[datetime]:
    found = []
    for _ in range(count):
        after = next_occurrence(schedule, after)
        found.append(after)
    return found


def test_every_fifteen_minutes_on_the_minute():
    # given the idle sweep's default schedule and a time between quarter hours
    start = at(2026, 11, 24, 10, 7, 30)

    # when asking for the next three occurrences
    found = occurrences("0 */15 * * * *", start, 3)

    # then they are the next quarter hours at second 0
    assert found == [at(2026, 11, 24, 10, 15), at(2026, 11, 24, 10, 30), at(2026, 11, 24, 10, 45)]


def test_an_occurrence_is_strictly_after_the_given_time():
    assert next_occurrence("0 */15 * * * *", at(2026, 11, 24, 10, 15)) == at(2026, 11, 24, 10, 30)
    assert next_occurrence("0 */15 * * * *", at(2026, 11, 24, 10, 14, 59, 999999)) == at(2026, 11, 24, 10, 15)


def test_every_five_seconds():
    found = occurrences("*/5 * * * * *", at(2026, 1, 1, 0, 0, 58), 3)

    assert found == [at(2026, 1, 1, 0, 1, 0), at(2026, 1, 1, 0, 1, 5), at(2026, 1, 1, 0, 1, 10)]


def test_office_hours_on_weekdays_skip_the_weekend():
    # given Friday 2026-11-27 at 17:30 (after the last slot of the day)
    friday_evening = at(2026, 11, 27, 17, 30)

    # when asking for the next hourly slot 9-17, Monday to Friday
    found = occurrences("0 0 9-17 * * 1-5", friday_evening, 2)

    # then Saturday and Sunday are skipped
    assert found == [at(2026, 11, 30, 9), at(2026, 11, 30, 10)]


def test_sunday_is_zero_and_names_are_accepted():
    assert next_occurrence("0 0 12 * * 0", at(2026, 11, 24)) == at(2026, 11, 29, 12)  # 2026-11-29 is a Sunday
    assert next_occurrence("0 30 9 * Jan Mon", at(2026, 11, 24)) == at(2027, 1, 4, 9, 30)
    assert next_occurrence("0 0 0 * * Sat,Sun", at(2026, 11, 24)) == at(2026, 11, 28)


def test_lists_ranges_and_steps_on_ranges():
    assert occurrences("0 5,10,45 * * * *", at(2026, 3, 1, 8, 6), 3) == [
        at(2026, 3, 1, 8, 10),
        at(2026, 3, 1, 8, 45),
        at(2026, 3, 1, 9, 5),
    ]
    assert occurrences("0 0 8-18/4 * * *", at(2026, 3, 1, 9), 3) == [
        at(2026, 3, 1, 12),
        at(2026, 3, 1, 16),
        at(2026, 3, 2, 8),
    ]
    assert occurrences("0 0 0 1,15-17 * *", at(2026, 3, 1, 1), 3) == [at(2026, 3, 15), at(2026, 3, 16), at(2026, 3, 17)]
    assert next_occurrence("30/10 0 0 * * *", at(2026, 3, 1, 0, 0, 45)) == at(2026, 3, 1, 0, 0, 50)


def test_day_month_and_year_rollover():
    assert next_occurrence("0 0 0 * * *", at(2026, 12, 31, 23, 59, 59)) == at(2027, 1, 1)
    assert next_occurrence("0 0 0 31 * *", at(2026, 4, 1)) == at(2026, 5, 31)  # April has no 31st
    assert next_occurrence("0 0 0 29 2 *", at(2026, 3, 1)) == at(2028, 2, 29)  # the next leap day
    assert next_occurrence("59 59 23 * * *", at(2026, 2, 28, 23, 59, 59)) == at(2026, 3, 1, 23, 59, 59)


def test_day_and_day_of_week_must_both_match_as_in_ncrontab():
    # Friday the 13th: the first after 2026-11-24 is in August 2027
    assert next_occurrence("0 0 0 13 * 5", at(2026, 11, 24)) == at(2027, 8, 13)


def test_time_zones_are_converted_to_utc_and_naive_times_are_utc():
    plus_two = timezone(timedelta(hours=2))
    assert next_occurrence("0 0 12 * * *", datetime(2026, 6, 1, 13, 0, tzinfo=plus_two)) == at(2026, 6, 1, 12)
    assert next_occurrence("0 0 12 * * *", datetime(2026, 6, 1, 15, 0, tzinfo=plus_two)) == at(2026, 6, 2, 12)
    assert next_occurrence("0 0 12 * * *", datetime(2026, 6, 1, 11, 0)) == datetime(2026, 6, 1, 12, 0)


@pytest.mark.parametrize(
    ("schedule", "message"),
    [
        ("0 */15 * * *", "has 5 field(s); expected 6"),
        ("0 0 */15 * * * *", "has 7 field(s); expected 6"),
        ("", "has 0 field(s); expected 6"),
        ("60 * * * * *", "second field '60': 60 is out of range 0-59"),
        ("0 60 * * * *", "minute field '60': 60 is out of range 0-59"),
        ("0 0 24 * * *", "hour field '24': 24 is out of range 0-23"),
        ("0 0 0 0 * *", "day field '0': 0 is out of range 1-31"),
        ("0 0 0 32 * *", "day field '32': 32 is out of range 1-31"),
        ("0 0 0 * 13 *", "month field '13': 13 is out of range 1-12"),
        ("0 0 0 * * 7", "day-of-week field '7': 7 is out of range 0-6"),
        ("*/0 * * * * *", "second field '*/0': the step must be a positive whole number, got '0'"),
        ("0 0 17-9 * * *", "hour field '17-9': the range runs backwards (17 > 9)"),
        ("0 1,,2 * * * *", "minute field '': empty list element"),
        ("0 0 0 * Foo *", "month field 'Foo': 'Foo' is not a number 1-12 or a name"),
        ("0 0 -1 * * *", "hour field '-1': '' is not a number 0-23"),
        ("0 0 0 30 2 *", "never occurs"),
    ],
)
def test_bad_schedules_are_rejected_with_a_clear_message(schedule: str, message: str):
    with pytest.raises(ValueError) as caught:
        next_occurrence(schedule, at(2026, 1, 1))

    assert message in str(caught.value)
    assert repr(schedule) in str(caught.value)


def test_parse_exposes_the_allowed_values():
    schedule = parse("0 */15 9-11 * * 1-5")

    assert schedule.minutes == frozenset({0, 15, 30, 45})
    assert schedule.hours == frozenset({9, 10, 11})
    assert schedule.weekdays == frozenset({1, 2, 3, 4, 5})
