"""The validation report: the JSON contract of DESIGN.md plus a readable Markdown rendering."""

from __future__ import annotations

import hashlib
from typing import Any

import orjson
from pydantic import BaseModel, Field

from shared.domain.pricing import RunEstimate, money


class ReportedProblem(BaseModel):
    line: int | None = Field(description="1-based line number; None for a problem of the whole dataset")
    code: str
    message: str


class SplitCounts(BaseModel):
    train: int = 0
    test: int = 0


class ValidationReport(BaseModel):
    valid: bool
    rows: int
    sha256: str
    error_counts: dict[str, int]
    errors: list[ReportedProblem]
    warnings: list[ReportedProblem]
    stats: dict[str, Any]
    split: SplitCounts
    warning_counts: dict[str, int] = Field(default_factory=dict)
    dropped_lines: list[int] = Field(default_factory=list)
    cost_estimate: RunEstimate | None = None  # what training on it is expected to take and cost

    def to_json_bytes(self) -> bytes:
        return orjson.dumps(self.model_dump(mode="json"), option=orjson.OPT_INDENT_2) + b"\n"

    def summary(self) -> str:
        """One line, for logs and run-history reasons."""
        verdict = "valid" if self.valid else "invalid"
        counts = ", ".join(f"{code} x{n}" for code, n in sorted(self.error_counts.items()))
        text = f"{verdict}: {self.rows} rows, train {self.split.train}, test {self.split.test}"
        return f"{text}; errors: {counts}" if counts else text


def combine_train_test(train: ValidationReport, test: ValidationReport, max_listed: int) -> ValidationReport:
    """One report for a run given explicit train and test files (each validated with all its rows in one split).

    Line numbers stay those of each file; messages from the test file say so. The sha256 is that of the two
    files' digests, in order, so the same pair of files is recognised again."""

    def labelled(problems: list[ReportedProblem], label: str) -> list[ReportedProblem]:
        return [p.model_copy(update={"message": f"{label}: {p.message}"}) for p in problems]

    def added(a: dict[str, int], b: dict[str, int]) -> dict[str, int]:
        return dict(sorted({code: a.get(code, 0) + b.get(code, 0) for code in {*a, *b}}.items()))

    return ValidationReport(
        valid=train.valid and test.valid,
        rows=train.rows + test.rows,
        sha256=hashlib.sha256(f"{train.sha256}:{test.sha256}".encode()).hexdigest(),
        error_counts=added(train.error_counts, test.error_counts),
        errors=(labelled(train.errors, "train file") + labelled(test.errors, "test file"))[:max_listed],
        warnings=(labelled(train.warnings, "train file") + labelled(test.warnings, "test file"))[:max_listed],
        stats={**train.stats, "test_file": test.stats},
        split=SplitCounts(train=train.split.train, test=test.split.train),
        warning_counts=added(train.warning_counts, test.warning_counts),
    )


def render_markdown(report: ValidationReport, title: str = "Dataset validation report") -> str:
    verdict = "**valid**" if report.valid else "**invalid**"
    lines = [
        f"# {title}",
        "",
        f"- Verdict: {verdict}",
        f"- Rows: {report.rows} (train {report.split.train}, test {report.split.test})",
        f"- SHA-256: `{report.sha256}`",
    ]
    if report.dropped_lines:
        shown = ", ".join(map(str, report.dropped_lines[:50]))
        more = f" and {len(report.dropped_lines) - 50} more" if len(report.dropped_lines) > 50 else ""
        lines.append(f"- Dropped invalid lines ({len(report.dropped_lines)}): {shown}{more}")
    lines += _problem_section("Errors", report.error_counts, report.errors)
    lines += _problem_section("Warnings", report.warning_counts, report.warnings)
    lines += _stats_section(report.stats)
    lines += _estimate_section(report.cost_estimate)
    return "\n".join(lines) + "\n"


def _problem_section(heading: str, counts: dict[str, int], listed: list[ReportedProblem]) -> list[str]:
    if not counts:
        return ["", f"## {heading}", "", "None."]
    total = sum(counts.values())
    out = ["", f"## {heading} ({total})", "", "| code | count |", "|---|---|"]
    out += [f"| `{code}` | {n} |" for code, n in sorted(counts.items(), key=lambda item: (-item[1], item[0]))]
    out += ["", f"First {len(listed)} listed:" if len(listed) < total else "All listed:", ""]
    out += [f"- line {p.line if p.line is not None else '-'}: `{p.code}`: {p.message}" for p in listed]
    return out


def _stats_section(stats: dict[str, Any]) -> list[str]:
    out = ["", "## Statistics (valid examples)", ""]
    rows = [
        (f"{group}: {metric.replace('_', ' ')}", summary)
        for group in ("examples", "assistant")
        for metric, summary in stats.get(group, {}).items()
    ]
    if not any(summary for _, summary in rows):
        return [*out, "No valid examples."]
    out += ["| measure | min | mean | p50 | p95 | max |", "|---|---|---|---|---|---|"]
    for name, summary in rows:
        if summary:
            cells = " | ".join(str(summary[key]) for key in ("min", "mean", "p50", "p95", "max"))
            out.append(f"| {name} | {cells} |")
    out += [
        "",
        f"- Examples over max_seq_length ({stats.get('max_seq_length')} tokens): "
        f"{stats.get('exceeds_max_seq_length', 0)}",
        f"- Token estimate: {stats.get('token_estimate')}",
        f"- Duplicate check: {stats.get('duplicate_check')}",
    ]
    return out


def _estimate_section(estimate: RunEstimate | None) -> list[str]:
    if estimate is None:
        return []
    where = f"{estimate.nodes} x {estimate.instance_type}" if estimate.instance_type else "this machine"
    return [
        "",
        "## Estimated cost of the run",
        "",
        f"- Billed tokens: {estimate.billed_tokens:,} ({estimate.train_rows} training rows x {estimate.epochs} "
        f"epochs x {estimate.tokens_per_row:.0f} tokens)",
        f"- Time: {estimate.machine_hours:.2f} h on {where} ({estimate.gpu_hours:.2f} GPU-hours)",
        f"- Cost: {money(estimate.cost, estimate.currency)}",
        *(f"- {assumption}" for assumption in estimate.assumptions),
    ]
