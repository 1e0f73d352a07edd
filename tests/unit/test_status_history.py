"""The status page's figures: the bounded delivery-rate ring, its plot, the endpoint rows."""
from __future__ import annotations

from gateway.admin.history import DeliveryHistory
from gateway.admin.plot import HEIGHT, MARGIN, WIDTH, build_plot
from gateway.admin.status_page import endpoint_rows


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


def test_the_ring_keeps_one_hour_and_every_event_is_in_exactly_one_point() -> None:
    clock, sent = Clock(), [0]
    history = DeliveryHistory(lambda: sent[0], interval=10.0, span=3600.0, clock=clock)
    for _ in range(500):  # more than an hour of samples
        history.sample()
        clock.now += 10.0
        sent[0] += 5
    clock.now -= 5.0  # the running interval: half over, its events so far
    points = history.points()
    assert len(points) == 361  # 360 full intervals in the hour (the ring's bound), then the running one
    assert all(p.events == 5 for p in points)
    assert points[-1].rate == 1.0 and points[0].rate == 0.5
    assert points[-1].end == clock.now and points[0].end >= clock.now - 3600.0


def test_plot_maps_the_last_hour_to_the_width_and_rates_to_the_height() -> None:
    clock, sent = Clock(), [0]
    history = DeliveryHistory(lambda: sent[0], interval=10.0, clock=clock)
    history.sample()
    clock.now += 10.0
    sent[0] = 40
    history.sample()
    clock.now += 10.0
    plot = build_plot(history.points(), clock.now, history.span)
    assert [p.events for p in plot.points] == [40, 0]
    assert plot.max_rate == 4.0
    first, last = plot.points
    assert last.x == WIDTH - MARGIN and last.y == HEIGHT - MARGIN  # now, rate 0
    assert first.y == MARGIN and first.x < last.x  # the top of the scale, ten seconds earlier
    assert plot.polyline == f"{first.x},{first.y} {last.x},{last.y}"


def test_endpoint_rows_sum_methods_and_count_4xx_5xx_as_errors() -> None:
    snapshot = {"requests": {("/a", "POST", 200): 3, ("/a", "GET", 404): 1, ("/a", "POST", 503): 2,
                             ("/b", "POST", 200): 1},
                "converter_errors": {("/a", "bad_body"): 1, ("/a", "conversion"): 2}}
    assert endpoint_rows(snapshot) == [
        {"endpoint": "/a", "requests": 6, "errors": 3, "converter_errors": 3},
        {"endpoint": "/b", "requests": 1, "errors": 0, "converter_errors": 0}]
