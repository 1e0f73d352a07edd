"""The statistics reporter over real memory storage: per-period counts, reference key names, room for device data."""
from __future__ import annotations

import json
import logging
from typing import Any

import pytest

from connectors.base import UplinkUnavailable
from converters.model import ConvertedData, TelemetryEntry
from gateway.config.model import StatisticsConfig, StorageConfig
from gateway.statistics.reporter import StatisticsReporter, connector_key
from gateway.storage.factory import create_storage
from gateway.uplink import GatewayUplink


class Link:
    """The northbound counters the reporter reads (the real client's stats() keys)."""

    def __init__(self) -> None:
        self.counters = {"published": 0, "bytes_sent": 0, "received": 0, "events_sent": 0}
        self.notified = 0

    def stats(self) -> dict[str, Any]:
        return dict(self.counters)

    def notify_stored(self) -> None:
        self.notified += 1


def data(device: str, values: dict[str, Any], attributes: dict[str, Any] | None = None) -> ConvertedData:
    item = ConvertedData(device_name=device, device_type="t")
    item.telemetry.append(TelemetryEntry(ts=1, values=values))
    item.attributes.update(attributes or {})
    return item


@pytest.fixture
def setup() -> Any:
    config = StorageConfig(type="memory", max_records=10)
    storage = create_storage(config)
    link = Link()
    reporter = StatisticsReporter(StatisticsConfig(enabled=True, period_seconds=60), storage, config, link,
                                  logging.getLogger("test"))
    yield storage, link, reporter
    storage.close()


def stored_values(storage: Any) -> list[dict[str, Any]]:
    return [json.loads(e.payload[len(b'{"own":'):-1])["values"] for e in storage.peek(100)
            if e.payload.startswith(b'{"own":')]


def test_each_message_carries_its_period_under_the_reference_keys(setup: Any) -> None:
    storage, link, reporter = setup
    uplink = GatewayUplink(storage, link).for_connector("REST Connector", reporter.counts_for("REST Connector"))
    assert connector_key("My HTTP  API", "EventsSent") == "MyHTTPAPIEventsSent"
    reporter.start()
    reporter.stop()  # the thread is not needed: report() is called by hand below
    uplink.send([data("a", {"t": 1, "h": 2}, {"model": "x"}), data("b", {"t": 3})])
    uplink.counts.received_bytes(120)  # what the connector saw as request bodies and relayed bodies
    uplink.counts.sent_bytes(40)
    link.counters.update(published=4, bytes_sent=300, received=1, events_sent=1)
    before = link.notified
    assert reporter.report() and link.notified == before + 1  # the sender is woken for it
    uplink.send([data("a", {"t": 2})])
    link.counters.update(published=6, bytes_sent=450, events_sent=2)
    assert reporter.report()
    first, second = stored_values(storage)
    assert first == {"eventsProduced": 2, "eventsSent": 2, "RESTConnectorEventsProduced": 2,
                     "RESTConnectorEventsSent": 2, "platformTsProduced": 3, "platformAttrProduced": 1,
                     "msgsSentToPlatform": 4, "allBytesSentToTB": 300, "msgsReceivedFromPlatform": 1,
                     "storageMsgPulled": 1, "receivedBytesFromDevices": 120, "allBytesSentToDevices": 40}
    assert second["receivedBytesFromDevices"] == second["allBytesSentToDevices"] == 0
    assert second["eventsSent"] == 1 and second["platformTsProduced"] == 1 and second["allBytesSentToTB"] == 150
    assert second["msgsReceivedFromPlatform"] == 0


def test_a_refused_put_counts_as_produced_not_sent(setup: Any) -> None:
    storage, link, reporter = setup
    uplink = GatewayUplink(storage, link).for_connector("c", reporter.counts_for("c"))
    for index in range(10):
        uplink.send([data(f"d{index}", {"t": index})])
    with pytest.raises(UplinkUnavailable):
        uplink.send([data("late", {"t": 1})])
    totals = reporter.totals()
    assert (totals["cEventsProduced"], totals["cEventsSent"]) == (11, 10)


def test_a_nearly_full_storage_keeps_its_room_for_device_data_and_counts_carry_over(setup: Any) -> None:
    storage, link, reporter = setup
    uplink = GatewayUplink(storage, link).for_connector("c", reporter.counts_for("c"))
    for index in range(9):  # 90 % of max_records=10
        uplink.send([data(f"d{index}", {"t": index})])
    assert reporter.report() is False and reporter.skipped == 1 and storage.count() == 9
    storage.remove_through(storage.peek(100)[-1].id)  # delivered
    assert reporter.report() is True
    assert stored_values(storage)[0]["eventsSent"] == 9  # the skipped period's counts are in this message
