"""The `autopilot` command (also `python -m shared.cli`)."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Iterator
from typing import BinaryIO

from pydantic import ValidationError

EXIT_VALID, EXIT_INVALID, EXIT_USAGE = 0, 1, 2
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
    validate.add_argument("--test-fraction", type=_fraction, default=None, metavar="F",
                          help="share of examples held out for testing, in [0, 1) (default: TEST_FRACTION or 0.1)")
    validate.set_defaults(run=_validate)

    demo = commands.add_parser("demo", help="show dataset intake end to end on the bundled samples (local Azurite)")
    demo.set_defaults(run=_demo)
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
    from shared.chatdata import render_markdown, validate_chunks
    from shared.services import validation_options
    from shared.settings import get_settings

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


def _demo(args: argparse.Namespace) -> int:
    from shared.demo import run_demo

    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    return run_demo()


if __name__ == "__main__":
    sys.exit(main())
