"""The `autopilot` command (also `python -m shared.cli`)."""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO

from pydantic import ValidationError

from shared.cli.common import EXIT_INVALID, EXIT_USAGE, EXIT_VALID
from shared.cli.common import settings_or_none as _settings
from shared.cli.runs import add_lines_command, add_runs_commands

if TYPE_CHECKING:
    from shared.settings import Settings

CHUNK_BYTES = 4 * 1024 * 1024
PROGRESS_EVERY_BYTES = 64 * 1024 * 1024


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help(sys.stderr)
        return EXIT_USAGE
    return args.run(args)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="autopilot", description="Fine-tune, gate, deploy and tear down chat models.")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")

    validate = commands.add_parser(
        "validate",
        help="validate a chat-completion JSONL dataset",
        description="Exit 0 when the dataset is valid, 1 when it is not, 2 when it cannot be read or on bad usage.",
    )
    validate.add_argument("path", help="the JSONL file, or - for standard input")
    validate.add_argument("--json", action="store_true", help="print only the JSON report")
    validate.add_argument(
        "--test-fraction",
        type=_fraction,
        default=None,
        metavar="F",
        help="share of examples held out for testing, in [0, 1) (default: TEST_FRACTION or 0.1)",
    )
    validate.set_defaults(run=_validate)

    demo = commands.add_parser(
        "demo", help="the whole lifecycle on this machine: upload, train, gate, deploy, ask, idle teardown, restore"
    )
    demo.add_argument("--tiny", action="store_true", help="use the 2M-parameter test model (about a minute)")
    demo.set_defaults(run=_demo)

    serve = commands.add_parser(
        "serve",
        help="run function_app locally (the dev host): /api, the Event Grid webhook, blob and timer triggers",
    )
    serve.add_argument("--port", type=int, default=7071, help="loopback port (default 7071, as Core Tools)")
    serve.set_defaults(run=_serve)

    run = commands.add_parser(
        "run",
        help="validate, train, evaluate, register and deploy one dataset file, synchronously",
        description="Exit 0 when the run ends deployed, 1 when it ends otherwise (rejected, gated out, failed...), "
        "2 on bad usage or settings.",
    )
    run.add_argument("path", type=Path, help="the JSONL dataset")
    run.add_argument("--engine", choices=["local", "azureml"], default=None, help="default: AUTOPILOT_ENGINE")
    run.add_argument(
        "--base-model",
        default=None,
        metavar="MODEL",
        help="local engine: tiny, smollm2-135m-instruct or a model folder (default: LOCAL_BASE_MODEL)",
    )
    run.add_argument("--json", action="store_true", help="print only the result as JSON")
    run.add_argument(
        "--dry-run",
        action="store_true",
        help="with --engine azureml: validate here and print the pipeline job the run would submit, "
        "without network or credentials",
    )
    run.add_argument(
        "--model-file",
        type=Path,
        default=None,
        metavar="FILE",
        help="with --dry-run: the base model's YAML (az ml model show --registry-name azureml ... -o yaml, or an "
        "azureml-assets spec.yaml); its defaults, compute lists and archive state are applied offline",
    )
    run.set_defaults(run=_run)

    endpoints = commands.add_parser("endpoints", help="list, show the key of, or delete endpoints")
    endpoint_commands = endpoints.add_subparsers(dest="endpoint_command", metavar="ACTION", required=True)
    endpoint_commands.add_parser("list", help="endpoints with traffic, request counts and idle time")
    for action, text in (("key", "print the primary key"), ("delete", "delete the endpoint and its deployments")):
        endpoint_commands.add_parser(action, help=text).add_argument("name")
    endpoints.set_defaults(run=_endpoints)
    add_runs_commands(commands)
    add_lines_command(commands)
    return parser


