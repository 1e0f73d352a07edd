"""The gateway's own requests to ThingsBoard (client-side RPCs, attribute requests) and their answers."""
from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable
from typing import Any

from gateway.northbound.inbound import (
    TOPIC_OWN_ATTRIBUTES_REQUEST,
    TOPIC_OWN_RPC_REQUEST,
    AttributeResponse,
    OwnAttributesResponse,
    OwnRpcResponse,
)
from gateway.northbound.publishes import Publish, attribute_request_publish
from gateway.northbound.records import encode


class _OwnCall:
    """One of the gateway's own requests waiting for ThingsBoard's answer."""

    __slots__ = ("answer", "done")

    def __init__(self) -> None:
        self.done = threading.Event()
        self.answer: Any = None


class OwnCalls:
    """Allocates request ids, queues the gateway's own requests and hands each answer to its waiter.

    ``queue_out`` sends a publish ahead of stored events, ``withdraw`` takes it back if still unsent,
    ``on_session_limits`` receives the data of a getSessionLimits answer (network thread).
    """

    def __init__(self, queue_out: Callable[[Publish], None], withdraw: Callable[[Publish], None],
                 on_session_limits: Callable[[Any], None], log: logging.Logger) -> None:
        self._queue_out = queue_out
        self._withdraw = withdraw
        self._on_session_limits = on_session_limits
        self.log = log
        self._lock = threading.Lock()
        self._rpc_calls: dict[int, _OwnCall] = {}
        self._attribute_calls: dict[int, _OwnCall] = {}
        self._own_attribute_calls: dict[int, _OwnCall] = {}
        self._next_own_attribute_request_id = 0
        self._limits_ids: set[int] = set()
        self._next_attribute_request_id = 0
        self._next_request_id = 0

    def client_rpc(self, method: str, params: Any, timeout: float) -> Any:
        """Send a client-side RPC and wait up to ``timeout`` s for ThingsBoard's answer.

        Raises TimeoutError (the request is withdrawn if not sent yet) or ValueError for non-JSON params.
        """
        payload = encode({"method": method, "params": params})
        with self._lock:
            request_id = self._new_request_id()
        publish = Publish(TOPIC_OWN_RPC_REQUEST.format(request_id), payload)
        answered, answer = self._ask(self._rpc_calls, request_id, publish, timeout)
        if not answered:
            raise TimeoutError(f"no answer to client-side RPC {method!r} within {timeout:g} s")
        return answer

    def request_attributes(self, device: str, client: bool, keys: list[str],
                           timeout: float) -> dict[str, Any] | None:
        """Ask for ``device``'s client (``client``) or shared attributes ``keys``; wait ``timeout`` s.

        Returns the values found (absent keys are left out), or None when no answer came in time.
        Raises ValueError for an empty device name or key list.
        """
        with self._lock:
            self._next_attribute_request_id += 1
            request_id = self._next_attribute_request_id
        publish = attribute_request_publish(request_id, device, client, keys)
        answered, answer = self._ask(self._attribute_calls, request_id, publish, timeout)
        if not answered:
            return None
        values = dict(answer or {})
        if len(keys) == 1:  # ThingsBoard answers one requested key as "value", without its name
            return {keys[0]: values["value"]} if "value" in values else {}
        return values

    def request_own_shared_attributes(self, keys: list[str], timeout: float) -> dict[str, Any] | None:
        """Ask for the gateway device's own shared attributes ``keys``; wait ``timeout`` s.

        Returns the shared values found (absent keys are left out), or None when no answer came in time.
        """
        if not keys:
            raise ValueError("no attribute keys to request")
        with self._lock:
            self._next_own_attribute_request_id += 1
            request_id = self._next_own_attribute_request_id
        publish = Publish(TOPIC_OWN_ATTRIBUTES_REQUEST.format(request_id), encode({"sharedKeys": ",".join(keys)}))
        answered, answer = self._ask(self._own_attribute_calls, request_id, publish, timeout)
        return dict(answer or {}) if answered else None

    def session_limits_request(self) -> Publish:
        """A getSessionLimits request under a fresh id; its answer goes to ``on_session_limits``."""
        with self._lock:
            request_id = self._new_request_id()
            self._limits_ids.add(request_id)
        request = json.dumps({"method": "getSessionLimits", "params": {"timeout": 5000}},
                             separators=(",", ":")).encode()
        return Publish(TOPIC_OWN_RPC_REQUEST.format(request_id), request)

    def on_answer(self, event: OwnRpcResponse | AttributeResponse | OwnAttributesResponse) -> None:
        """File an answer from ThingsBoard with whoever waits for it (called on the network thread)."""
        if isinstance(event, OwnAttributesResponse):
            with self._lock:
                own = self._own_attribute_calls.pop(event.request_id, None)
            if own is not None:
                own.answer = event.shared
                own.done.set()
            return
        if isinstance(event, OwnRpcResponse):
            with self._lock:
                call = self._rpc_calls.pop(event.request_id, None)
            if call is not None:
                call.answer = event.data
                call.done.set()
            elif event.request_id in self._limits_ids:
                self._on_session_limits(event.data)
            return
        with self._lock:
            waiting = self._attribute_calls.pop(event.request_id, None)
        if waiting is None:
            self.log.debug("ignored an attribute response nobody waits for (id %s)", event.request_id)
        else:
            waiting.answer = event.values
            waiting.done.set()

    def _ask(self, calls: dict[int, _OwnCall], request_id: int, publish: Publish,
             timeout: float) -> tuple[bool, Any]:
        """Queue ``publish`` and wait for the answer :meth:`on_answer` files under ``request_id``.

        Returns (answered, answer); on a timeout the request is withdrawn if it was not sent yet.
        Waiting holds only the caller's thread.
        """
        call = _OwnCall()
        with self._lock:
            calls[request_id] = call
        self._queue_out(publish)
        try:
            return call.done.wait(timeout), call.answer
        finally:
            with self._lock:
                calls.pop(request_id, None)
            self._withdraw(publish)

    def _new_request_id(self) -> int:
        """The next id for ``v1/devices/me/rpc/request/{n}``; call with ``_lock`` held."""
        self._next_request_id += 1
        return self._next_request_id
