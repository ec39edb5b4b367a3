"""How `autopilot demo` ends: what each run cost, every run page written as a standalone HTML file, and the
dashboard's address with a one-time sign-in link (served until Ctrl-C when someone is at the terminal)."""

from __future__ import annotations

import sys
import threading
from pathlib import Path

from shared.context import get_context
from shared.domain.pricing import money
from shared.ui.render import render_standalone
from shared.usecases.costs import prices
from shared.usecases.dashboard import run_page


def end_on_dashboard(host, run_ids: list[str], folder: Path) -> None:
    """`host`: the demo's started DevHost. Writes `folder`/run-<id>.html for each run and prints where they are."""
    ctx = get_context()
    table = prices(ctx.settings)
    folder.mkdir(parents=True, exist_ok=True)
    print(f"\n==> what the runs cost (prices: {table.source}, {table.region}, compiled {table.retrieved})", flush=True)
    for run_id in run_ids:
        page = run_page(ctx, run_id)
        record = page.record
        estimate = record.cost_estimate.summary() if record.cost_estimate else "no estimate"
        actual = (
            f"{money(page.cost.cost, page.cost.currency)} for {page.cost.seconds:.0f} s of this machine"
            if page.cost
            else "no job"
        )
        print(f"    {record.line:<8} {run_id} {record.state:<11} before: {estimate}; after: {actual}")
        html = render_standalone("run.html", page=page, prices=table, now=ctx.now())
        (folder / f"run-{run_id}.html").write_text(html, encoding="utf-8")
    print(f"    each run's page, to open without the dev host: {folder}/run-<run id>.html")
    print("\n==> the dashboard", flush=True)
    print(f"    {host.dashboard_url()}")
    print("    (a one-time sign-in link: it works once, for 15 minutes, and holds no key)", flush=True)


def serve_until_interrupted(interactive: bool | None = None) -> None:
    """Keep the dev host (and so the dashboard) up until Ctrl-C, when a person is at the terminal."""
    if not (sys.stdin.isatty() and sys.stdout.isatty() if interactive is None else interactive):
        print("    (not a terminal: the dev host stops now; `autopilot serve` serves a dashboard of its own)")
        return
    print("    serving the dashboard until Ctrl-C", flush=True)
    try:
        threading.Event().wait()
    except KeyboardInterrupt:
        print()
