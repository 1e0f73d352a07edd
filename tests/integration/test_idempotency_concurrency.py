"""Idempotency-Key with two copies of a request at once: the second waits for nothing and gets 409 while the
first is being stored, then the first answer. The REST app runs in-process on real sqlite storage; the
first copy is held inside the storage's put (an Event, not a sleep) while the second arrives."""
from __future__ import annotations

import json
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from werkzeug.test import Client

from connectors.rest.config import load_rest_config
from connectors.rest.connector import RestConnector
from gateway.receipts import Receipt
from gateway.storage.memory import SizeLimits
from gateway.storage.sqlite import SqliteStorage
from gateway.uplink import GatewayUplink


class HeldStorage(SqliteStorage):
    """sqlite storage whose next put waits until ``release`` is set (and says it has started)."""

    def __init__(self, path: str) -> None:
        super().__init__(path, SizeLimits(1000, 1 << 30))
        self.entered, self.release = threading.Event(), threading.Event()

    def put(self, payloads: Sequence[bytes], receipt: Receipt | None = None) -> None:
        self.entered.set()
        assert self.release.wait(30), "never released"
        super().put(payloads, receipt)


class Northbound:
    connected = True

    def stats(self) -> dict[str, Any]:
        return {}


def test_a_copy_sent_while_the_first_is_stored_gets_409_then_the_first_answer(tmp_path: Path) -> None:
    rest = {"host": "127.0.0.1", "port": "8080", "mapping": [{
        "endpoint": "/data", "idempotency": {}, "converter": {
            "type": "json", "deviceNameExpression": "${name}",
            "timeseries": [{"type": "int", "key": "n", "value": "${n}"}]}}]}
    (tmp_path / "rest.json").write_text(json.dumps(rest))
    storage = HeldStorage(str(tmp_path / "events.db"))
    try:
        connector = RestConnector("rest", load_rest_config(str(tmp_path / "rest.json")),
                                  GatewayUplink(storage, Northbound()))
        client = Client(connector.app)
        headers = {"Idempotency-Key": '"same"'}
        first: list[Any] = []
        thread = threading.Thread(target=lambda: first.append(
            client.post("/data", json={"name": "d", "n": 1}, headers=headers)))
        thread.start()
        assert storage.entered.wait(30)
        second = client.post("/data", json={"name": "d", "n": 1}, headers=headers)
        assert second.status_code == 409 and second.headers["Retry-After"] == "1"
        assert "still being processed" in second.json["error"]
        storage.release.set()
        thread.join(30)
        assert first[0].status_code == 200 and first[0].json == {"stored": 1}
        again = client.post("/data", json={"name": "d", "n": 1}, headers=headers)
        assert again.status_code == 200 and again.headers["Idempotent-Replayed"] == "true"
        assert storage.count() == 1
    finally:
        storage.release.set()
        storage.close()
