"""`lab bench`: the cost of the gateway and of each protection, measured in one run."""

from __future__ import annotations

import html
import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from scenarios.bench import PROTECTIONS, ROUTES, BenchResult, parse_protections, run_bench
from scenarios.cli_platform import _running
from scenarios.config import LabConfig

console = Console()
_PROTECTION_CHOICES = ", ".join(f"{p}=off" for p in PROTECTIONS)


def register(app: typer.Typer) -> None:
    app.command("bench")(bench)


def bench(
    seconds: Annotated[float, typer.Option(min=1, max=600, help="seconds per measured path")] = 10,
    connections: Annotated[int, typer.Option(min=1, max=1000, help="open connections")] = 32,
    warmup: Annotated[
        float,
        typer.Option(min=0, max=60, help="seconds of the same load before each path, not counted"),
    ] = 3,
    route: Annotated[str, typer.Option(help=f"one of: {', '.join(ROUTES)}")] = "public",
    protection: Annotated[
        list[str] | None,
        typer.Option(help=f"also measure with one protection off: {_PROTECTION_CHOICES}"),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="print the result as JSON")] = False,
    out: Annotated[
        Path | None, typer.Option(help="write bench.json, report.md, report.html")
    ] = None,
) -> None:
    """Measure a route straight to its service and through the gateway (and with protections
    off): throughput, p50 and p99 side by side, and the gateway/direct ratio."""
    if route not in ROUTES:
        _usage(f"--route {route!r}: one of {', '.join(ROUTES)}")
    try:
        off = parse_protections(protection or [])
    except ValueError as exc:
        _usage(str(exc))
    runtime = _running(LabConfig())
    say = (lambda _line: None) if as_json else (lambda line: console.print(line, highlight=False))
    result = run_bench(
        runtime,
        route=route,
        seconds=seconds,
        connections=connections,
        warmup=warmup,
        protections_off=off,
        say=say,
    )
    if out is not None:
        write_reports(result, out)
    if as_json:
        print(json.dumps(result.to_json(), indent=2))
        return
    console.print(table(result))
    if result.tool == "python":
        console.print(
            "[yellow]load from the Python client (wrk is not installed): it saturates a core "
            "before the services do; `apt-get install wrk` for numbers about the platform[/]"
        )
    if out is not None:
        console.print(f"report: {out / 'report.html'}", highlight=False)


def _usage(message: str) -> None:
    console.print(f"lab: {message}", style="red", highlight=False)
    raise typer.Exit(2)


def _per_path(result: BenchResult) -> str:
    warm = f" after {result.warmup:.0f} s of warm-up" if result.warmup else ""
    return f"{result.seconds:.0f} s per path{warm}"


def table(result: BenchResult) -> Table:
    title = (
        f"{result.route} route ({result.service}), {result.connections} connections, "
        f"{_per_path(result)}, load by {result.tool}"
    )
    out = Table(title=title)
    for column in ("path", "req/s", "p50 ms", "p99 ms", "non-2xx", "vs direct"):
        out.add_column(column, justify="left" if column == "path" else "right")
    for row in result.rows:
        out.add_row(
            row.path,
            f"{row.rps:.0f}",
            f"{row.p50_ms:.1f}",
            f"{row.p99_ms:.1f}",
            str(row.non_2xx),
            f"{result.ratio(row):.2f}",
        )
    return out


def markdown(result: BenchResult) -> str:
    lines = [
        f"# lab bench: {result.route} route ({result.service})",
        "",
        f"{result.connections} connections, {_per_path(result)}, load by "
        f"{result.tool}, {datetime.now(UTC):%Y-%m-%d %H:%M} UTC.",
        "",
        "| path | req/s | p50 ms | p99 ms | non-2xx | vs direct |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for row in result.rows:
        lines.append(
            f"| {row.path} | {row.rps:.0f} | {row.p50_ms:.1f} | {row.p99_ms:.1f} | "
            f"{row.non_2xx} | {result.ratio(row):.2f} |"
        )
    return "\n".join(lines) + "\n"


def bars(result: BenchResult) -> str:
    """Horizontal bars of throughput, one per path, scaled to the fastest."""
    width, row_h, label_w = 640, 28, 190
    top = max((r.rps for r in result.rows), default=1.0) or 1.0
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" '
        f'height="{row_h * len(result.rows) + 10}" role="img" aria-label="requests per second">'
    ]
    for i, row in enumerate(result.rows):
        y = i * row_h + 5
        length = (width - label_w - 90) * row.rps / top
        colour = "#4e79a7" if row.path == "direct" else "#f28e2b"
        parts.append(
            f'<text x="0" y="{y + 17}" font-size="13">{html.escape(row.path)}</text>'
            f'<rect x="{label_w}" y="{y}" width="{length:.1f}" height="{row_h - 8}" '
            f'fill="{colour}"/>'
            f'<text x="{label_w + length + 6:.1f}" y="{y + 17}" font-size="13">'
            f"{row.rps:.0f} req/s</text>"
        )
    parts.append("</svg>")
    return "".join(parts)


def write_reports(result: BenchResult, out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / "bench.json").write_text(json.dumps(result.to_json(), indent=2) + "\n")
    text = markdown(result)
    (out / "report.md").write_text(text)
    rows = "".join(
        f"<tr><td>{html.escape(r.path)}</td><td>{r.rps:.0f}</td><td>{r.p50_ms:.1f}</td>"
        f"<td>{r.p99_ms:.1f}</td><td>{r.non_2xx}</td><td>{result.ratio(r):.2f}</td></tr>"
        for r in result.rows
    )
    page = f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>lab bench: {result.route}</title>
<style>body{{font-family:system-ui,sans-serif;margin:2rem;max-width:56rem}}
table{{border-collapse:collapse}}td,th{{border:1px solid #ccc;padding:.3rem .6rem;text-align:right}}
td:first-child,th:first-child{{text-align:left}}</style></head><body>
<h1>lab bench: {html.escape(result.route)} route ({html.escape(result.service)})</h1>
<p>{result.connections} connections, {_per_path(result)}, load generated by
<b>{html.escape(result.tool)}</b>. "vs direct" is the path's throughput over the service's own.</p>
{bars(result)}
<table><tr><th>path</th><th>req/s</th><th>p50 ms</th><th>p99 ms</th><th>non-2xx</th>
<th>vs direct</th></tr>{rows}</table>
</body></html>
"""
    (out / "report.html").write_text(page)
