"""A loss curve as a small standalone SVG: readable in any Markdown viewer, no plotting library needed."""

from __future__ import annotations

from collections.abc import Sequence
from html import escape

WIDTH, HEIGHT, MARGIN = 640, 320, 48


def loss_curve_svg(
    train: Sequence[tuple[int, float]],
    *,
    base_eval_loss: float | None = None,
    eval_loss: float | None = None,
    title: str = "Training loss",
) -> str:
    points = [(float(step), float(loss)) for step, loss in train]
    values = [loss for _, loss in points] + [v for v in (base_eval_loss, eval_loss) if v is not None]
    if not points:
        return _svg(
            [f'<text x="{WIDTH / 2}" y="{HEIGHT / 2}" text-anchor="middle">no loss values logged</text>'], title
        )
    x_max = max(step for step, _ in points) or 1.0
    y_min, y_max = min(values), max(values)
    if y_max == y_min:
        y_max = y_min + 1.0

    def x(step: float) -> float:
        return MARGIN + (WIDTH - 2 * MARGIN) * step / x_max

    def y(loss: float) -> float:
        return HEIGHT - MARGIN - (HEIGHT - 2 * MARGIN) * (loss - y_min) / (y_max - y_min)

    path = " ".join(f"{x(s):.1f},{y(v):.1f}" for s, v in points)
    body = [
        f'<line x1="{MARGIN}" y1="{HEIGHT - MARGIN}" x2="{WIDTH - MARGIN}" y2="{HEIGHT - MARGIN}" stroke="#444"/>',
        f'<line x1="{MARGIN}" y1="{MARGIN}" x2="{MARGIN}" y2="{HEIGHT - MARGIN}" stroke="#444"/>',
        f'<text x="{MARGIN - 6}" y="{y(y_max):.1f}" text-anchor="end" font-size="11">{y_max:.3g}</text>',
        f'<text x="{MARGIN - 6}" y="{y(y_min):.1f}" text-anchor="end" font-size="11">{y_min:.3g}</text>',
        f'<text x="{WIDTH - MARGIN}" y="{HEIGHT - MARGIN + 16}" text-anchor="end" font-size="11">'
        f"step {x_max:.0f}</text>",
        f'<polyline fill="none" stroke="#1f77b4" stroke-width="2" points="{path}"/>',
    ]
    for value, colour, label in ((base_eval_loss, "#d62728", "base eval loss"), (eval_loss, "#2ca02c", "eval loss")):
        if value is not None:
            body.append(
                f'<line x1="{MARGIN}" y1="{y(value):.1f}" x2="{WIDTH - MARGIN}" y2="{y(value):.1f}" '
                f'stroke="{colour}" stroke-dasharray="6 4"/>'
            )
            body.append(
                f'<text x="{WIDTH - MARGIN}" y="{y(value) - 4:.1f}" text-anchor="end" font-size="11" '
                f'fill="{colour}">{label} {value:.3f}</text>'
            )
    return _svg(body, title)


def _svg(body: list[str], title: str) -> str:
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{HEIGHT}" '
        f'viewBox="0 0 {WIDTH} {HEIGHT}" font-family="sans-serif">'
        f'<rect width="100%" height="100%" fill="white"/>'
        f'<text x="{WIDTH / 2}" y="24" text-anchor="middle" font-size="14">{escape(title)}</text>'
        + "".join(body)
        + "</svg>\n"
    )


def score_chart_svg(
    runs: Sequence[tuple[str, float | None, float | None]], *, metric: str, title: str = "Evaluation scores per run"
) -> str:
    """Each evaluated run's challenger score (blue dots, joined) and the score of what it was compared with, the
    champion or the base model (orange), oldest run first. `runs`: (label, challenger, reference)."""
    scored = [(label, c, r) for label, c, r in runs if c is not None or r is not None]
    if not scored:
        return _svg(
            [f'<text x="{WIDTH / 2}" y="{HEIGHT / 2}" text-anchor="middle">no evaluated runs yet</text>'], title
        )
    values = [v for _, c, r in scored for v in (c, r) if v is not None]
    y_min, y_max = min(0.0, *values), max(values) or 1.0
    if y_max == y_min:
        y_max = y_min + 1.0
    step = (WIDTH - 2 * MARGIN) / max(len(scored) - 1, 1)

    def x(i: int) -> float:
        return MARGIN + step * i if len(scored) > 1 else WIDTH / 2

    def y(value: float) -> float:
        return HEIGHT - MARGIN - (HEIGHT - 2 * MARGIN) * (value - y_min) / (y_max - y_min)

    body = [
        f'<line x1="{MARGIN}" y1="{HEIGHT - MARGIN}" x2="{WIDTH - MARGIN}" y2="{HEIGHT - MARGIN}" stroke="#444"/>',
        f'<line x1="{MARGIN}" y1="{MARGIN}" x2="{MARGIN}" y2="{HEIGHT - MARGIN}" stroke="#444"/>',
        f'<text x="{MARGIN - 6}" y="{y(y_max):.1f}" text-anchor="end" font-size="11">{y_max:.3g}</text>',
        f'<text x="{MARGIN - 6}" y="{y(y_min):.1f}" text-anchor="end" font-size="11">{y_min:.3g}</text>',
        f'<text x="{MARGIN}" y="{MARGIN - 8}" font-size="11">{escape(metric)}</text>',
        f'<text x="{WIDTH - MARGIN}" y="{MARGIN - 8}" text-anchor="end" font-size="11">'
        '<tspan fill="#1f77b4">● challenger</tspan> <tspan fill="#ff7f0e">◆ champion or base</tspan></text>',
    ]
    challenger = [(x(i), y(c)) for i, (_, c, _) in enumerate(scored) if c is not None]
    reference = [(x(i), y(r)) for i, (_, _, r) in enumerate(scored) if r is not None]
    for points, colour in ((challenger, "#1f77b4"), (reference, "#ff7f0e")):
        if len(points) > 1:
            joined = " ".join(f"{px:.1f},{py:.1f}" for px, py in points)
            body.append(f'<polyline fill="none" stroke="{colour}" stroke-width="1.5" points="{joined}"/>')
        body += [f'<circle cx="{px:.1f}" cy="{py:.1f}" r="4" fill="{colour}"/>' for px, py in points]
    body += [
        f'<text x="{x(i):.1f}" y="{HEIGHT - MARGIN + 16}" text-anchor="middle" font-size="10">{escape(label)}</text>'
        for i, (label, _, _) in enumerate(scored)
    ]
    return _svg(body, title)