def _fraction(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not 0.0 <= value < 1.0:
        raise argparse.ArgumentTypeError(f"must be in [0, 1): {text}")
    return value


def _validate(args: argparse.Namespace) -> int:
    from shared.domain.chatdata import render_markdown, validate_chunks
    from shared.settings import get_settings
    from shared.usecases.validation import validation_options

    try:
        options = validation_options(get_settings(), test_fraction=args.test_fraction)
    except (ValidationError, ValueError) as exc:
        print(f"autopilot: invalid settings: {exc}", file=sys.stderr)
        return EXIT_USAGE
    try:
        source = sys.stdin.buffer if args.path == "-" else open(args.path, "rb")  # noqa: SIM115 (closed below)
    except OSError as exc:
        print(f"autopilot: cannot read {args.path}: {exc.strerror or exc}", file=sys.stderr)
        return EXIT_USAGE
    try:
        report = validate_chunks(_chunks(source, args.path), options)
    except OSError as exc:
        print(f"autopilot: cannot read {args.path}: {exc.strerror or exc}", file=sys.stderr)
        return EXIT_USAGE
    finally:
        if source is not sys.stdin.buffer:
            source.close()
    if args.json:
        sys.stdout.write(report.to_json_bytes().decode())
    else:
        sys.stdout.write(render_markdown(report, f"Validation report: {args.path}"))
    return EXIT_VALID if report.valid else EXIT_INVALID


def _chunks(source: BinaryIO, path: str) -> Iterator[bytes]:
    """Read in chunks; on a terminal, report progress on stderr for large files."""
    total = os.fstat(source.fileno()).st_size if path != "-" else 0
    show = sys.stderr.isatty() and total > PROGRESS_EVERY_BYTES
    done = next_report = 0
    while chunk := source.read(CHUNK_BYTES):
        done += len(chunk)
        if show and done >= next_report:
            print(f"\rvalidating {path}: {done / total:6.1%} of {total / 1e6:,.0f} MB", end="", file=sys.stderr)
            next_report += PROGRESS_EVERY_BYTES
        yield chunk
    if show:
        print(file=sys.stderr)


def _serve(args: argparse.Namespace) -> int:
    from shared.devhost import serve

    settings = _settings()
    if settings is None:
        return EXIT_USAGE
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    serve(settings, port=args.port)
    return EXIT_VALID


def _run(args: argparse.Namespace) -> int:
    from shared.cli.run_file import app_context, run_file
    from shared.domain.errors import AutopilotError

    settings = _settings(engine=args.engine, local_base_model=args.base_model, local_events_webhook=None)
    if settings is None:
        return EXIT_USAGE
    if not args.path.is_file():
        print(f"autopilot: cannot read {args.path}: not a file", file=sys.stderr)
        return EXIT_USAGE
    if args.dry_run:
        return _dry_run(settings, args)
    if args.model_file is not None:
        print(
            "autopilot: --model-file goes with --dry-run (a real run reads the model from the registry)",
            file=sys.stderr,
        )
        return EXIT_USAGE
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        with app_context(settings) as context:
            result = run_file(context, args.path)
    except AutopilotError as exc:
        print(f"autopilot: {exc.code}: {exc.message}", file=sys.stderr)
        return EXIT_INVALID
    except KeyboardInterrupt:
        return 130
    summary = result.summary()
    if args.json:
        print(json.dumps(summary, indent=2))
    else:
        for key, value in summary.items():
            if value is not None:
                print(f"{key}: {value}")
    return EXIT_VALID if result.record.state.value == "deployed" else EXIT_INVALID


def _dry_run(settings: Settings, args: argparse.Namespace) -> int:
    """Exit 0 with a job; 1 for an invalid dataset, a base model or compute the service would refuse, or an estimate
    over MAX_RUN_COST; 2 for bad usage, settings (e.g. BASE_MODEL_ID) or model file."""
    from shared.cli.run_file import dry_run
    from shared.domain.errors import AutopilotError
    from shared.engine import engine_profile

    if not engine_profile(settings).previews_jobs_offline:
        print("autopilot: --dry-run prints the Azure ML pipeline job: use it with --engine azureml", file=sys.stderr)
        return EXIT_USAGE
    if args.model_file is not None and not args.model_file.is_file():
        print(f"autopilot: cannot read {args.model_file}: not a file", file=sys.stderr)
        return EXIT_USAGE
    try:
        result = dry_run(settings, args.path, model_file=args.model_file)
    except AutopilotError as exc:
        print(f"autopilot: {exc.code}: {exc.message}", file=sys.stderr)
        return EXIT_USAGE
    if args.json:
        print(json.dumps(result.to_dict(), indent=2))
    else:
        import yaml

        print(result.report.summary())
        for note in result.notes:
            print(f"  note: {note}")
        if result.job is not None:
            job = result.job
            print(f"run {job.job_name}: {job.display_name}")
            if job.inference_instance_type:
                print(f"  deployments would run on {job.inference_instance_type}")
            if result.estimate is not None:
                print(f"  estimated: {result.estimate.summary()}")
            for warning in job.warnings:
                print(f"  warning: {warning}")
            for assumption in job.assumptions:
                print(f"  assumed offline: {assumption}")
            print(yaml.safe_dump(job.request_body, sort_keys=False), end="")
    if result.refusal is not None:
        print(f"autopilot: {result.refusal.code}: {result.refusal.message}", file=sys.stderr)
    return EXIT_VALID if result.job is not None and result.refusal is None else EXIT_INVALID


def _endpoints(args: argparse.Namespace) -> int:
    from shared.domain.errors import AutopilotError
    from shared.engine import build_engine

    settings = _settings()
    if settings is None:
        return EXIT_USAGE
    try:
        engine = build_engine(settings).engine
        if args.endpoint_command == "key":
            print(engine.get_keys(args.name).primary)
        elif args.endpoint_command == "delete":
            engine.delete_endpoint(args.name)
            print(f"deleted {args.name}")
        else:
            _print_endpoints(engine.list_endpoints())
    except AutopilotError as exc:
        print(f"autopilot: {exc.code}: {exc.message}", file=sys.stderr)
        return EXIT_INVALID
    return EXIT_VALID


def _print_endpoints(endpoints) -> None:
    from datetime import UTC, datetime

    if not endpoints:
        print("no endpoints")
        return
    now = datetime.now(UTC)
    print(f"{'NAME':<32} {'REQUESTS':>8} {'IDLE MIN':>8}  {'TRAFFIC':<28} SCORING URI")
    for endpoint in endpoints:
        last = endpoint.last_request_at or endpoint.created_at
        idle = f"{(now - last).total_seconds() / 60:.0f}" if last else "-"
        traffic = ",".join(f"{name}={weight}" for name, weight in endpoint.traffic.items()) or "-"
        print(f"{endpoint.name:<32} {endpoint.request_count:>8} {idle:>8}  {traffic:<28} {endpoint.scoring_uri}")


def _demo(args: argparse.Namespace) -> int:
    from shared.cli.demo import run_demo

    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    return run_demo(tiny=args.tiny)


if __name__ == "__main__":
    sys.exit(main())
