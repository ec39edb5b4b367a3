"""What an evaluation found, as values: per held-out example and per probe, both models' answers with their scores
and flags, and the summary the run record carries. Written as `evaluation.json`; `evaluation.md` renders it."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum

from pydantic import BaseModel, ConfigDict, Field, computed_field


class Baseline(StrEnum):
    """What the challenger is compared with."""

    CHAMPION = "champion"  # the line's champion, as its deployment serves it
    BASE = "base"  # no champion yet: the base model, served by the engine for the comparison
    NONE = "none"  # nothing to compare with: the degeneration checks and the loss alone


class Value(BaseModel):
    model_config = ConfigDict(frozen=True)


class Answer(Value):
    """One model's answer to one prompt, with its scores against the reference and its degenerate-answer flags."""

    text: str
    scores: dict[str, float] = Field(default_factory=dict)
    flags: list[str] = Field(default_factory=list)
    finish_reason: str | None = None
    judge: dict[str, float | None] = Field(default_factory=dict)


class ExampleEvidence(Value):
    index: int  # the conversation's position in the test split
    prompt: list[dict[str, str]]  # the conversation up to its last user turn
    reference: str  # its last assistant turn
    challenger: Answer
    baseline: Answer | None = None


class ProbeEvidence(Value):
    probe_id: str
    category: str
    prompt: str
    challenger: str
    challenger_passed: bool
    baseline: str | None = None
    baseline_passed: bool | None = None


class ModelSummary(Value):
    """One model's figures over the evaluation."""

    deployment: str
    model: str  # "name:version", or the base model's name
    scores: dict[str, float] = Field(default_factory=dict)  # the mean of each metric over the examples
    degenerate: int = 0  # answers with at least one flag
    answers: int = 0
    flag_counts: dict[str, int] = Field(default_factory=dict)
    probes_passed: int = 0
    probes: int = 0
    eval_loss: float | None = None  # teacher-forced, on the same test split, where the engine reports it
    judge: dict[str, float] = Field(default_factory=dict)  # AI-assisted metrics' means, when a judge is configured

    @computed_field  # type: ignore[prop-decorator]
    @property
    def degenerate_rate(self) -> float:
        return self.degenerate / self.answers if self.answers else 0.0

    @computed_field  # type: ignore[prop-decorator]
    @property
    def probe_pass_rate(self) -> float | None:
        return self.probes_passed / self.probes if self.probes else None


class Check(Value):
    """One rule of the evidence gate: its stable code, whether it held, and why, with the figures."""

    code: str
    passed: bool
    reason: str


class EvaluationSummary(Value):
    """What the run record carries; the whole evidence is in `evaluation.json` beside it."""

    evaluated_at: datetime
    deployment: str  # the challenger's deployment this evaluation is of
    baseline: Baseline
    primary_metric: str
    examples: int
    challenger: ModelSummary
    reference: ModelSummary | None = None  # the champion's or the base model's figures
    checks: list[Check] = Field(default_factory=list)
    notes: list[str] = Field(default_factory=list)
    seconds: float = 0.0
    judge_model: str | None = None  # the Azure OpenAI deployment that judged, when one did

    @computed_field  # type: ignore[prop-decorator]
    @property
    def passed(self) -> bool:
        return all(check.passed for check in self.checks)

    @property
    def failed(self) -> list[Check]:
        return [check for check in self.checks if not check.passed]


class Evaluation(Value):
    """The document: `evaluation.json` under the run's prepared prefix."""

    run_id: str
    summary: EvaluationSummary
    thresholds: dict[str, float | bool | str]
    examples: list[ExampleEvidence]
    probes: list[ProbeEvidence]
