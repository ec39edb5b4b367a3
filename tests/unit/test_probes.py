"""The forgetting probes (shared/domain/evaluation/probes.py and its bundled probes.json)."""

from __future__ import annotations

import re
from collections import Counter

import pytest
from pydantic import TypeAdapter, ValidationError

from shared.domain.evaluation.probes import (
    Probe,
    ProbeCheck,
    ProbeOutcome,
    ProbeSet,
    count_list_items,
    first_number,
    load_probes,
    pass_rate_by_category,
    probe_messages,
    probe_pass_rate,
    probe_passes,
)

# the bundled training sample's topics: a probe on them would measure the fine-tune's own data, not general ability
SAMPLE_CAPITAL_COUNTRIES = [
    *["france", "japan", "kenya", "canada", "peru"],
    *["norway", "egypt", "chile", "poland", "vietnam"],
]
SAMPLE_TOPIC_WORDS = [
    *["printer", "router", "laptop", "tablet", "headset", "keyboard", "monitor", "speaker", "device"],
    *["kilometre", "kilometer", "kilogram", "litre", "liter"],
]

# for every bundled probe: an answer that passes its check and one that fails it
ANSWERS: dict[str, tuple[str, str]] = {
    "knowledge-italy-capital": ("Rome.", "Milan"),
    "knowledge-germany-capital": ("The capital of Germany is Berlin.", "The capital of Germany is Munich."),
    "knowledge-spain-capital": ("Madrid is the capital city of Spain.", "Barcelona"),
    "knowledge-red-planet": ("Mars is known as the Red Planet.", "Venus is the Red Planet."),
    "knowledge-largest-planet": ("Jupiter", "Saturn is the largest planet."),
    "knowledge-largest-ocean": ("The Pacific Ocean.", "The Atlantic Ocean."),
    "knowledge-water-formula": ("The chemical formula for water is H2O.", "It is CO2."),
    "knowledge-romeo-and-juliet": ("William Shakespeare wrote it.", "Charles Dickens wrote it."),
    "knowledge-mona-lisa": ("Leonardo da Vinci painted the Mona Lisa.", "Michelangelo painted it."),
    "knowledge-plants-gas": ("Plants take in carbon dioxide.", "Plants take in oxygen."),
    "arithmetic-two-plus-three": ("5", "6"),
    "arithmetic-seven-plus-eight": ("15", "16"),
    "arithmetic-twelve-minus-five": ("7", "17"),
    "arithmetic-six-times-seven": ("The answer is 42.", "The answer is 48."),
    "arithmetic-nine-times-three": ("27", "21"),
    "arithmetic-ten-divided-by-two": ("The answer is 5.", "The answer is 20."),
    "arithmetic-hundreds": ("350", "300"),
    "arithmetic-thousands": ("1,500", "1,000"),
    "arithmetic-half-of-fifty": ("Half of fifty is 25.", "Half of it is 20."),
    "arithmetic-below-zero": ("-7", "7"),
    "instruction-reply-yes": ("Yes.", "Yes, of course!"),
    "instruction-say-hello": ("hello", "Hello! How can I help you today?"),
    "instruction-three-colours": ("1. Red\n2. Blue\n3. Green", "Red, blue, green, yellow"),
    "instruction-three-animals": ("- Dog\n- Cat\n- Horse", "- Dog\n- Cat"),
    "instruction-lowercase": ("grass is green.", "Grass is green."),
    "instruction-uppercase": ("HOT!", "Hot"),
    "instruction-repeat-banana": ("Banana banana", "banana"),
    "instruction-count-to-five": ("1, 2, 3, 4, 5", "1 2 3 4 5"),
    "instruction-start-with-certainly": ("Certainly! The sky is blue.", "The sky is blue. Certainly."),
    "instruction-three-words": ("Mango, definitely.", "My favourite fruit is mango."),
    "format-json-city": ('```json\n{"city": "Rome"}\n```', '{"city": "Milan"}'),
    "format-json-answer": ('{"answer": 7}', "The answer is 7."),
    "format-json-name-age": ('{"name": "Ana", "age": 30}', '{"name": "Ana"}'),
    "format-one-word-sky": ("Blue.", "Light blue"),
    "format-one-word-sun": ("Star", "Planet"),
    "format-number-only-spider": ("8", "A spider has 8 legs."),
    "format-square-brackets": ("[Down]", "Down"),
    "format-double-quotes": ('"White"', "White"),
    "format-comma-fruits": ("apple, banana, cherry, mango", "apple, banana, cherry"),
    "format-lowercase-word": ("hello", "HELLO"),
}

