"""Inline SVG line charts, so a report is one self-contained file that opens anywhere offline.

Time runs along x in seconds since the drill started, the clock the terminal, the labs and
the Phases table count on too; shaded bands mark the drill's phases.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from html import escape
from itertools import pairwise

from grader.model import Chart, Phase, Timeline
from grader.prometheus import to_epoch

# Okabe-Ito: distinguishable with the common colour-vision deficiencies, and in greyscale print.
LINE_COLOURS = ["#0072B2", "#D55E00", "#009E73", "#CC79A7", "#E69F00", "#56B4E9", "#000000"]
PHASE_COLOURS = ["#E69F00", "#8E7CC3", "#56B4E9", "#C9A227", "#D55E00"]
DASHES = ["", "6 3", "2 3", "8 3 2 3", "", "6 3", "2 3"]

WIDTH, HEIGHT = 880, 300
LEFT, RIGHT, TOP, BOTTOM = 64, 16, 30, 46
X_AXIS_LABEL = "time since the drill started (s)"  # the run's one clock (see scenarios.engine)
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


PHASE_LABEL_ROW = 15  # px per row of phase names above a plot
CHAR_PX = 7.0  # about one character of 12 px text


def phase_colour(index: int) -> str:
    return PHASE_COLOURS[index % len(PHASE_COLOURS)]


def _label_rows(spans: list[tuple[float, float]]) -> list[int]:
    """A row for each label (x0, x1 in px) so that no two labels in a row overlap."""
    rows: list[list[tuple[float, float]]] = []
    out = []
    for x0, x1 in spans:
        for i, taken in enumerate(rows):
            if all(x1 + 6 < a or x0 - 6 > b for a, b in taken):
                taken.append((x0, x1))
                out.append(i)
                break
        else:
            rows.append([(x0, x1)])
            out.append(len(rows) - 1)
    return out


def _phase_spans(
    bands: list[Phase], origin: float, x_low: float, x_high: float, px: Callable[[float], float]
) -> list[tuple[float, float, float, float]]:
    """Per band: its x0, x1 and its label's x0, x1 (px), the label kept inside the plot."""
    spans = []
    left, right = px(x_low), px(x_high)
    for phase in bands:
        x0 = px(max(x_low, to_epoch(phase.start) - origin))
        x1 = px(min(x_high, to_epoch(phase.end) - origin))
        width = len(phase.name) * CHAR_PX
        centre = min(max((x0 + x1) / 2, left + width / 2), right - width / 2)
        spans.append((x0, x1, centre - width / 2, centre + width / 2))
    return spans


def phase_label_rows(
    bands: list[Phase], origin: float, x_low: float, x_high: float, px: Callable[[float], float]
) -> int:
    """How many rows of phase names the bands need above the plot."""
    spans = _phase_spans(bands, origin, x_low, x_high, px)
    return max(_label_rows([(a, b) for _, _, a, b in spans]), default=-1) + 1


def phase_bands(
    bands: list[Phase],
    origin: float,
    x_low: float,
    x_high: float,
    px: Callable[[float], float],
    top: float,
    height: float,
) -> list[str]:
    """Shaded bands for ``bands`` over the plot, each named above it (names that would
    overlap go on rows further up), in the colours the legends use."""
    out = []
    spans = _phase_spans(bands, origin, x_low, x_high, px)
    rows = _label_rows([(a, b) for _, _, a, b in spans])
    for i, (phase, (x0, x1, l0, l1), row) in enumerate(zip(bands, spans, rows, strict=True)):
        colour = phase_colour(i)
        out.append(
            f'<rect class="phase" x="{x0:.1f}" y="{top}" width="{max(1.0, x1 - x0):.1f}" '
            f'height="{height:.1f}" fill="{colour}" fill-opacity="0.16">'
            f"<title>phase {escape(phase.name)}</title></rect>"
        )
        out.append(
            f'<line x1="{x0:.1f}" y1="{top}" x2="{x0:.1f}" y2="{top + height:.1f}" '
            f'stroke="{colour}" stroke-width="1" stroke-dasharray="3 3"/>'
        )
        y = top - 5 - row * PHASE_LABEL_ROW
        out.append(
            f'<text x="{(l0 + l1) / 2:.1f}" y="{y:.1f}" text-anchor="middle" '
            f'fill="#5b4a00" font-weight="600">{escape(phase.name)}</text>'
        )
    return out


def _x_range(xs: list[float]) -> tuple[float, float]:
    x_low, x_high = (min(xs), max(xs)) if xs else (0.0, 60.0)
    if x_high - x_low < 1:
        x_high = x_low + 1
    return x_low, x_high


