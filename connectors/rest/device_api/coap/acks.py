"""Knowing when a confirmable notification was acknowledged.

aiocoap retransmits a CON message until its ACK, and ends the exchange (cancelling the resource's
task) on RST or after the last retransmission; but it tells the resource nothing when the ACK comes.
RPC delivery needs that moment (an RPC is delivered when the device acknowledged it, and the next
is sent only then), so this module wraps the one method of aiocoap's message manager that sees
the ACK. It is the only place that touches aiocoap internals; setup.py pins aiocoap below 0.5 and
tests/e2e/test_coap_observe.py fails if the hook stops firing.
"""
from __future__ import annotations

import asyncio
from typing import Any


class AckWatch:
    """Futures resolved when the CON message they were made for is acknowledged (or reset)."""

    def __init__(self, context: Any) -> None:
        self._waiting: dict[tuple[Any, int], asyncio.Future[bool]] = {}
        self._managers = [ri.token_interface for ri in getattr(context, "request_interfaces", [])
                          if hasattr(getattr(ri, "token_interface", None), "_remove_exchange")]
        if not self._managers:
            raise RuntimeError("this aiocoap version has no message manager to watch for ACKs")
        for manager in self._managers:
            original = manager._remove_exchange

            def remove_exchange(message: Any, _original: Any = original) -> None:
                _original(message)
                future = self._waiting.pop((message.remote, message.mid), None)
                if future is not None and not future.done():
                    future.set_result(message.mtype.name == "ACK")

            manager._remove_exchange = remove_exchange

    def expect(self, sent: Any) -> asyncio.Future[bool]:
        """A future for ``sent`` (a response just handed to its pipe, so its remote and MID are set):
        True on ACK, False on RST. Resolved at once for a message that is not confirmable."""
        future: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        if sent.mtype is None or sent.mtype.name != "CON" or sent.mid is None:
            future.set_result(True)
            return future
        self._waiting[(sent.remote, sent.mid)] = future
        return future

    def forget(self, sent: Any) -> None:
        """Stop waiting for ``sent`` (its observation ended)."""
        self._waiting.pop((sent.remote, sent.mid), None)

    def __len__(self) -> int:
        return len(self._waiting)
