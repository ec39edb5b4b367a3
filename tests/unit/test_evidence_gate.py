"""The evidence gate's rules, the held-out examples, the batch answers and evaluation.md, on values."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from shared.domain.evaluation.decision import (
    DEGENERATE,
    FORGETTING,
    JUDGE,
    SCORE,
    EvidencePolicy,
    evidence_checks,
    refusal_code,
)
from shared.domain.evaluation.evidence import (
    Answer,
    Baseline,
    Evaluation,
    EvaluationSummary,
    ExampleEvidence,
    ModelSummary,
    ProbeEvidence,
)
from shared.domain.evaluation.heldout import held_out_examples, summarize
from shared.domain.evaluation.markdown import render_evaluation
from shared.domain.scoring import batch_answers, greedy_batch_request

POLICY = EvidencePolicy()


def model(name: str, rouge: float, *, degenerate: int = 0, answers: int = 10, probes_passed: int = 30) -> ModelSummary:
    return ModelSummary(
        deployment=f"d-{name}",
        model=f"m:{name}",
        scores={"rouge_l": rouge, "f1": rouge},
        degenerate=degenerate,
        answers=answers,
        flag_counts={"repetition": degenerate} if degenerate else {},
        probes_passed=probes_passed,
        probes=40,
    )


def test_a_challenger_as_good_as_the_champion_passes_every_check():
    checks = evidence_checks(model("2", 0.41), model("1", 0.42), Baseline.CHAMPION, POLICY)

    assert [(c.code, c.passed) for c in checks] == [(DEGENERATE, True), (SCORE, True), (FORGETTING, True)]
    assert checks[1].reason == "rouge_l 0.4100 >= 0.4000 (champion m:1 0.4200 less 0.02)"


def test_degenerate_answers_over_the_threshold_refuse_and_name_the_flags():
    checks = evidence_checks(model("2", 0.9, degenerate=3), model("1", 0.4), Baseline.CHAMPION, POLICY)

    assert checks[0].passed is False
    assert checks[0].reason == "degenerate answers 3 of 10 (30%): repetition 3; over 20% allowed"
    assert refusal_code(checks) == DEGENERATE


@pytest.mark.parametrize(("ours", "passed"), [(0.38, True), (0.3799, False)])
def test_the_score_tolerance_is_absolute(ours: float, passed: bool):
    checks = evidence_checks(model("2", ours), model("1", 0.40), Baseline.CHAMPION, POLICY)

    assert checks[1].passed is passed


def test_against_a_newer_champion_an_older_run_must_beat_it():
    tie = evidence_checks(model("2", 0.40), model("1", 0.40), Baseline.CHAMPION, POLICY, champion_is_newer=True)
    beats = evidence_checks(model("2", 0.41), model("1", 0.40), Baseline.CHAMPION, POLICY, champion_is_newer=True)

    assert tie[1].passed is False
    assert tie[1].reason == (
        "rouge_l 0.4000 <= 0.4000 of champion m:1, which is from a newer upload: an older run must beat it"
    )
    assert beats[1].passed is True


def test_a_probe_pass_rate_drop_over_the_threshold_is_forgetting():
    # given a challenger that passes 20 of 40 probes where the champion passes 30 (a drop of 25 points)
    checks = evidence_checks(model("2", 0.5, probes_passed=20), model("1", 0.4), Baseline.CHAMPION, POLICY)

    # then it is refused for forgetting, even though its score is better, and forgetting is the code it gets
    assert [(c.code, c.passed) for c in checks] == [(DEGENERATE, True), (SCORE, True), (FORGETTING, False)]
    assert checks[2].reason == (
        "probes passed 20/40 (50%) against 30/40 (75%) for champion m:1: a drop of 25%, over 10% allowed"
    )
    assert refusal_code(checks) == FORGETTING


def test_without_a_baseline_only_the_degeneration_check_applies():
    checks = evidence_checks(model("2", 0.1), None, Baseline.NONE, POLICY)

    assert [c.code for c in checks] == [DEGENERATE]


def test_the_judge_gates_only_when_asked_and_only_with_scores_on_both_sides():
    ours = model("2", 0.4).model_copy(update={"judge": {"similarity": 3.0}})
    theirs = model("1", 0.4).model_copy(update={"judge": {"similarity": 3.5}})

    off = evidence_checks(ours, theirs, Baseline.CHAMPION, POLICY)
    on = evidence_checks(ours, theirs, Baseline.CHAMPION, EvidencePolicy(judge_gates=True))
    unscored = evidence_checks(model("2", 0.4), theirs, Baseline.CHAMPION, EvidencePolicy(judge_gates=True))

    assert JUDGE not in [c.code for c in off + unscored]
    assert (on[-1].code, on[-1].passed) == (JUDGE, False)
    assert on[-1].reason == "AI-judged similarity 3.00 < 3.25 (champion m:1 3.50 less 0.25)"


def test_held_out_examples_end_at_the_last_user_turn_and_keep_the_test_split_positions():
    rows = [
        {"messages": [{"role": "user", "content": "a"}, {"role": "assistant", "content": "A"}]},
        {
            "messages": [
                {"role": "system", "content": "s"},
                {"role": "user", "content": "b"},
                {"role": "assistant", "content": "B1"},
                {"role": "user", "content": "c"},
                {"role": "assistant", "content": "B2"},
            ]
        },
        {"messages": [{"role": "user", "content": "d"}, {"role": "assistant", "content": "D"}]},
    ]

    examples = held_out_examples(rows, limit=2)

    assert [(e.index, [m["content"] for m in e.prompt], e.reference) for e in examples] == [
        (0, ["a"], "A"),
        (1, ["s", "b", "B1", "c"], "B2"),
    ]


def test_a_summary_counts_degenerate_answers_once_and_averages_the_scores():
    answers = [
        Answer(text="x", scores={"rouge_l": 0.5}, flags=["repetition", "no_stop"]),
        Answer(text="y", scores={"rouge_l": 0.25}),
        Answer(text="", scores={"rouge_l": 0.0}, flags=["empty"]),
    ]

    summary = summarize("d-1", "m:1", answers, probes_passed=3, probes=4)

    assert summary.scores == {"rouge_l": 0.25}
    assert (summary.degenerate, summary.answers, summary.degenerate_rate) == (2, 3, 2 / 3)
    assert summary.flag_counts == {"empty": 1, "no_stop": 1, "repetition": 1}
    assert summary.probe_pass_rate == 0.75


def test_batch_answers_read_both_engines_shapes():
    local = {"output": ["a", "b"], "details": [{"finish_reason": "stop"}, {"finish_reason": "length"}]}
    mlflow = [{"0": "a"}, {"0": "b"}]

    assert batch_answers(local, 2) == [("a", "stop"), ("b", "length")]
    assert batch_answers(mlflow, 2) == [("a", None), ("b", None)]
    with pytest.raises(ValueError, match="1 answers to 2 conversations"):
        batch_answers({"output": "a"}, 2)


def test_the_evaluation_request_is_greedy_and_batched():
    body = greedy_batch_request([[{"role": "user", "content": "hi"}]] * 3, 64)

    assert body["input_data"]["parameters"] == {"do_sample": False, "temperature": 0.0, "max_new_tokens": 64}
    assert len(body["input_data"]["input_string"]) == 3


def test_evaluation_md_shows_the_verdict_the_table_the_examples_and_the_probes():
    # given a refused evaluation
    ours, theirs = model("2", 0.9, degenerate=3), model("1", 0.4)
    checks = evidence_checks(ours, theirs, Baseline.CHAMPION, POLICY)
    summary = EvaluationSummary(
        evaluated_at=datetime(2026, 12, 1, tzinfo=UTC),
        deployment="d-2",
        baseline=Baseline.CHAMPION,
        primary_metric="rouge_l",
        examples=1,
        challenger=ours,
        reference=theirs,
        checks=checks,
        seconds=3.2,
    )
    evaluation = Evaluation(
        run_id="ft-000000000002",
        summary=summary,
        thresholds={},
        examples=[
            ExampleEvidence(
                index=4,
                prompt=[{"role": "user", "content": "Why?"}],
                reference="Because.",
                challenger=Answer(text="Enjoy. Enjoy. Enjoy.", scores={"rouge_l": 0.0}, flags=["repetition"]),
                baseline=Answer(text="Because.", scores={"rouge_l": 1.0}),
            )
        ],
        probes=[
            ProbeEvidence(
                probe_id="p-1",
                category="format",
                prompt="One word?",
                challenger="Enjoy.",
                challenger_passed=False,
                baseline="Yes",
                baseline_passed=True,
            )
        ],
    )

    # when it is rendered
    page = render_evaluation(evaluation)

    # then the page says what was refused and why, and shows each side
    assert "- Verdict: **refused: degenerate_answers**" in page
    assert "| rouge_l | 0.9000 | 0.4000 |" in page
    assert "| degenerate answers | 3/10 | 0/10 |" in page
    assert "- **FAIL** `degenerate_answers`: degenerate answers 3 of 10 (30%): repetition 3; over 20% allowed" in page
    assert "- challenger: “Enjoy. Enjoy. Enjoy.” (rouge_l 0.000) **flags: repetition**" in page
    assert "- champion: “Because.” (rouge_l 1.000)" in page
    assert "| `p-1` | fail Enjoy. | pass Yes |" in page
    assert summary.passed is False and summary.model_dump()["passed"] is False
