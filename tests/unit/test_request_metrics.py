"""RequestMetrics (connectors/rest/metrics.py): counts by bounded labels, latency buckets, kept converter errors."""
from __future__ import annotations

from prometheus_client.core import HistogramMetricFamily

from connectors.rest.metrics import BODY_BYTES, LAST_ERRORS, METHODS, UNMATCHED, RequestMetrics
from gateway.admin.collector import request_families
from gateway.stats import LATENCY_BUCKETS


def test_requests_count_by_endpoint_method_and_status() -> None:
    metrics = RequestMetrics()
    metrics.observe("/a", "POST", 200, 0.001)
    metrics.observe("/a", "POST", 200, 0.002)
    metrics.observe("/a", "POST", 400, 0.001)
    metrics.observe(UNMATCHED, "GET", 404, 0.001)
    assert metrics.snapshot()["requests"] == {("/a", "POST", 200): 2, ("/a", "POST", 400): 1,
                                              (UNMATCHED, "GET", 404): 1}


def test_a_method_outside_the_known_ones_counts_as_other() -> None:
    metrics = RequestMetrics()
    for method in ("PROPFIND", "BREW", "get", "X" * 100):
        metrics.observe(UNMATCHED, method, 405, 0.001)
    for method in sorted(METHODS):
        metrics.observe("/a", method, 200, 0.001)
    requests = metrics.snapshot()["requests"]
    assert requests[(UNMATCHED, "other", 405)] == 4
    assert {method for _, method, _ in requests} == METHODS | {"other"}  # bounded, whatever clients send


def test_latency_lands_in_the_first_bucket_at_or_above_it() -> None:
    metrics = RequestMetrics()
    metrics.observe("/a", "POST", 200, 0.0005)  # on a bound: that bucket (Prometheus' le is inclusive)
    metrics.observe("/a", "POST", 200, 0.003)  # between 0.0025 and 0.005: the 0.005 bucket
    metrics.observe("/a", "POST", 200, 60.0)  # beyond the last bound: +Inf
    histogram = metrics.snapshot()["latency"]["/a"]
    assert len(histogram) == len(LATENCY_BUCKETS) + 2  # the buckets, +Inf, then the sum
    counts = histogram[:-1]
    assert counts[LATENCY_BUCKETS.index(0.0005)] == 1
    assert counts[LATENCY_BUCKETS.index(0.005)] == 1
    assert counts[-1] == 1 and sum(counts) == 3
    assert abs(histogram[-1] - 60.0035) < 1e-9


def test_the_collector_exports_cumulative_buckets_per_configured_endpoint() -> None:
    metrics = RequestMetrics()
    metrics.observe("/devices/{id}/data", "POST", 200, 0.003)
    metrics.observe("/devices/{id}/data", "POST", 200, 0.2)
    metrics.converter_error("/devices/{id}/data", "bad_body", "not JSON", b"{")
    families = {family.name: family for family in request_families("C", metrics.snapshot())}
    latency = families["rest_gateway_http_request_duration_seconds"]
    assert isinstance(latency, HistogramMetricFamily)
    buckets = {s.labels["le"]: s.value for s in latency.samples if s.name.endswith("_bucket")}
    assert (buckets["0.0025"], buckets["0.005"], buckets["0.1"], buckets["0.25"], buckets["+Inf"]) == (0, 1, 1, 2, 2)
    (count,) = [s for s in latency.samples if s.name.endswith("_count")]
    assert count.value == 2 and count.labels == {"connector": "C", "endpoint": "/devices/{id}/data"}
    errors = families["rest_gateway_converter_errors"].samples
    assert [(s.labels["reason"], s.value) for s in errors] == [("bad_body", 1)]


def test_converter_errors_keep_a_bounded_start_of_each_body() -> None:
    metrics = RequestMetrics()
    metrics.converter_error("/a", "conversion", "m" * 1000, b"x" * (BODY_BYTES + 10))
    metrics.converter_error("/a", "bad_body", "short", b"{")
    first, second = metrics.snapshot()["last_errors"]
    assert len(first["body"]) == BODY_BYTES and first["truncated"] is True and len(first["message"]) == 300
    assert second["body"] == b"{" and second["truncated"] is False
    for index in range(LAST_ERRORS + 5):
        metrics.converter_error("/b", "conversion", f"error {index}", b"")
    snap = metrics.snapshot()
    assert len(snap["last_errors"]) == LAST_ERRORS
    assert snap["last_errors"][-1]["message"] == f"error {LAST_ERRORS + 4}"  # newest last, oldest dropped
    assert snap["converter_errors"] == {("/a", "conversion"): 1, ("/a", "bad_body"): 1,
                                        ("/b", "conversion"): LAST_ERRORS + 5}  # counts are never dropped


def test_a_snapshot_is_a_copy() -> None:
    metrics = RequestMetrics()
    metrics.observe("/a", "POST", 200, 0.001)
    snap = metrics.snapshot()
    snap["requests"].clear()
    snap["latency"]["/a"][0] = 99
    again = metrics.snapshot()
    assert again["requests"] == {("/a", "POST", 200): 1} and again["latency"]["/a"][0] != 99
