"""Bar charts drawn on the server as inline SVG: the console's plots need no JavaScript and no
chart library, and load nothing from anywhere. Colours come from the stylesheet (classes
``series-0``, ``series-1``…), so the markup carries no inline style."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from html import escape

from markupsafe import Markup


@dataclass(frozen=True)
class Series:
    name: str
    values: Sequence[int]


def _nice_ceiling(value: int) -> int:
    """The smallest of 1, 2, 5, 10, 20, 50… that is at least ``value`` (and at least 1)."""
    step = 1
    while True:
        for factor in (1, 2, 5):
            if step * factor >= value:
                return step * factor
        step *= 10


def bar_chart(
    title: str,
    labels: Sequence[str],
    series: Sequence[Series],
    *,
    width: int = 520,
    height: int = 160,
    every: int = 1,
) -> Markup:
    """Grouped bars, one group per label and one bar per series, with a legend, a y axis from
    zero to a round maximum, and a tooltip (``<title>``) on every bar. ``every`` labels only
    every n-th group on the x axis, so that narrow groups stay readable."""
    left, right, top, bottom = 36, 8, 22, 20
    plot_w, plot_h = width - left - right, height - top - bottom
    groups = max(1, len(labels))
    peak = _nice_ceiling(max((v for s in series for v in s.values), default=0))
    slot = plot_w / groups
    bar_w = max(1.0, (slot * 0.8) / max(1, len(series)))
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" class="chart" viewBox="0 0 {width} {height}" '
        f'width="{width}" height="{height}" role="img" aria-label="{escape(title)}">',
        f"<title>{escape(title)}</title>",
    ]
    for fraction in (0.0, 0.5, 1.0) if peak > 1 else (0.0, 1.0):
        y = top + plot_h * (1 - fraction)
        parts.append(
            f'<line class="grid" x1="{left}" x2="{width - right}" y1="{y:.1f}" y2="{y:.1f}"/>'
            f'<text class="axis" x="{left - 4}" y="{y + 3:.1f}" text-anchor="end">'
            f"{peak * fraction:g}</text>"
        )
    for index, label in enumerate(labels):
        x0 = left + index * slot + slot * 0.1
        for number, one in enumerate(series):
            value = one.values[index] if index < len(one.values) else 0
            bar_h = plot_h * value / peak
            x = x0 + number * bar_w
            parts.append(
                f'<rect class="bar series-{number}" x="{x:.1f}" y="{top + plot_h - bar_h:.1f}" '
                f'width="{bar_w:.1f}" height="{bar_h:.1f}">'
                f"<title>{escape(label)}: {value} {escape(one.name)}</title></rect>"
            )
        if index % every == 0:
            parts.append(
                f'<text class="axis" x="{left + index * slot + slot / 2:.1f}" '
                f'y="{height - 6}" text-anchor="middle">{escape(label)}</text>'
            )
    x = left
    for number, one in enumerate(series):
        parts.append(
            f'<rect class="series-{number}" x="{x}" y="6" width="10" height="10"/>'
            f'<text class="legend" x="{x + 14}" y="15">{escape(one.name)}</text>'
        )
        x += 24 + 7 * len(one.name)
    parts.append("</svg>")
    return Markup("".join(parts))  # noqa: S704 (every value above is escaped)
