"""A small client for the Prometheus HTTP API, the grader's only window on the platform's metrics.

Scrapes happen every second, so a query made right after a phase ended may not see that phase's
last second yet; :meth:`Prometheus.wait_for_scrape_after` waits until every target has been
scraped after a moment, and checks call it before they query.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import httpx


class PrometheusError(Exception):
    """Prometheus could not be reached or refused a query; the message says which and why."""


class PrometheusUnreachable(PrometheusError):
    """No answer at all (not running, wrong port), as opposed to a refused query."""


@dataclass(frozen=True)
class Sample:
    """One value of an instant query (a scalar result has no labels)."""

    labels: dict[str, str]
    t: float
    v: float


@dataclass(frozen=True)
class Series:
    """One series of a range query, points oldest first."""

    labels: dict[str, str]
    points: list[tuple[float, float]] = field(default_factory=list)


def to_epoch(moment: datetime | float | int) -> float:
    """Epoch seconds; naive datetimes are taken as UTC (the harness records UTC)."""
    if isinstance(moment, datetime):
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=UTC)
        return moment.timestamp()
    return float(moment)


def _value(raw: Any) -> float:
    # Prometheus sends values as strings, including "NaN", "+Inf" and "-Inf".
    try:
        return float(raw)
    except (TypeError, ValueError):
        return math.nan


def series_name(labels: dict[str, str]) -> str:
    """``metric{a="1", b="2"}`` for display."""
    name = labels.get("__name__", "")
    rest = ", ".join(f'{k}="{v}"' for k, v in sorted(labels.items()) if k != "__name__")
    return f"{name}{{{rest}}}" if rest or not name else name


class Prometheus:
    """Synchronous client; use as a context manager or call :meth:`close`."""

    def __init__(
        self, base_url: str, *, timeout: float = 10.0, client: httpx.Client | None = None
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self._own_client = client is None
        self._client = client or httpx.Client(timeout=timeout)
        # The newest moment every target is known to have been scraped after.
        self._scraped_through = 0.0

    def __enter__(self) -> Prometheus:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        if self._own_client:
            self._client.close()

    # --- raw API -------------------------------------------------------------------------
    def _get(self, path: str, params: dict[str, str]) -> dict[str, Any]:
        url = f"{self.base_url}{path}"
        try:
            response = self._client.get(url, params=params)
        except httpx.HTTPError as exc:
            raise PrometheusUnreachable(
                f"cannot reach Prometheus at {self.base_url}: {exc}"
            ) from exc
        try:
            body = response.json()
        except ValueError:
            raise PrometheusError(
                f"Prometheus at {self.base_url} answered {response.status_code} "
                f"with a non-JSON body to {path}"
            ) from None
        if response.status_code != 200 or body.get("status") != "success":
            kind = body.get("errorType", "error") if isinstance(body, dict) else "error"
            message = body.get("error", response.reason_phrase) if isinstance(body, dict) else ""
            query = params.get("query", "")
            raise PrometheusError(
                f"Prometheus rejected {query!r} ({response.status_code} {kind}): {message}"
            )
        return body["data"]

    def query(self, promql: str, at: datetime | float | None = None) -> list[Sample]:
        """Instant query; a scalar result comes back as one sample without labels."""
        params = {"query": promql}
        if at is not None:
            params["time"] = f"{to_epoch(at):.3f}"
        data = self._get("/api/v1/query", params)
        kind, result = data.get("resultType"), data.get("result")
        if kind == "vector":
            return [
                Sample(
                    labels=item.get("metric", {}),
                    t=float(item["value"][0]),
                    v=_value(item["value"][1]),
                )
                for item in result or []
            ]
        if kind == "scalar" and result:
            return [Sample(labels={}, t=float(result[0]), v=_value(result[1]))]
        if kind == "matrix":
            raise PrometheusError(
                f"{promql!r} returned a range vector; an instant check needs an instant vector "
                "(wrap it in a function such as increase() or max_over_time())"
            )
        raise PrometheusError(f"{promql!r} returned an unsupported result type {kind!r}")

    def query_range(
        self,
        promql: str,
        start: datetime | float,
        end: datetime | float,
        step: float = 1.0,
    ) -> list[Series]:
        params = {
            "query": promql,
            "start": f"{to_epoch(start):.3f}",
            "end": f"{to_epoch(end):.3f}",
            "step": f"{step:g}",
        }
        data = self._get("/api/v1/query_range", params)
        if data.get("resultType") != "matrix":
            raise PrometheusError(
                f"{promql!r} returned {data.get('resultType')!r} from a range query"
            )
        return [
            Series(
                labels=item.get("metric", {}),
                points=[(float(t), _value(v)) for t, v in item.get("values", [])],
            )
            for item in data.get("result") or []
        ]

    # --- scrape freshness ----------------------------------------------------------------
    def oldest_last_scrape(self) -> float | None:
        """When the least recently scraped target was last scraped (None: no targets yet)."""
        samples = self.query("min(timestamp(up))")
        if not samples or math.isnan(samples[0].v):
            return None
        return samples[0].v

    def wait_for_scrape_after(
        self, moment: datetime | float, timeout: float = 10.0, poll: float = 0.25
    ) -> bool:
        """Wait until every target has been scraped after ``moment``.

        Returns False (and does not raise) when that does not happen within ``timeout``, e.g.
        because a target is down for good: checks then query what there is.
        """
        target = to_epoch(moment)
        if self._scraped_through >= target:
            return True
        deadline = time.monotonic() + timeout
        while True:
            latest = self.oldest_last_scrape()
            if latest is not None and latest >= target:
                self._scraped_through = max(self._scraped_through, latest)
                return True
            if time.monotonic() >= deadline:
                return False
            time.sleep(poll)
