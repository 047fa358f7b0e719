"""`lab query 'PROMQL' [--range 5m] [--json]`: ask the sandbox's Prometheus from the terminal.

Labs give PromQL to run; a student needs neither a browser nor curl's quoting of ``{}`` (which
plain curl takes for a URL glob). An instant query prints one row per series (its labels and
value); ``--range`` prints one row per series summarising its points over that range (first,
last, min, max), ``--points`` every point. ``--json`` prints the series as JSON for scripts:
Prometheus's own ``resultType``/``result`` data, with the ``command`` and ``exit_code`` every
`lab` JSON object carries (docs/cli.md).

Exit codes: 0 (also when nothing matched), 2 for PromQL Prometheus refuses, 3 when the sandbox's
Prometheus is not running or does not answer.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from typing import Annotated, NoReturn

import typer
from rich.console import Console
from rich.table import Table

from grader.prometheus import (
    Prometheus,
    PrometheusError,
    PrometheusUnreachable,
    Sample,
    Series,
)
from scenarios.cli_platform import parse_duration
from scenarios.cli_support import (
    EXIT_UNAVAILABLE,
    EXIT_USAGE,
    JsonOption,
    Unavailable,
    UsageError,
    emit_json,
)
from scenarios.config import LabConfig
from scenarios.runtime import current_runtime
from scenarios.runtime.base import RuntimeError_

EXIT_BAD_QUERY = EXIT_USAGE
EXIT_NO_PROMETHEUS = EXIT_UNAVAILABLE
MAX_POINTS = 240  # a range query's resolution: enough for a terminal, cheap for Prometheus

console = Console()


def register(app: typer.Typer) -> None:
    app.command("query")(query)


def query(
    promql: Annotated[str, typer.Argument(help="a PromQL expression (quote it for the shell)")],
    range_: Annotated[
        str | None,
        typer.Option("--range", help="evaluate over the last 30s, 5m, 1h... instead of now"),
    ] = None,
    step: Annotated[
        float | None, typer.Option(min=0.1, help="seconds between points of --range")
    ] = None,
    points: Annotated[
        bool, typer.Option("--points", help="with --range: every point, not a summary")
    ] = False,
    as_json: JsonOption = False,
    watch: Annotated[
        float | None,
        typer.Option(
            "--watch",
            min=0.5,
            help="run it again every SECONDS, like `watch` (Ctrl-C stops); Prometheus "
            "scrapes every second",
        ),
    ] = None,
    count: Annotated[
        int | None, typer.Option(min=1, help="with --watch: stop after N refreshes")
    ] = None,
) -> None:
    """Run PromQL against the sandbox's Prometheus and print the series as a table."""
    if watch is not None and as_json:
        raise UsageError("--watch redraws a table; use --json without it")
    url = _prometheus_url()
    if watch is None:
        _query_once(url, promql, range_, step, points, as_json)
        return
    shown = 0
    try:
        while count is None or shown < count:
            if shown:
                time.sleep(watch)
            console.clear()
            stamp = time.strftime("%H:%M:%S")
            console.print(f"every {watch:g}s, {stamp} (Ctrl-C stops)", highlight=False)
            _query_once(url, promql, range_, step, points, False)
            shown += 1
    except KeyboardInterrupt:
        return


def _query_once(
    url: str, promql: str, range_: str | None, step: float | None, points: bool, as_json: bool
) -> None:
    seconds = _range_seconds(range_) if range_ else None
    try:
        with Prometheus(url, timeout=15.0) as prom:
            if seconds is None:
                samples = prom.query(promql)
                series: list[Series] | None = None
            else:
                end = time.time()
                chosen = step or max(1.0, seconds / MAX_POINTS)
                series = prom.query_range(promql, end - seconds, end, step=chosen)
                samples = []
    except PrometheusUnreachable as exc:
        _fail(str(exc), EXIT_NO_PROMETHEUS)
    except PrometheusError as exc:
        _fail(str(exc), EXIT_BAD_QUERY)
    if as_json:
        emit_json("query", 0, **_as_json(samples, series))
        return
    if series is None:
        _print_instant(promql, samples)
    elif points:
        _print_points(promql, series)
    else:
        _print_summary(promql, series, range_ or "")


# --- helpers ---------------------------------------------------------------------------------


def _fail(message: str, code: int) -> NoReturn:
    raise (UsageError if code == EXIT_BAD_QUERY else Unavailable)(message)


