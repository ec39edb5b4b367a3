"""Degenerate-answer flags (shared/domain/evaluation/degeneration.py), calibrated on real answers."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from shared.domain.evaluation.degeneration import (
    DegenerationPolicy,
    Flag,
    degeneration_flags,
    describe_flags,
    estimated_tokens,
    leaked_markup,
    repeated_ngram_ratio,
)

SAMPLE = Path(__file__).resolve().parents[2] / "samples" / "ultrachat_sample.jsonl"

# real answers of a badly fine-tuned model
LOOPING_ANSWERS = [
    "1. Check the battery level. If it's not charging, check the battery. If it's charging, check the battery. "
    "If it's not charging, check the power supply. If it's charging, check the battery. If it's not charging, "
    "check the power supply. If it's charging, check the battery. If it's not charging, check the power supply.",
    "Sorry to hear that. Enjoy. Enjoy. Enjoy. Enjoy. Enjoy. Enjoy. Enjoy. Enjoy. Enjoy. Enjoy. Enjoy. Enjoy.",
    "Keep it plugged in. Keep it plugged in. Keep it plugged in. Keep it plugged in.",
]
# a real good answer of a fine-tuned model: its list items share words, but it does not loop
GOOD_ANSWER = (
    "Sorry to hear your printer is slow. Let's fix it step by step.\n1. Remove the cover of the Vandelay printer.\n"
    "2. Remove the battery.\n3. Connect the power to the printer.\n4. Wait for 10 minutes.\n"
    "5. Check the printer is functioning.\n\n"
    "If it still isn't working, contact customer support at the Vandalium website."
)


def sample_answers() -> list[str]:
    rows = [json.loads(line) for line in SAMPLE.read_text(encoding="utf-8").splitlines() if line.strip()]
    return [message["content"] for row in rows for message in row["messages"] if message["role"] == "assistant"]


def test_no_answer_of_the_training_sample_is_flagged_at_the_defaults():
    # given every assistant turn of the bundled sample
    answers = sample_answers()

    # when each is flagged as a 128-token completion of unknown length
    flagged = [(answer, flags) for answer in answers if (flags := degeneration_flags(answer, max_new_tokens=128))]

    # then none is, and the file is the one this was calibrated on
    assert len(answers) == 286
    assert flagged == []


@pytest.mark.parametrize("answer", LOOPING_ANSWERS)
def test_real_looping_answers_are_flagged_for_repetition(answer):
    flags = degeneration_flags(answer, max_new_tokens=128)

    assert flags == (Flag.REPETITION,)


def test_a_real_good_answer_is_not_flagged():
    flags = degeneration_flags(GOOD_ANSWER, max_new_tokens=128)

    assert flags == ()
    assert repeated_ngram_ratio(GOOD_ANSWER) == 0.0


def test_the_ratio_counts_trigrams_that_repeat_an_earlier_one():
    # given 16 words: 14 trigrams, of which 4 are distinct
    answer = "Keep it plugged in. Keep it plugged in. Keep it plugged in. Keep it plugged in."

    # when / then
    assert repeated_ngram_ratio(answer) == pytest.approx(1 - 4 / 14)


def test_a_repeated_single_word_repeats_its_trigrams():
    # "sorry to hear", "to hear that", "hear that enjoy", "that enjoy enjoy", then "enjoy enjoy enjoy" ten times
    answer = "Sorry to hear that. " + " ".join(["Enjoy."] * 12)

    assert repeated_ngram_ratio(answer) == pytest.approx(1 - 5 / 14)


def test_the_ratio_ignores_case_and_punctuation_at_word_ends():
    assert repeated_ngram_ratio("Go home now. go HOME, now!") == pytest.approx(1 - 3 / 4)
    assert repeated_ngram_ratio("a b c", n=2) == 0.0
    assert repeated_ngram_ratio("too short") == 0.0
    assert repeated_ngram_ratio("") == 0.0


def test_a_ratio_exactly_at_the_threshold_flags_repetition():
    # given 6 trigrams, 3 of them distinct: a ratio of exactly 0.5
    answer = "a b c a b c a b"
    assert repeated_ngram_ratio(answer) == 0.5

    # when / then
    assert degeneration_flags(answer, max_new_tokens=128) == (Flag.REPETITION,)
    assert degeneration_flags(answer, max_new_tokens=128, policy=DegenerationPolicy(repetition_threshold=0.51)) == ()


def test_answers_with_fewer_than_min_ngrams_are_never_flagged_for_repetition():
    # given 5 trigrams that are all the same
    answer = "Enjoy. Enjoy. Enjoy. Enjoy. Enjoy. Enjoy. Enjoy."
    assert repeated_ngram_ratio(answer) == pytest.approx(0.8)

    # when / then: one trigram short of the default minimum of 6
    assert degeneration_flags(answer, max_new_tokens=128) == ()
    assert degeneration_flags(answer, max_new_tokens=128, policy=DegenerationPolicy(min_ngrams=5)) == (Flag.REPETITION,)


@pytest.mark.parametrize("answer", ["", "   ", "\n\t "])
def test_an_empty_answer_is_flagged_empty_and_nothing_else(answer):
    flags = degeneration_flags(answer, max_new_tokens=128, finish_reason="length", completion_tokens=128)

    assert flags == (Flag.EMPTY,)


def test_the_estimate_is_four_characters_a_token_rounded_up():
    assert [estimated_tokens(text) for text in ["", "abc", "abcd", "abcde", "x" * 486]] == [0, 1, 1, 2, 122]


def test_without_a_finish_reason_or_a_count_the_estimate_decides_no_stop():
    # given 0.95 * 128 = 121.6 tokens as the limit: 486 characters are 122 tokens, 484 are 121
    long_answer, short_answer = "x" * 486, "x" * 484

    # when / then
    assert degeneration_flags(long_answer, max_new_tokens=128) == (Flag.NO_STOP,)
    assert degeneration_flags(short_answer, max_new_tokens=128) == ()


def test_a_reported_completion_length_beats_the_estimate():
    long_answer = "x" * 486

    assert degeneration_flags(long_answer, max_new_tokens=128, completion_tokens=127) == ()
    assert degeneration_flags("Fine.", max_new_tokens=128, completion_tokens=128) == (Flag.NO_STOP,)


def test_a_reported_finish_reason_beats_the_completion_length_and_the_estimate():
    long_answer = "x" * 486

    assert degeneration_flags(long_answer, max_new_tokens=128, finish_reason="stop", completion_tokens=128) == ()
    assert degeneration_flags("Fine.", max_new_tokens=128, finish_reason="length", completion_tokens=3) == (
        Flag.NO_STOP,
    )


def test_flags_come_in_flag_order():
    # given an answer that loops, ran out of tokens and leaks an end-of-turn token
    answer = "Keep it plugged in. Keep it plugged in. Keep it plugged in. <|im_end|> Keep it plugged in."

    # when
    flags = degeneration_flags(answer, max_new_tokens=32, finish_reason="length")

    # then
    assert flags == (Flag.NO_STOP, Flag.REPETITION, Flag.TEMPLATE_LEAK)
    assert describe_flags(flags) == "no_stop, repetition, template_leak"


def test_describe_flags_joins_them_as_given():
    assert describe_flags([Flag.REPETITION, Flag.NO_STOP]) == "repetition, no_stop"
    assert describe_flags(()) == ""


@pytest.mark.parametrize(
    ("text", "found"),
    [
        ("Paris.<|im_end|>\n<|im_start|>user\nThanks", ["<|im_end|>", "<|im_start|>"]),
        ("Sure.<|end|><|assistant|>Again.<|end|>", ["<|end|>", "<|assistant|>"]),
        ("Done<|eot_id|> and <|endoftext|>", ["<|eot_id|>", "<|endoftext|>"]),
        ("<s>[INST] hi [/INST] hello</s>", ["<s>", "[INST]", "[/INST]", "</s>"]),
        ("Hi<end_of_turn>\n<start_of_turn>model", ["<end_of_turn>", "<start_of_turn>"]),
        ("Oslo is the capital.\nuser\nThanks\nassistant\nYou're welcome.", ["user", "assistant"]),
        ("  system  \nBe brief.", ["system"]),
    ],
)
def test_leaked_markup_finds_special_tokens_in_order_each_once(text, found):
    assert leaked_markup(text) == found


@pytest.mark.parametrize(
    "text",
    [
        "The user asked about the assistant and the system.",
        "Assistant: here you go",
        "Use a <b>bold</b> tag or a list [1, 2] | a pipe.",
        "Users\nAssistants",
    ],
)
def test_plain_text_that_only_mentions_roles_or_markup_is_not_a_leak(text):
    assert leaked_markup(text) == []


def test_a_leaked_role_line_flags_template_leak():
    # what decoding with skip_special_tokens leaves of "<|im_start|>assistant\n"
    answer = "The capital of Italy is Rome.\nassistant\nThe capital of Italy is Rome."

    assert degeneration_flags(answer, max_new_tokens=128, finish_reason="stop") == (Flag.TEMPLATE_LEAK,)


@pytest.mark.parametrize(
    "policy",
    [
        {"repetition_threshold": 0.0},
        {"repetition_threshold": 1.5},
        {"ngram": 0},
        {"min_ngrams": 0},
        {"no_stop_fraction": 0.0},
    ],
)
def test_a_policy_out_of_range_is_refused(policy):
    with pytest.raises(ValueError):
        DegenerationPolicy(**policy)
