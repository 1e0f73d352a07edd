"""A SQLite event file written by the previous version (plain JSON records) is delivered after an upgrade."""
from __future__ import annotations

import json
import sqlite3
from pathlib import Path

from converters.model import ConvertedData, TelemetryEntry
from gateway.config.model import ThingsBoardConfig
from gateway.northbound import Northbound
from gateway.storage.memory import SizeLimits
from gateway.storage.sqlite import SqliteStorage
from gateway.uplink import encode_record
from tests.fixtures.broker import Broker, Subscriber


def test_old_plain_json_rows_then_new_rows_all_arrive_in_order(tmp_path: Path, broker: Broker,
                                                               mqtt_subscriber: Subscriber) -> None:
    path = str(tmp_path / "gateway.db")
    limits = SizeLimits(1000, 1 << 20)
    SqliteStorage(path, limits).close()  # the schema, as any version creates it
    with sqlite3.connect(path) as conn:  # rows exactly as the previous version stored them
        conn.executemany("INSERT INTO events(payload) VALUES (?)", [
            (json.dumps({"device": "SN-1", "type": "Thermo", "attributes": {"fw": 1},
                         "telemetry": [{"ts": 1000 + n, "values": {"n": n}}]},
                        separators=(",", ":")).encode(),) for n in range(3)])
    conn.close()
    storage = SqliteStorage(path, limits)
    storage.put([encode_record(ConvertedData("SN-1", "Thermo", {"fw": 2}, [TelemetryEntry(1000 + n, {"n": n})]))
                 for n in range(3, 6)])
    config = ThingsBoardConfig(host=broker.host, port=broker.port, access_token="t", protocol=broker.protocol)
    nb = Northbound(config, storage)
    nb.start()
    try:
        assert mqtt_subscriber.wait_for(lambda m: len(mqtt_subscriber.telemetry_for("SN-1")) >= 6, 10)
        assert [e["values"]["n"] for e in mqtt_subscriber.telemetry_for("SN-1")] == list(range(6))
        assert mqtt_subscriber.attributes_for("SN-1") == {"fw": 2}
        assert mqtt_subscriber.connects() == [{"device": "SN-1", "type": "Thermo"}]
    finally:
        nb.stop(2.0)
        storage.close()
    assert nb.stats()["dead_lettered"] == 0
