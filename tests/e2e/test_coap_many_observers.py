"""1,000 devices observing ``/attributes`` on the daemon process while other devices post telemetry:
every observer gets the update ThingsBoard pushed for it, every acknowledged post is delivered.
The daemon's RSS per observing device is printed (bench/coap_observers.py measures it as a figure)."""
from __future__ import annotations

import psutil
import pytest

from tests.e2e.test_coap_durability import Load
from tests.e2e.test_coap_observe import metric
from tests.e2e.test_durability import assert_all_delivered_in_order
from tests.fixtures.coap import ObserverSwarm, coap_rest, free_udp_port

OBSERVERS = [{"accessToken": f"OBSERVER_{i:04d}", "deviceName": f"observer-{i:04d}"} for i in range(1000)]
POSTERS = [{"accessToken": f"POSTER_{i}", "deviceName": f"poster-{i}"} for i in range(4)]


@pytest.fixture
def gateway(make_daemon):
    port = free_udp_port()
    gw = make_daemon(coap_rest(port, OBSERVERS + POSTERS))
    gw.coap_port = port
    return gw


def test_a_thousand_observers_while_others_post(gateway, mqtt_subscriber) -> None:
    process = psutil.Process(gateway.proc.pid)
    swarm = ObserverSwarm(gateway.coap_port, [d["accessToken"] for d in OBSERVERS])
    load = None
    try:
        before = process.memory_info().rss
        swarm.register()
        after = process.memory_info().rss
        assert all(notes == [{}] for notes in swarm.notifications.values())  # nothing was kept for them
        assert metric(gateway, "coap_observations_attributes") == len(OBSERVERS)
        print(f"observers={len(OBSERVERS)} rss_before_mb={before / 2**20:.1f} rss_after_mb={after / 2**20:.1f} "
              f"per_observer_kb={(after - before) / len(OBSERVERS) / 1024:.1f}")

        load = Load(gateway.coap_port, POSTERS)
        load.wait_for(50)
        for index, device in enumerate(OBSERVERS):
            mqtt_subscriber.publish("v1/gateway/attributes",
                                    {"device": device["deviceName"], "data": {"setpoint": index}})
        expected = {d["accessToken"]: [{}, {"setpoint": i}] for i, d in enumerate(OBSERVERS)}
        arrived = swarm.wait_for(lambda notes: all(len(n) >= 2 for n in notes.values()), 180)
        missing = [t for t, n in swarm.notifications.items() if len(n) < 2]
        assert arrived, f"{len(missing)} observers got no update, e.g. {missing[:5]}"
        assert swarm.notifications == expected
        load.wait_for(load.count() + 50)  # posts keep being answered with 1,000 observations open
    finally:
        acked = load.stop() if load is not None else []
        swarm.close()
    assert_all_delivered_in_order(mqtt_subscriber, acked)