CHECK = TypeAdapter(ProbeCheck)


def check(**fields: object) -> Probe:
    return Probe(id="a-probe", category="format", prompt="A prompt.", check=CHECK.validate_python(fields))


def outcome(category: str, passed: bool) -> ProbeOutcome:
    return ProbeOutcome(probe_id=f"{category}-x", category=category, answer="an answer", passed=passed)


def test_the_bundled_set_loads_with_unique_ids_and_every_category():
    # when
    probes = load_probes()

    # then
    categories = Counter(probe.category for probe in probes)
    assert 36 <= len(probes) <= 44
    assert len({probe.id for probe in probes}) == len(probes)
    assert set(categories) == {"knowledge", "arithmetic", "instruction", "format"}
    assert min(categories.values()) >= 8
    assert len({probe.check.kind for probe in probes}) >= 5
    assert load_probes() is probes


def test_no_probe_touches_the_training_samples_topics():
    # given each probe's prompt and check as text
    texts = {probe.id: (probe.prompt + " " + probe.check.model_dump_json()).lower() for probe in load_probes()}
    words = SAMPLE_CAPITAL_COUNTRIES + SAMPLE_TOPIC_WORDS

    # when
    touching = sorted(f"{probe_id}: {word}" for probe_id, text in texts.items() for word in words if word in text)

    # then
    assert touching == []


def test_every_probe_has_a_passing_and_a_failing_answer_in_the_table():
    assert sorted(ANSWERS) == sorted(probe.id for probe in load_probes())


@pytest.mark.parametrize("probe", load_probes(), ids=lambda probe: probe.id)
def test_each_probe_passes_its_good_answer_and_fails_its_bad_one(probe):
    # given
    good, bad = ANSWERS[probe.id]

    # when / then
    assert probe_passes(probe, good) is True
    assert probe_passes(probe, bad) is False


def test_a_model_that_always_says_the_same_sentence_passes_at_most_two_probes():
    passed = [probe.id for probe in load_probes() if probe_passes(probe, "I can help with that.")]

    assert len(passed) <= 2
    assert passed == []


def test_a_probe_is_asked_as_one_user_message():
    probe = load_probes()[0]

    assert probe_messages(probe) == [{"role": "user", "content": "What is the capital of Italy? Answer in one word."}]


def test_contains_any_matches_whole_words_and_phrases_ignoring_case():
    probe = check(kind="contains_any", values=["carbon dioxide", "co2"])

    assert probe_passes(probe, "CARBON\n dioxide!") is True
    assert probe_passes(probe, "(CO2)") is True
    assert probe_passes(probe, "carbon dioxides") is False
    assert probe_passes(probe, "co2e") is False


@pytest.mark.parametrize(
    ("text", "number"),
    [
        ("42", 42.0),
        ("The answer is 1,500 apples.", 1500.0),
        ("12,345.5 and then 7", 12345.5),
        ("It is -7.", -7.0),
        ("It is −7.", -7.0),
        ("3.25", 3.25),
        ("Answer: 8.", 8.0),
        ("1,2,3", 1.0),
        ("1,5000", 1.0),
        ("10-3", 10.0),
        ("B-52 bombers", 52.0),
        ("seven", None),
        ("", None),
    ],
)
def test_the_first_number_reads_separators_decimals_and_a_leading_minus(text, number):
    assert first_number(text) == number


def test_number_compares_the_first_number_within_tolerance():
    exact, loose = check(kind="number", value=-7), check(kind="number", value=3.14, tolerance=0.01)

    assert probe_passes(exact, "-7") is True
    assert probe_passes(exact, "3 - 10 = -7") is False  # the first number is 3
    assert probe_passes(loose, "About 3.15") is True
    assert probe_passes(loose, "About 3.16") is False
    assert probe_passes(loose, "pi") is False


def test_json_object_accepts_a_fence_and_compares_values_ignoring_case():
    probe = check(kind="json_object", required_keys=["city"], equals={"city": "rome"})

    assert probe_passes(probe, '  {"city": "ROME "}  ') is True
    assert probe_passes(probe, '```json\n{"city": "Rome", "country": "Italy"}\n```') is True
    assert probe_passes(probe, '```\n{"city": "Rome"}\n```') is True
    assert probe_passes(probe, 'Here it is: {"city": "Rome"}') is False
    assert probe_passes(probe, '{"City": "Rome"}') is False
    assert probe_passes(probe, '["city", "Rome"]') is False
    assert probe_passes(probe, '{"city": "Rome"') is False