def _prometheus_url() -> str:
    config = LabConfig()
    try:
        runtime = current_runtime(config)
        running = runtime is not None and runtime.is_up()
    except RuntimeError_ as exc:
        _fail(str(exc), EXIT_NO_PROMETHEUS)
    if runtime is None or not running:
        _fail(
            f"Prometheus is not running (sandbox {config.home}); `lab up` starts it",
            EXIT_NO_PROMETHEUS,
        )
    return runtime.endpoints().prometheus


def _range_seconds(text: str) -> float:
    try:
        return parse_duration(text)
    except ValueError:
        _fail(f"--range {text!r}: give a duration like 30s, 5m or 1h", EXIT_BAD_QUERY)


def _number(value: float) -> str:
    if math.isnan(value) or math.isinf(value):
        return str(value)
    if value == int(value) and abs(value) < 1e15:
        return str(int(value))
    return f"{value:.6g}"


def _label_columns(items: list[dict[str, str]]) -> list[str]:
    names = sorted({k for labels in items for k in labels if k != "__name__"})
    if any("__name__" in labels for labels in items):
        names.insert(0, "__name__")
    return names


def _label_order(labels: list[str]) -> Callable[[Sample | Series], list[tuple[int, float, str]]]:
    """Rows sorted by their labels, numbers as numbers: histogram buckets read 0.5, 1, 2, 10,
    +Inf (as ``le`` means), not "10.0" before "2.0" as text would have them."""

    def key(item: Sample | Series) -> list[tuple[int, float, str]]:
        parts = []
        for name in labels:
            text = item.labels.get(name, "")
            try:
                parts.append((0, float(text), ""))  # float("+Inf") is inf: last
            except ValueError:
                parts.append((1, 0.0, text))
        return parts

    return key


def _as_json(samples: list[Sample], series: list[Series] | None) -> dict[str, object]:
    if series is None:
        return {
            "resultType": "vector",
            "result": [{"metric": s.labels, "value": [s.t, s.v]} for s in samples],
        }
    return {
        "resultType": "matrix",
        "result": [{"metric": s.labels, "values": [[t, v] for t, v in s.points]} for s in series],
    }


def _table(title: str, labels: list[str]) -> Table:
    # The query goes above the table, not in its title: a title wraps to the table's width.
    console.print(title, highlight=False, markup=False, soft_wrap=True)
    table = Table(header_style="bold", expand=False)
    for name in labels:
        table.add_column("metric" if name == "__name__" else name)
    return table


def _print_instant(promql: str, samples: list[Sample]) -> None:
    if not samples:
        console.print("no series matched", highlight=False)
        return
    labels = _label_columns([s.labels for s in samples])
    table = _table(promql, labels)
    table.add_column("value", justify="right")
    for s in sorted(samples, key=_label_order(labels)):
        table.add_row(*(s.labels.get(n, "") for n in labels), _number(s.v))
    console.print(table)


def _print_summary(promql: str, series: list[Series], range_: str) -> None:
    if not series:
        console.print(f"no series matched in the last {range_}", highlight=False)
        return
    labels = _label_columns([s.labels for s in series])
    table = _table(f"{promql}  (last {range_})", labels)
    for column in ("points", "first", "last", "min", "max"):
        table.add_column(column, justify="right")
    for s in sorted(series, key=_label_order(labels)):
        values = [v for _, v in s.points if not math.isnan(v)]
        first = _number(s.points[0][1]) if s.points else "-"
        last = _number(s.points[-1][1]) if s.points else "-"
        low = _number(min(values)) if values else "-"
        high = _number(max(values)) if values else "-"
        table.add_row(
            *(s.labels.get(n, "") for n in labels), str(len(s.points)), first, last, low, high
        )
    console.print(table)


def _print_points(promql: str, series: list[Series]) -> None:
    if not series:
        console.print("no series matched", highlight=False)
        return
    labels = _label_columns([s.labels for s in series])
    table = _table(promql, labels)
    table.add_column("time (UTC)")
    table.add_column("value", justify="right")
    for s in sorted(series, key=_label_order(labels)):
        for t, v in s.points:
            stamp = time.strftime("%H:%M:%S", time.gmtime(t))
            table.add_row(*(s.labels.get(n, "") for n in labels), stamp, _number(v))
    console.print(table)
