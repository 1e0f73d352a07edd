"""Mailboxes: what a failed CoAP notification gives back wakes whoever waits for the device."""
from __future__ import annotations

import threading

from connectors.rest.device_api.mailbox import Mailboxes, QueuedRpc


def test_given_back_attributes_and_rpc_wake_listeners_and_waiting_polls() -> None:
    boxes = Mailboxes(rpc_ttl=60, max_pending_keys=10, max_queued_rpc=10)
    woken: list[str] = []
    boxes.add_listener("d", lambda: woken.append("listener"))

    boxes.restore_attributes("d", {"a": 1})
    assert woken == ["listener"]
    assert boxes.take_attributes("d") == {"a": 1}

    woken.clear()
    got: list[QueuedRpc | None] = []
    rpc = QueuedRpc(2, "m", None, expires=float("inf"))
    waiting = threading.Thread(target=lambda: got.append(boxes.wait_rpc("d", 30)))  # an HTTP long poll
    waiting.start()
    boxes.return_rpc("d", rpc)
    waiting.join(30)
    assert not waiting.is_alive() and got[-1] is rpc and woken == ["listener"]


def test_an_expired_rpc_given_back_wakes_nobody() -> None:
    boxes = Mailboxes(rpc_ttl=60, max_pending_keys=10, max_queued_rpc=10)
    woken: list[str] = []
    boxes.add_listener("d", lambda: woken.append("listener"))
    boxes.return_rpc("d", QueuedRpc(1, "m", None, expires=0.0))
    assert woken == [] and boxes.lease_rpc("d") is None and boxes.counters["rpc_expired"] == 1
