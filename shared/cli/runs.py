"""`autopilot runs show ID [--json]` (a run with its evaluation), `autopilot runs repair ID [--restore]` (a damaged
run record, shown as stored, put back from its kept copy) and `autopilot lines [LINE] [--json]` (the model lines)."""

from __future__ import annotations

import argparse
import sys

from shared.cli.common import EXIT_INVALID, EXIT_USAGE, EXIT_VALID, settings_or_none

RAW_CHARS_SHOWN = 4000


def add_runs_commands(commands: argparse._SubParsersAction) -> None:
    runs = commands.add_parser("runs", help="inspect and repair run records")
    actions = runs.add_subparsers(dest="runs_command", metavar="ACTION", required=True)
    repair = actions.add_parser(
        "repair",
        help="show a run record as stored, why it does not parse, and its kept copy",
        description="Exit 0 when the record parses (or was restored), 1 when it is damaged, 2 on bad usage.",
    )
    repair.add_argument("run_id")
    repair.add_argument(
        "--restore", action="store_true", help="write the kept copy (the last version written whole) over it"
    )
    show = actions.add_parser(
        "show",
        help="a run: its state, history, gate and evaluation summary",
        description="Exit 0 when the run exists, 1 when it does not or cannot be read, 2 on bad usage.",
    )
    show.add_argument("run_id")
    show.add_argument("--json", action="store_true", help="print the record as JSON")
    repair.set_defaults(run=_repair)
    show.set_defaults(run=_show)


def _show(args: argparse.Namespace) -> int:
    from shared.context import AppContext
    from shared.domain.errors import AutopilotError

    settings = settings_or_none()
    if settings is None:
        return EXIT_USAGE
    try:
        record = AppContext.from_settings(settings).ledger.get(args.run_id)
    except AutopilotError as exc:
        print(f"autopilot: {exc.code}: {exc.message}", file=sys.stderr)
        return EXIT_INVALID
    if args.json:
        print(record.model_dump_json(indent=2))
        return EXIT_VALID
    print(f"run {record.run_id} (line {record.line}): {record.state}")
    for step in record.history:
        print(f"  {step.at.isoformat(timespec='seconds')} {step.to_state}: {step.reason}")
    if record.gate is not None:
        print(f"  loss gate: {'passed' if record.gate.passed else 'failed'}: {'; '.join(record.gate.reasons)}")
    evaluation = record.evaluation
    if evaluation is not None:
        kind = "base model" if evaluation.baseline == "base" else str(evaluation.baseline)
        against = f"the {kind} {evaluation.reference.model}" if evaluation.reference else "nothing"
        print(
            f"  evaluation: {'passed' if evaluation.passed else 'refused'} in {evaluation.seconds:.1f} s, "
            f"{evaluation.examples} conversations and {evaluation.challenger.probes} probes against {against}"
        )
        for check in evaluation.checks:
            print(f"    {'pass' if check.passed else 'FAIL'} {check.code}: {check.reason}")
        for note in evaluation.notes:
            print(f"    note: {note}")
        if record.artifacts.evaluation_md:
            print(f"  evidence: {record.artifacts.evaluation_md}")
    if record.error is not None:
        print(f"  error: {record.error.code}: {record.error.message}")
    return EXIT_VALID


def _repair(args: argparse.Namespace) -> int:
    from shared.context import AppContext
    from shared.domain.errors import AutopilotError
    from shared.usecases.repair import inspect_record, restore_record

    settings = settings_or_none()
    if settings is None:
        return EXIT_USAGE
    try:
        ctx = AppContext.from_settings(settings)
        damaged = inspect_record(ctx, args.run_id)
        print(f"run {damaged.run_id}: {len(damaged.raw)} bytes stored (etag {damaged.etag})")
        print(damaged.raw[:RAW_CHARS_SHOWN].decode("utf-8", errors="replace"))
        if len(damaged.raw) > RAW_CHARS_SHOWN:
            print(f"... ({len(damaged.raw) - RAW_CHARS_SHOWN} more bytes)")
        if damaged.error is None:
            print("the record parses: nothing to repair")
            return EXIT_VALID
        print(f"damaged: {damaged.error}")
        kept = damaged.kept
        if kept is None:
            print("no kept copy: the record can only be fixed by hand")
            return EXIT_INVALID
        print(f"kept copy: state {kept.state}, updated {kept.updated_at.isoformat()}")
        if not args.restore:
            print(f"run `autopilot runs repair {damaged.run_id} --restore` to put it back")
            return EXIT_INVALID
        restored = restore_record(ctx, damaged.run_id)
        print(f"restored: run {restored.run_id} is {restored.state} again")
        return EXIT_VALID
    except AutopilotError as exc:
        print(f"autopilot: {exc.code}: {exc.message}", file=sys.stderr)
        return EXIT_USAGE if exc.code == "invalid_input" else EXIT_INVALID


def add_lines_command(commands: argparse._SubParsersAction) -> None:
    lines = commands.add_parser(
        "lines",
        help="model lines: config, champion, endpoint and runs",
        description="Each line (or LINE alone): its effective config, champion, endpoint state and scoring URI, its "
        "last run and its runs by state.",
    )
    lines.add_argument("line", nargs="?", help="one line (default: all of them)")
    lines.add_argument("--json", action="store_true", help="print JSON")
    lines.set_defaults(run=_lines)


def _lines(args: argparse.Namespace) -> int:
    import json

    from shared.context import AppContext
    from shared.domain.errors import AutopilotError
    from shared.usecases.lines import get_line, list_lines

    settings = settings_or_none()
    if settings is None:
        return EXIT_USAGE
    try:
        ctx = AppContext.from_settings(settings)
        views = [get_line(ctx, args.line)] if args.line else list_lines(ctx)
    except AutopilotError as exc:
        print(f"autopilot: {exc.code}: {exc.message}", file=sys.stderr)
        return EXIT_USAGE if exc.code in ("invalid_input", "invalid_line_name") else EXIT_INVALID
    if args.json:
        print(json.dumps([view.model_dump(mode="json") for view in views], indent=2))
        return EXIT_VALID
    if not views:
        print("no lines yet: upload a dataset to datasets/<line>/")
    for view in views:
        champion = f"{view.champion.name}:{view.champion.version}" if view.champion else "none"
        counts = ", ".join(f"{state} {count}" for state, count in sorted(view.runs_by_state.items())) or "no runs"
        print(f"{view.line}: champion {champion}; endpoint {view.endpoint} ({view.endpoint_state})")
        print(f"  scoring URI: {view.scoring_uri or '-'}")
        print(f"  last run: {view.last_run or '-'} ({view.last_run_state or '-'}); runs: {counts}")
        if view.config is not None:
            config = view.config
            print(
                f"  config {config.sha256[:12]}: base model {config.base_model}, accumulate {config.accumulate}, "
                f"idle {config.idle_minutes:g} min, max job retries {config.max_job_retries}"
            )
        else:
            print(f"  config unusable: {view.config_error}")
    return EXIT_VALID
