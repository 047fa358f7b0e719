"""Inline SVG line charts, so a report is one self-contained file that opens anywhere offline.

Time runs along x in seconds since the drill started; shaded bands mark fault phases.
"""

from __future__ import annotations

import math
from html import escape

from grader.model import Chart, Phase
from grader.prometheus import to_epoch

# Okabe-Ito: distinguishable with the common colour-vision deficiencies, and in greyscale print.
LINE_COLOURS = ["#0072B2", "#D55E00", "#009E73", "#CC79A7", "#E69F00", "#56B4E9", "#000000"]
PHASE_COLOURS = ["#E69F00", "#8E7CC3", "#56B4E9", "#C9A227", "#D55E00"]
DASHES = ["", "6 3", "2 3", "8 3 2 3", "", "6 3", "2 3"]

WIDTH, HEIGHT = 880, 300
LEFT, RIGHT, TOP, BOTTOM = 64, 16, 30, 46
GAP_S = 3.0  # a longer gap between points is drawn as a break, not a line across it


def nice_ticks(low: float, high: float, count: int = 5) -> list[float]:
    """Round tick values (1, 2, 2.5, 5 x 10^n) covering [low, high]."""
    if not math.isfinite(low) or not math.isfinite(high):
        return [0.0, 1.0]
    if high <= low:
        high = low + (abs(low) or 1.0)
    raw = (high - low) / max(1, count)
    magnitude = 10 ** math.floor(math.log10(raw))
    step = next(m * magnitude for m in (1, 2, 2.5, 5, 10) if m * magnitude >= raw)
    first = math.floor(low / step) * step
    ticks = []
    value = first
    while value < high + step * 0.999:
        ticks.append(round(value, 10))
        value += step
    return ticks


def fmt_number(value: float) -> str:
    size = abs(value)
    if size >= 1e6:
        return f"{value / 1e6:g}M"
    if size >= 1e4:
        return f"{value / 1e3:g}k"
    if size and size < 0.01:
        return f"{value:.1e}"
    return f"{round(value, 4):g}"