def test_json_object_compares_numbers_by_their_text_and_needs_every_key():
    probe = check(kind="json_object", required_keys=["name", "age"], equals={"age": "30"})

    assert probe_passes(probe, '{"name": "Ana", "age": 30}') is True
    assert probe_passes(probe, '{"name": "Ana", "age": "30"}') is True
    assert probe_passes(probe, '{"name": "Ana", "age": 31}') is False
    assert probe_passes(probe, '{"age": 30}') is False


def test_one_word_strips_surrounding_punctuation_and_checks_the_values():
    any_word, yes = check(kind="one_word"), check(kind="one_word", values=["yes"])

    assert probe_passes(any_word, "  **Blue**!\n") is True
    assert probe_passes(any_word, "light blue") is False
    assert probe_passes(any_word, " ... ") is False
    assert probe_passes(yes, '"YES."') is True
    assert probe_passes(yes, "No.") is False


def test_regex_searches_the_stripped_answer_with_optional_case_folding():
    strict, folded = check(kind="regex", pattern=r"^\[down\]$"), check(kind="regex", pattern=r"^\[down\]$", flags="i")

    assert probe_passes(strict, "  [down]\n") is True
    assert probe_passes(strict, "[Down]") is False
    assert probe_passes(folded, "[Down]") is True


def test_a_regex_that_does_not_compile_is_refused_when_the_set_loads():
    with pytest.raises(ValidationError):
        check(kind="regex", pattern="(unclosed")


def test_max_words_counts_words_and_refuses_an_empty_answer():
    probe = check(kind="max_words", limit=3)

    assert probe_passes(probe, "Mango - ripe, sweet.") is True  # a lone dash is not a word
    assert probe_passes(probe, "one two three four") is False
    assert probe_passes(probe, "  ") is False


def test_all_lowercase_and_all_uppercase_need_letters_all_of_one_case():
    lower, upper = check(kind="all_lowercase"), check(kind="all_uppercase")

    assert [probe_passes(lower, text) for text in ["green, 42!", "Green", "42", ""]] == [True, False, False, False]
    assert [probe_passes(upper, text) for text in ["HOT, 42!", "HOt", "42", ""]] == [True, False, False, False]


@pytest.mark.parametrize(
    ("text", "items"),
    [
        ("- red\n- blue\n- green", 3),
        ("* red\n* blue", 2),
        ("Colours:\n1. red\n2) blue\n3. green\nThose are three.", 3),
        ("red, blue, green", 3),
        ("Three colours: red, blue, and green.", 3),
        ("red, , blue,", 2),
        ("red\nblue\ngreen", 1),
        ("-red\n-blue", 1),  # no space after the dash: not a marker, and no comma
        ("", 0),
    ],
)
def test_list_items_count_marker_lines_or_else_comma_separated_items(text, items):
    assert count_list_items(text) == items


def test_list_items_wants_exactly_the_count():
    probe = check(kind="list_items", count=3)

    assert probe_passes(probe, "1. red\n2. blue\n3. green") is True
    assert probe_passes(probe, "1. red\n2. blue\n3. green\n4. pink") is False
    assert probe_passes(probe, "red, blue, green, pink") is False


def test_a_check_refuses_unknown_kinds_and_fields():
    with pytest.raises(ValidationError):
        CHECK.validate_python({"kind": "sounds_right"})
    with pytest.raises(ValidationError):
        CHECK.validate_python({"kind": "one_word", "value": "yes"})


def test_a_probe_set_refuses_duplicate_ids():
    probe = {"id": "twice", "category": "format", "prompt": "p", "check": {"kind": "all_lowercase"}}

    with pytest.raises(ValidationError, match=re.escape("duplicate probe ids: twice")):
        ProbeSet.model_validate({"about": "a", "version": 1, "probes": [probe, probe]})


def test_pass_rates_overall_and_by_category():
    # given
    outcomes = [outcome("knowledge", True), outcome("knowledge", False), outcome("arithmetic", True)]
    outcomes += [outcome("format", False), outcome("knowledge", True)]

    # when / then
    assert probe_pass_rate(outcomes) == pytest.approx(3 / 5)
    assert pass_rate_by_category(outcomes) == {"arithmetic": 1.0, "format": 0.0, "knowledge": pytest.approx(2 / 3)}
    assert list(pass_rate_by_category(outcomes)) == ["arithmetic", "format", "knowledge"]
    assert probe_pass_rate([]) == 0.0
    assert pass_rate_by_category([]) == {}
