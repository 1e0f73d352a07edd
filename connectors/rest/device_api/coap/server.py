"""Runs the CoAP site: an aiocoap UDP server in an asyncio loop on a thread of its own.

aiocoap binds its UDP socket with SO_REUSEPORT, so a second process could silently share the port;
start() therefore first binds a plain socket to the same address and fails with a clear error when
the port is taken.
"""
from __future__ import annotations

import asyncio
import logging
import socket
import threading
from typing import Any

import aiocoap
from aiocoap.pipe import error_to_message, run_driving_pipe

from connectors.rest.device_api.coap.acks import AckWatch
from connectors.rest.device_api.coap.datagrams import harden
from connectors.rest.device_api.coap.site import CoapSite
from connectors.rest.device_api.model import CoapConfig
from connectors.rest.device_api.service import DeviceApi


class CoapStartError(OSError):
    """The CoAP server could not start (port taken, address not available)."""


class _Context(aiocoap.Context):
    """aiocoap's Context without its per-request task name, which formats the whole request (a
    measured quarter of the server's time per message): same behaviour, a constant name."""

    def render_to_pipe(self, pipe: Any) -> None:
        run_driving_pipe(error_to_message(pipe, self.log), self._render_to_pipe(pipe), name="coap request")


def check_port_free(host: str, port: int) -> None:
    """Raise CoapStartError when ``host:port`` (UDP) is in use or cannot be bound."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_DGRAM)
    except socket.gaierror as exc:
        raise CoapStartError(f"CoAP: cannot resolve deviceApi.coap.host {host!r}: {exc}") from None
    family, _, _, _, address = infos[0]
    with socket.socket(family, socket.SOCK_DGRAM) as probe:
        try:
            probe.bind(address)
        except OSError as exc:
            raise CoapStartError(f"CoAP: cannot listen on udp {host}:{port}: {exc.strerror} "
                                 f"(set deviceApi.coap.port in rest.json to a free port)") from None


class CoapServer:
    """Start, serve, stop. ``site`` is created on the loop thread and lives there."""

    def __init__(self, api: DeviceApi, config: CoapConfig, log: logging.Logger, start_timeout: float = 10.0) -> None:
        self.api = api
        self.config = config
        self.log = log
        self.start_timeout = start_timeout
        self.site: CoapSite | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._stop: asyncio.Event | None = None
        logging.getLogger("coap").setLevel(max(logging.WARNING, logging.getLogger("coap").level))
        logging.getLogger("coap-server").setLevel(max(logging.WARNING, logging.getLogger("coap-server").level))

    @property
    def port(self) -> int:
        return self.config.port

    @property
    def alive(self) -> bool:
        """The server's event loop thread runs (liveness: /healthz names it ``coap_server``)."""
        thread = self._thread
        return thread is not None and thread.is_alive()

    def start(self) -> None:
        check_port_free(self.config.host, self.config.port)
        self._thread = threading.Thread(target=self._run, name="coap-server", daemon=True)
        self._thread.start()
        if not self._ready.wait(self.start_timeout):
            raise CoapStartError("CoAP: the server did not start in time")
        if self._error is not None:
            raise CoapStartError(f"CoAP: cannot listen on udp {self.config.host}:{self.config.port}: "
                                 f"{self._error}") from self._error
        self.log.info("CoAP device API listening on udp %s:%d", self.config.host, self.config.port)

    def _run(self) -> None:
        loop = self._loop = asyncio.new_event_loop()
        try:
            loop.run_until_complete(self._serve())
        except BaseException as exc:  # noqa: BLE001 - reported to start() or logged
            if not self._ready.is_set():
                self._error = exc
                self._ready.set()
            else:
                self.log.exception("CoAP server stopped on an error")
        finally:
            loop.close()

    async def _serve(self) -> None:
        self._stop = asyncio.Event()
        site = CoapSite(self.api, self.config, self.log)
        context = await _Context.create_server_context(site, bind=(self.config.host, self.config.port),
                                                       transports=["udp6"])
        site.acks = AckWatch(context)
        harden(context, site.counters, context.log)  # first: the fast path hands what it does not serve to this
        if not site.install_fast_path(context):
            self.log.warning("CoAP: aiocoap has no UDP endpoint to serve posts ahead of; every request goes through it")
        self.site = site
        self._ready.set()
        try:
            await self._stop.wait()
            site.observations.end_all()  # each sends its 2.02
            await asyncio.sleep(0.05)
        finally:
            site.fast.closed = True
            await context.shutdown()
            site.close()

    def stop(self, timeout: float = 5.0) -> None:
        loop, stop = self._loop, self._stop
        if loop is not None and stop is not None and not loop.is_closed():
            try:
                loop.call_soon_threadsafe(stop.set)
            except RuntimeError:
                pass  # already closed
        if self._thread is not None:
            self._thread.join(timeout)

    def stats(self) -> dict[str, Any]:
        site = self.site
        return site.stats() if site is not None else {}