def line_chart(chart: Chart, phases: list[Phase], origin: float) -> str:
    """The chart as an ``<svg>`` element; ``origin`` (epoch s) is time zero on the x axis."""
    title = escape(chart.title)
    unit = escape(chart.unit) if chart.unit else "value"
    series = {name: pts for name, pts in chart.series.items() if pts}
    bands = [p for p in phases if p.name in chart.shaded]

    xs = [p.t - origin for pts in series.values() for p in pts]
    xs += [to_epoch(p.start) - origin for p in bands] + [to_epoch(p.end) - origin for p in bands]
    ys = [p.v for pts in series.values() for p in pts]
    x_low, x_high = (min(xs), max(xs)) if xs else (0.0, 60.0)
    if x_high - x_low < 1:
        x_high = x_low + 1
    y_low, y_high = (min(ys), max(ys)) if ys else (0.0, 1.0)
    if y_low >= 0:
        y_low = 0.0  # counts and rates read best from zero
    if y_high == y_low:
        y_high = y_low + 1
    if ys and all(v == int(v) for v in ys) and y_high - y_low <= 8:
        # States and small counts (breaker 0/1/2): whole-number ticks only.
        y_ticks = [float(v) for v in range(math.floor(y_low), math.ceil(y_high) + 1)]
    else:
        y_ticks = nice_ticks(y_low, y_high)
    y_low, y_high = min(y_low, y_ticks[0]), max(y_high, y_ticks[-1])
    x_ticks = [t for t in nice_ticks(x_low, x_high, 8) if x_low - 1e-9 <= t <= x_high + 1e-9]

    plot_w, plot_h = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM

    def px(x: float) -> float:
        return LEFT + (x - x_low) / (x_high - x_low) * plot_w

    def py(y: float) -> float:
        return TOP + plot_h - (y - y_low) / (y_high - y_low) * plot_h

    out = [
        f'<svg class="chart" viewBox="0 0 {WIDTH} {HEIGHT}" width="100%" role="img" '
        f'aria-label="{title}" '
        'font-family="system-ui, -apple-system, Segoe UI, Roboto, sans-serif" font-size="12">',
        f"<title>{title}</title>",
        f'<rect x="{LEFT}" y="{TOP}" width="{plot_w}" height="{plot_h}" fill="#fff" '
        'stroke="#c9ced6"/>',
    ]
    # Phase bands, labelled above the plot.
    for i, phase in enumerate(bands):
        colour = PHASE_COLOURS[i % len(PHASE_COLOURS)]
        x0 = px(max(x_low, to_epoch(phase.start) - origin))
        x1 = px(min(x_high, to_epoch(phase.end) - origin))
        out.append(
            f'<rect class="phase" x="{x0:.1f}" y="{TOP}" width="{max(1.0, x1 - x0):.1f}" '
            f'height="{plot_h}" fill="{colour}" fill-opacity="0.16"/>'
        )
        out.append(
            f'<line x1="{x0:.1f}" y1="{TOP}" x2="{x0:.1f}" y2="{TOP + plot_h}" '
            f'stroke="{colour}" stroke-width="1" stroke-dasharray="3 3"/>'
        )
        out.append(
            f'<text x="{(x0 + x1) / 2:.1f}" y="{TOP - 8}" text-anchor="middle" '
            f'fill="#5b4a00" font-weight="600">{escape(phase.name)}</text>'
        )
    # Grid and y axis.
    for tick in y_ticks:
        y = py(tick)
        out.append(
            f'<line x1="{LEFT}" y1="{y:.1f}" x2="{LEFT + plot_w}" y2="{y:.1f}" stroke="#e6e9ee"/>'
        )
        out.append(
            f'<text x="{LEFT - 6}" y="{y + 4:.1f}" text-anchor="end" fill="#3d4450">'
            f"{fmt_number(tick)}</text>"
        )
    for tick in x_ticks:
        x = px(tick)
        out.append(
            f'<line x1="{x:.1f}" y1="{TOP + plot_h}" x2="{x:.1f}" y2="{TOP + plot_h + 4}" '
            'stroke="#3d4450"/>'
        )
        out.append(
            f'<text x="{x:.1f}" y="{TOP + plot_h + 17}" text-anchor="middle" fill="#3d4450">'
            f"{fmt_number(tick)}</text>"
        )
    out.append(
        f'<text x="{LEFT + plot_w / 2:.1f}" y="{HEIGHT - 6}" text-anchor="middle" '
        'fill="#1f2430">time since the drill started (s)</text>'
    )
    out.append(
        f'<text transform="translate(14 {TOP + plot_h / 2:.1f}) rotate(-90)" '
        f'text-anchor="middle" fill="#1f2430">{unit}</text>'
    )
    # Series.
    for i, (name, points) in enumerate(series.items()):
        colour = LINE_COLOURS[i % len(LINE_COLOURS)]
        dash = DASHES[i % len(DASHES)]
        path, previous = [], None
        for point in sorted(points, key=lambda p: p.t):
            x = point.t - origin
            command = "M" if previous is None or x - previous > GAP_S else "L"
            path.append(f"{command}{px(x):.1f},{py(point.v):.1f}")
            previous = x
        dash_attr = f' stroke-dasharray="{dash}"' if dash else ""
        out.append(
            f'<path d="{" ".join(path)}" fill="none" stroke="{colour}" stroke-width="2" '
            f'stroke-linejoin="round"{dash_attr}><title>{escape(name)}</title></path>'
        )
        if len(points) == 1:
            out.append(
                f'<circle cx="{px(points[0].t - origin):.1f}" cy="{py(points[0].v):.1f}" r="3" '
                f'fill="{colour}"/>'
            )
    if not series:
        out.append(
            f'<text x="{LEFT + plot_w / 2:.1f}" y="{TOP + plot_h / 2:.1f}" text-anchor="middle" '
            'fill="#6b7280" font-size="14">no data</text>'
        )
    out.append("</svg>")
    return "\n".join(out)


def legend(chart: Chart) -> list[dict[str, str]]:
    """Name, colour and dash of each series, for the HTML legend under the chart."""
    return [
        {
            "name": name,
            "colour": LINE_COLOURS[i % len(LINE_COLOURS)],
            "dash": DASHES[i % len(DASHES)],
        }
        for i, name in enumerate(n for n, pts in chart.series.items() if pts)
    ]