def line_chart(chart: Chart, phases: list[Phase], origin: float) -> str:
    """The chart as an ``<svg>`` element; ``origin`` (epoch s) is time zero on the x axis."""
    title = escape(chart.title)
    unit = escape(chart.unit) if chart.unit else "value"
    series = {name: pts for name, pts in chart.series.items() if pts}
    bands = [p for p in phases if p.name in chart.shaded]
    names = {float(k): v for k, v in chart.value_names.items()}

    xs = [p.t - origin for pts in series.values() for p in pts]
    xs += [to_epoch(p.start) - origin for p in bands] + [to_epoch(p.end) - origin for p in bands]
    ys = [p.v for pts in series.values() for p in pts] + list(names)
    x_low, x_high = _x_range(xs)
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

    left = LEFT + 24 if names else LEFT  # room for state names such as "half-open"
    plot_w = WIDTH - left - RIGHT

    def px(x: float) -> float:
        return left + (x - x_low) / (x_high - x_low) * plot_w

    top = TOP + PHASE_LABEL_ROW * max(0, phase_label_rows(bands, origin, x_low, x_high, px) - 1)
    plot_h = HEIGHT - top - BOTTOM

    def py(y: float) -> float:
        return top + plot_h - (y - y_low) / (y_high - y_low) * plot_h

    out = [
        f'<svg class="chart" viewBox="0 0 {WIDTH} {HEIGHT}" width="100%" role="img" '
        f'aria-label="{title}" '
        'font-family="system-ui, -apple-system, Segoe UI, Roboto, sans-serif" font-size="12">',
        f"<title>{title}</title>",
        f'<rect x="{left}" y="{top}" width="{plot_w}" height="{plot_h}" fill="#fff" '
        'stroke="#c9ced6"/>',
    ]
    # Phase bands, labelled above the plot.
    out.extend(phase_bands(bands, origin, x_low, x_high, px, top, plot_h))
    # Grid and y axis.
    for tick in y_ticks:
        y = py(tick)
        out.append(
            f'<line x1="{left}" y1="{y:.1f}" x2="{left + plot_w}" y2="{y:.1f}" stroke="#e6e9ee"/>'
        )
        label = names.get(tick)
        text = escape(label) if label else fmt_number(tick)
        out.append(
            f'<text x="{left - 6}" y="{y + 4:.1f}" text-anchor="end" fill="#3d4450">{text}</text>'
        )
    for tick in x_ticks:
        x = px(tick)
        out.append(
            f'<line x1="{x:.1f}" y1="{top + plot_h}" x2="{x:.1f}" y2="{top + plot_h + 4}" '
            'stroke="#3d4450"/>'
        )
        out.append(
            f'<text x="{x:.1f}" y="{top + plot_h + 17}" text-anchor="middle" fill="#3d4450">'
            f"{fmt_number(tick)}</text>"
        )
    out.append(
        f'<text x="{left + plot_w / 2:.1f}" y="{HEIGHT - 6}" text-anchor="middle" '
        f'fill="#1f2430">{X_AXIS_LABEL}</text>'
    )
    out.append(
        f'<text transform="translate(14 {top + plot_h / 2:.1f}) rotate(-90)" '
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
            f'<text x="{left + plot_w / 2:.1f}" y="{top + plot_h / 2:.1f}" text-anchor="middle" '
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


# --- the timeline: one lane per service ----------------------------------------------------

LANE_ORDER = ("client", "gateway", "auth", "user", "order", "inventory", "insights")
LANE_LEFT = 84  # room for the lane names
BAR_H, ROW_GAP, LANE_PAD = 11, 4, 8
MARK_ROW = 16
MAX_MARK_ROWS = 3


def trace_colour(trace: int) -> str:
    return LINE_COLOURS[(trace - 1) % len(LINE_COLOURS)]


def lanes_of(timeline: Timeline) -> list[str]:
    """The lanes with events, clients first, then the services in call order."""
    present = {e.service for e in timeline.events}
    known = [lane for lane in LANE_ORDER if lane in present]
    return known + sorted(present - set(known))


def _pack(spans: list[tuple[float, float]], gap: float) -> list[int]:
    """First-fit rows for intervals (px), so that bars in one row never overlap."""
    ends: list[float] = []
    rows = []
    for x0, x1 in spans:
        for i, end in enumerate(ends):
            if x0 >= end + gap:
                ends[i] = x1
                rows.append(i)
                break
        else:
            ends.append(x1)
            rows.append(len(ends) - 1)
    return rows


def swimlane(timeline: Timeline, phases: list[Phase], origin: float) -> str:
    """The timeline as an ``<svg>``: a lane per service, each request a bar from when the
    service got it to when it answered, coloured by trace (request id) and joined across lanes
    by a thin line; named events (``lock_lost``) are diamonds; every phase but ``drill`` is
    shaded. ``origin`` (epoch s) is time zero, as in :func:`line_chart`."""
    bands = [p for p in phases if p.name != "drill"]
    drill = next((p for p in phases if p.name == "drill"), None)
    lanes = lanes_of(timeline)
    xs = [e.t - origin for e in timeline.events]
    xs += [e.t - (e.duration_s or 0) - origin for e in timeline.events]
    xs += [to_epoch(p.start) - origin for p in phases] + [to_epoch(p.end) - origin for p in phases]
    x_low, x_high = _x_range(xs)
    if drill is not None:  # a request that started long before the drill does not stretch it
        x_low = max(x_low, to_epoch(drill.start) - origin - 2)
    plot_w = WIDTH - LANE_LEFT - RIGHT

    def px(x: float) -> float:
        return LANE_LEFT + (min(max(x, x_low), x_high) - x_low) / (x_high - x_low) * plot_w

    top = TOP + PHASE_LABEL_ROW * max(0, phase_label_rows(bands, origin, x_low, x_high, px) - 1)

    # Lay out each lane: rows of event marks on top, rows of bars below.
    layout: list[tuple[str, float, float]] = []  # lane, y, height
    items: list[str] = []
    bar_at: dict[int, list[tuple[int, float, float, float]]] = {}  # trace -> lane, x, y0, y1
    y = top
    for lane_index, lane in enumerate(lanes):
        events = [e for e in timeline.events if e.service == lane]
        marks = [e for e in events if e.duration_s is None]
        bars = sorted(
            (e for e in events if e.duration_s is not None), key=lambda e: e.t - (e.duration_s or 0)
        )
        # A name goes right of its diamond, or left of it near the plot's right edge.
        right_of = [
            px(e.t - origin) + 8 + len(e.event) * CHAR_PX <= LANE_LEFT + plot_w for e in marks
        ]
        mark_spans = [
            (px(e.t - origin) - 5, px(e.t - origin) + 8 + len(e.event) * CHAR_PX)
            if right
            else (px(e.t - origin) - 8 - len(e.event) * CHAR_PX, px(e.t - origin) + 5)
            for e, right in zip(marks, right_of, strict=True)
        ]
        order = sorted(range(len(marks)), key=lambda i: mark_spans[i][0])
        packed = _pack([mark_spans[i] for i in order], 2)
        mark_rows = {i: row for i, row in zip(order, packed, strict=True)}
        mark_rows_used = min(MAX_MARK_ROWS, max(mark_rows.values(), default=-1) + 1)
        bar_spans = [(px(e.t - (e.duration_s or 0) - origin), px(e.t - origin)) for e in bars]
        bar_rows = _pack([(a, max(b, a + 2)) for a, b in bar_spans], 2)
        height = (
            LANE_PAD * 2
            + mark_rows_used * MARK_ROW
            + (max(bar_rows, default=-1) + 1) * (BAR_H + ROW_GAP)
        )
        height = max(height, 30)
        layout.append((lane, y, height))
        bars_top = y + LANE_PAD + mark_rows_used * MARK_ROW
        for e, (x0, x1), row in zip(bars, bar_spans, bar_rows, strict=True):
            y0 = bars_top + row * (BAR_H + ROW_GAP)
            colour = trace_colour(e.trace) if e.trace else "#9aa3af"
            failed = e.status is not None and (e.status == 0 or e.status >= 400)
            stroke = ' stroke="#1f2430" stroke-width="1.2"' if failed else ""
            what = e.detail + (f" → {e.status if e.status else 'no answer'}")
            tip = f"{'#' + str(e.trace) + ' ' if e.trace else ''}{lane}: {what}, " + (
                f"{(e.duration_s or 0) * 1000:.0f} ms, answered at {e.t - origin:.2f} s"
            )
            items.append(
                f'<rect class="span" x="{x0:.1f}" y="{y0:.1f}" width="{max(2.0, x1 - x0):.1f}" '
                f'height="{BAR_H}" rx="2" fill="{colour}"{stroke}><title>{escape(tip)}</title>'
                "</rect>"
            )
            label = f"#{e.trace} {e.status if e.status else 'no answer'}" if e.trace else ""
            if label and x1 - x0 > len(label) * 6.2 + 6:
                items.append(
                    f'<text x="{x0 + 3:.1f}" y="{y0 + BAR_H - 2:.1f}" fill="#fff" '
                    f'font-size="10" font-weight="600">{escape(label)}</text>'
                )
            if e.trace:
                bar_at.setdefault(e.trace, []).append((lane_index, x0, y0, y0 + BAR_H))
        for i, e in enumerate(marks):
            row = min(mark_rows[i], MAX_MARK_ROWS - 1)
            cx = px(e.t - origin)
            cy = y + LANE_PAD + row * MARK_ROW + 6
            colour = trace_colour(e.trace) if e.trace else "#1f2430"
            tip = f"{'#' + str(e.trace) + ' ' if e.trace else ''}{lane}: {e.event}"
            tip += f" {e.detail}" if e.detail else ""
            tip += f" at {e.t - origin:.2f} s"
            items.append(
                f'<path class="mark" d="M{cx:.1f},{cy - 5:.1f} l5,5 l-5,5 l-5,-5 z" '
                f'fill="{colour}" stroke="#fff" stroke-width="1"><title>{escape(tip)}</title>'
                "</path>"
            )
            if mark_rows[i] < MAX_MARK_ROWS:
                x_text, anchor = (cx + 7, "start") if right_of[i] else (cx - 7, "end")
                items.append(
                    f'<text x="{x_text:.1f}" y="{cy + 4:.1f}" text-anchor="{anchor}" '
                    f'fill="#1f2430" font-size="11">{escape(e.event)}</text>'
                )
        y += height
    plot_h = max(30.0, y - top)
    height_total = round(top + plot_h + BOTTOM)

    out = [
        f'<svg class="chart timeline" viewBox="0 0 {WIDTH} {height_total}" width="100%" '
        'role="img" aria-label="Timeline: each service\'s requests and events" '
        'font-family="system-ui, -apple-system, Segoe UI, Roboto, sans-serif" font-size="12">',
        "<title>Timeline: each service's requests and events, joined on request id</title>",
    ]
    for i, (lane, lane_y, lane_h) in enumerate(layout):
        fill = "#f6f7f9" if i % 2 else "#fff"
        out.append(
            f'<rect x="{LANE_LEFT}" y="{lane_y:.1f}" width="{plot_w}" height="{lane_h:.1f}" '
            f'fill="{fill}"/>'
        )
        out.append(
            f'<text x="{LANE_LEFT - 8}" y="{lane_y + lane_h / 2 + 4:.1f}" text-anchor="end" '
            f'fill="#1f2430" font-weight="600">{escape(lane)}</text>'
        )
        if i:
            out.append(
                f'<line x1="{LANE_LEFT}" y1="{lane_y:.1f}" x2="{LANE_LEFT + plot_w}" '
                f'y2="{lane_y:.1f}" stroke="#c9ced6"/>'
            )
    out.append(
        f'<rect x="{LANE_LEFT}" y="{top}" width="{plot_w}" height="{plot_h:.1f}" fill="none" '
        'stroke="#c9ced6"/>'
    )
    out.extend(phase_bands(bands, origin, x_low, x_high, px, top, plot_h))
    for tick in nice_ticks(x_low, x_high, 8):
        if not x_low - 1e-9 <= tick <= x_high + 1e-9:
            continue
        x = px(tick)
        out.append(
            f'<line x1="{x:.1f}" y1="{top}" x2="{x:.1f}" y2="{top + plot_h + 4:.1f}" '
            'stroke="#e6e9ee"/>'
        )
        out.append(
            f'<text x="{x:.1f}" y="{top + plot_h + 17:.1f}" text-anchor="middle" '
            f'fill="#3d4450">{fmt_number(tick)}</text>'
        )
    out.append(
        f'<text x="{LANE_LEFT + plot_w / 2:.1f}" y="{height_total - 6}" text-anchor="middle" '
        f'fill="#1f2430">{X_AXIS_LABEL}</text>'
    )
    # One request across services: a thin line from each bar down to the next lane's bar.
    for trace, spans in sorted(bar_at.items()):
        spans.sort()
        for (_, xa, _, ya1), (_, xb, yb0, _) in pairwise(spans):
            out.append(
                f'<line class="join" x1="{xa:.1f}" y1="{ya1:.1f}" x2="{xb:.1f}" y2="{yb0:.1f}" '
                f'stroke="{trace_colour(trace)}" stroke-width="1" stroke-opacity="0.7"/>'
            )
    out.extend(items)
    if not timeline.events:
        out.append(
            f'<text x="{LANE_LEFT + plot_w / 2:.1f}" y="{top + 20:.1f}" text-anchor="middle" '
            'fill="#6b7280" font-size="14">no log events</text>'
        )
    out.append("</svg>")
    return "\n".join(out)
