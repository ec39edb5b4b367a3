"""Pure rules of the lifecycle: the quality gate, names, the scoring contract, the loss-curve chart."""

from __future__ import annotations

import xml.etree.ElementTree as ET

import pytest

from shared.domain.charts import loss_curve_svg
from shared.domain.gate import GatePolicy, quality_gate
from shared.domain.naming import deployment_name_for, endpoint_name_for, finetuned_model_name
from shared.domain.runs import RunMetrics
from shared.domain.scoring import answer_text, scoring_request, smoke_test_conversation

POLICY = GatePolicy(min_improvement=0.02, champion_tolerance=0.05)


@pytest.mark.parametrize(
    ("eval_loss", "base", "champion", "passed"),
    [
        (0.90, 1.00, None, True),  # beats the base by 10%
        (0.99, 1.00, None, False),  # only 1% better: under the 2% margin
        (0.98, 1.00, None, True),  # exactly the margin
        (0.90, 1.00, 0.80, False),  # 12.5% worse than the champion: over the 5% tolerance
        (0.90, 1.00, 0.88, True),  # 2.3% worse than the champion: within tolerance
        (None, 1.00, None, False),  # no eval loss at all
        (0.90, None, None, False),  # nothing to compare with
    ],
)
def test_quality_gate(eval_loss, base, champion, passed):
    metrics = RunMetrics(eval_loss=eval_loss, base_eval_loss=base, champion_eval_loss=champion, champion="m:1")

    result = quality_gate(metrics, POLICY, champion="m:1" if champion else None)

    assert result.passed is passed
    assert result.reasons


def test_gate_reasons_name_the_numbers():
    metrics = RunMetrics(eval_loss=0.9, base_eval_loss=1.0, champion_eval_loss=0.8, champion="m:3")
    result = quality_gate(metrics, POLICY, champion="m:3")
    assert result.reasons == [
        "eval loss 0.9000 <= 0.9800 (base 1.0000 less 2%)",
        "eval loss 0.9000 > 0.8400 (champion m:3 0.8000 plus 5%) on the same test split",
    ]
    assert result.champion_eval_loss == 0.8


def test_the_champion_loss_is_compared_only_on_the_same_split():
    # given a job that evaluated champion m:2 on its test split, while the champion now is m:3
    metrics = RunMetrics(eval_loss=0.9, base_eval_loss=1.0, champion_eval_loss=0.5, champion="m:2")

    # when the gate compares with m:3
    result = quality_gate(metrics, POLICY, champion="m:3")

    # then m:2's loss is not held against the run: the loss comparison with m:3 is left to the evaluation
    assert result.passed is True
    assert (
        result.reasons[-1] == "champion m:3: no loss on this test split from the engine (the evaluation compares them)"
    )
    assert result.champion_eval_loss is None


def test_without_a_base_eval_the_gate_can_rely_on_the_champion_alone():
    # given a policy for an engine that does not evaluate the base model (Azure ML's pipeline)
    policy = GatePolicy(min_improvement=0.02, champion_tolerance=0.05, require_base_eval=False)

    # when a run reports no base loss
    first = quality_gate(RunMetrics(eval_loss=0.9), policy)
    worse = quality_gate(RunMetrics(eval_loss=0.9, champion_eval_loss=0.8, champion="m:3"), policy, champion="m:3")

    # then the base comparison is skipped, said so, and the champion check still applies
    assert first.passed is True
    assert first.reasons == [
        "no base-model eval loss reported: improvement over the base not checked",
        "no champion yet",
    ]
    assert worse.passed is False


@pytest.mark.parametrize(
    ("base_model", "expected"),
    [
        ("azureml://registries/azureml/models/Phi-3-mini-4k-instruct/labels/latest", "Phi-3-mini-4k-instruct-ft-chat"),
        ("microsoft/Phi-3-mini-4k-instruct", "Phi-3-mini-4k-instruct-ft-chat"),
        ("smollm2-135m-instruct", "smollm2-135m-instruct-ft-chat"),
        ("/models/my model/", "my-model-ft-chat"),
    ],
)
def test_finetuned_model_name(base_model, expected):
    assert finetuned_model_name(base_model, "-ft-chat") == expected


def test_endpoint_names_follow_azure_rules_and_are_stable():
    long_name = endpoint_name_for("Phi-3-mini-4k-instruct-ultrachat-200k-ft-chat")
    assert long_name == endpoint_name_for("Phi-3-mini-4k-instruct-ultrachat-200k-ft-chat")
    for name in (long_name, endpoint_name_for("tiny-ft-chat"), deployment_name_for("ft-0123456789ab")):
        assert 3 <= len(name) <= 32 and name[0].isalpha() and set(name) <= set("abcdefghijklmnopqrstuvwxyz0123456789-")
    assert endpoint_name_for("tiny-ft-chat") == "ep-tiny-ft-chat"


def test_endpoint_names_in_a_workspace_carry_its_digest():
    # Azure ML endpoint names are unique per region across customers: two workspaces get two names
    one = endpoint_name_for("Phi-3-mini-4k-instruct-ft-chat", "/subscriptions/a/resourceGroups/r/workspaces/w1")
    other = endpoint_name_for("Phi-3-mini-4k-instruct-ft-chat", "/subscriptions/a/resourceGroups/r/workspaces/w2")

    assert one != other and one[:-7] == other[:-7] == "ep-phi-3-mini-4k-instruct"
    assert len(one) <= 32 and one == endpoint_name_for(
        "Phi-3-mini-4k-instruct-ft-chat", "/subscriptions/a/resourceGroups/r/workspaces/w1"
    )
    assert deployment_name_for("ft-0123456789ab") == "d-0123456789ab"


def test_scoring_request_is_the_notebooks():
    request = scoring_request([{"role": "user", "content": "hi"}])
    assert request == {
        "input_data": {
            "input_string": [[{"role": "user", "content": "hi"}]],
            "parameters": {"temperature": 0.6, "top_p": 0.9, "do_sample": True, "max_new_tokens": 200},
        },
        "params": {},
    }


@pytest.mark.parametrize(
    ("response", "text"),
    [({"output": "a"}, "a"), ([{"0": "b"}], "b"), ("c", "c"), ({"output": ["d", "e"]}, "d"), ({}, None), ([], None)],
)
def test_answers_are_read_tolerantly(response, text):
    assert answer_text(response) == text


def test_smoke_test_conversation_ends_at_the_last_user_turn():
    row = {
        "prompt": "x",
        "messages": [
            {"role": "system", "content": "s"},
            {"role": "user", "content": "q1"},
            {"role": "assistant", "content": "a1"},
            {"role": "user", "content": "q2"},
            {"role": "assistant", "content": "a2", "name": "bot"},
        ],
    }
    assert smoke_test_conversation(row) == [
        {"role": "system", "content": "s"},
        {"role": "user", "content": "q1"},
        {"role": "assistant", "content": "a1"},
        {"role": "user", "content": "q2"},
    ]


def test_loss_curve_is_well_formed_svg_with_reference_lines():
    svg = loss_curve_svg([(1, 2.0), (2, 1.5), (3, 1.1)], base_eval_loss=2.1, eval_loss=1.2, title="Run <x>")
    root = ET.fromstring(svg)
    assert root.tag.endswith("svg")
    assert "base eval loss 2.100" in svg and "eval loss 1.200" in svg and "Run &lt;x&gt;" in svg
    assert ET.fromstring(loss_curve_svg([])).tag.endswith("svg")
