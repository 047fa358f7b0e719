"""`lab query` lists histogram buckets in the order `le` means, not as text sorts them."""

from __future__ import annotations

from grader.prometheus import Sample
from scenarios.cli_query import _label_order


def test_buckets_sort_as_numbers_with_inf_last_and_text_after_numbers() -> None:
    samples = [Sample({"le": le}, 0.0, 0.0) for le in ("10.0", "+Inf", "2.0", "0.5", "1.0")]
    ordered = sorted(samples, key=_label_order(["le"]))
    assert [s.labels["le"] for s in ordered] == ["0.5", "1.0", "2.0", "10.0", "+Inf"]
    named = [Sample({"upstream": u}, 0.0, 0.0) for u in ("order", "auth", "inventory")]
    assert [s.labels["upstream"] for s in sorted(named, key=_label_order(["upstream"]))] == [
        "auth",
        "inventory",
        "order",
    ]
