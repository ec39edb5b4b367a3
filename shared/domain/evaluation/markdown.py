"""`evaluation.md`: the evidence as a person reads it. Pure."""

from __future__ import annotations

from shared.domain.evaluation.evidence import Answer, Evaluation, ModelSummary

ANSWER_CHARS = 400  # per answer in the page; evaluation.json has them whole


def render_evaluation(evaluation: Evaluation) -> str:
    summary = evaluation.summary
    verdict = "passed" if summary.passed else "refused: " + ", ".join(check.code for check in summary.failed)
    lines = [
        f"# Evaluation: run {evaluation.run_id}",
        "",
        f"- Verdict: **{verdict}**",
        f"- Challenger: `{summary.challenger.model}` (deployment `{summary.deployment}`)",
        f"- Compared with: {_baseline(summary.reference, str(summary.baseline))}",
        f"- {summary.examples} held-out conversations, greedy; {summary.challenger.probes} general-ability probes; "
        f"primary metric `{summary.primary_metric}`; {summary.seconds:.1f} s",
    ]
    if summary.judge_model:
        lines.append(f"- AI-assisted judge: Azure OpenAI deployment `{summary.judge_model}`")
    lines += ["", "## Summary", "", *_summary_table(summary.challenger, summary.reference), ""]
    lines += ["## Checks", ""]
    lines += [f"- {'pass' if check.passed else '**FAIL**'} `{check.code}`: {check.reason}" for check in summary.checks]
    lines += [f"- note: {note}" for note in summary.notes]
    lines += ["", "## Held-out conversations", ""]
    for example in evaluation.examples:
        prompt = example.prompt[-1]["content"] if example.prompt else ""
        lines += [f"### {example.index}. {_one_line(prompt, 120)}", "", f"- reference: {_quote(example.reference)}"]
        lines.append(f"- challenger: {_answer(example.challenger)}")
        if example.baseline is not None:
            lines.append(f"- {summary.baseline}: {_answer(example.baseline)}")
        lines.append("")
    if evaluation.probes:
        has_baseline = any(p.baseline is not None for p in evaluation.probes)
        lines += ["## Forgetting probes", ""]
        lines += ["| probe | challenger | " + (f"{summary.baseline} |" if has_baseline else "")]
        lines += ["|---|---|" + ("---|" if has_baseline else "")]
        for probe in evaluation.probes:
            row = f"| `{probe.probe_id}` | {_mark(probe.challenger_passed)} {_cell(probe.challenger)} |"
            if has_baseline:
                row += f" {_mark(probe.baseline_passed)} {_cell(probe.baseline or '')} |"
            lines.append(row)
        lines.append("")
    return "\n".join(lines)


def _baseline(reference: ModelSummary | None, kind: str) -> str:
    if reference is None:
        return "nothing (no champion deployment, and this engine cannot serve the base model)"
    return f"the {kind} `{reference.model}` (deployment `{reference.deployment}`)"


def _summary_table(challenger: ModelSummary, reference: ModelSummary | None) -> list[str]:
    columns = [challenger, *([reference] if reference else [])]
    rows = [
        "| figure | challenger |" + (" baseline |" if reference else ""),
        "|---|---|" + ("---|" if reference else ""),
    ]
    metrics = sorted({name for model in columns for name in model.scores})
    for name in metrics:
        rows.append(f"| {name} |" + "".join(f" {m.scores.get(name, 0.0):.4f} |" for m in columns))
    rows.append("| degenerate answers |" + "".join(f" {m.degenerate}/{m.answers} |" for m in columns))
    flags = sorted({flag for model in columns for flag in model.flag_counts})
    for flag in flags:
        rows.append(f"| - {flag} |" + "".join(f" {m.flag_counts.get(flag, 0)} |" for m in columns))
    rows.append("| probes passed |" + "".join(f" {m.probes_passed}/{m.probes} |" for m in columns))
    if any(m.eval_loss is not None for m in columns):
        rows.append("| eval loss (same split) |" + "".join(f" {_number(m.eval_loss)} |" for m in columns))
    for name in sorted({name for model in columns for name in model.judge}):
        rows.append(f"| judge {name} |" + "".join(f" {_number(m.judge.get(name))} |" for m in columns))
    return rows


def _answer(answer: Answer) -> str:
    scores = ", ".join(f"{name} {value:.3f}" for name, value in sorted(answer.scores.items()))
    flags = f" **flags: {', '.join(answer.flags)}**" if answer.flags else ""
    return f"{_quote(answer.text)} ({scores}){flags}"


def _quote(text: str) -> str:
    return f"“{_one_line(text, ANSWER_CHARS)}”" if text.strip() else "(empty)"


def _one_line(text: str, limit: int) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"


def _cell(text: str) -> str:
    return _one_line(text, 60).replace("|", "\\|")


def _mark(passed: bool | None) -> str:
    return "-" if passed is None else ("pass" if passed else "fail")


def _number(value: float | None) -> str:
    return "-" if value is None else f"{value:.4f}"
