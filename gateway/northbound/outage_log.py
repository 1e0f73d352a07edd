"""What the northbound logs about its link to ThingsBoard: one warning per outage, each refusal once, the time down."""
from __future__ import annotations

import logging
import time

from gateway.northbound.session import ConnectRefused

#: CONNACK codes that mean the credentials are wrong (MQTT 5 values; paho maps 3.1.1's 4/5 to 0x86/0x87)
CREDENTIAL_REFUSALS = frozenset({2, 4, 5, 0x85, 0x86, 0x87, 0x8C})


class OutageLog:
    """Reports connection attempts without repeating itself while ThingsBoard stays away.

    An outage gets one warning ("unreachable" or "lost"); later failed attempts of the same outage
    are debug lines, except a refusal with a reason not reported yet, which needs the operator and
    is an error even after the warning. The next connect says how long the gateway was cut off.
    """

    def __init__(self, log: logging.Logger, address: str, max_delay: float) -> None:
        self.log = log
        self.address = address
        self.max_delay = max_delay
        self._said: set[str] = set()  # what this outage's log already reported: "down" or refusal reasons
        self._since: float | None = None  # when the current outage began
        self._first = True  # no session was up yet

    def failed(self, exc: Exception) -> None:
        """A connect attempt failed with ``exc`` (an OSError, a lost session or a refusal)."""
        cause = exc.reason if isinstance(exc, ConnectRefused) else (str(exc) or type(exc).__name__)
        if isinstance(exc, ConnectRefused) and cause not in self._said:
            self._said.add(cause)
            check = " check the gateway credentials." if exc.code in CREDENTIAL_REFUSALS else ""
            self.log.error("ThingsBoard at %s refused the connection: %s;%s Retrying with backoff "
                           "(up to %g s); data is kept in storage", self.address, cause, check, self.max_delay)
        elif not self._said:
            self._said.add("down")
            self.log.warning("ThingsBoard at %s is unreachable: %s; retrying with backoff "
                             "(up to %g s); data is kept in storage", self.address, cause, self.max_delay)
        else:
            self.log.debug("still cannot reach ThingsBoard at %s: %s", self.address, cause)
        self._since = self._since or time.monotonic()

    def connected(self, mqtt5: bool) -> bool:
        """A session is up; True when it is a reconnect (not the first session of the process)."""
        proto = "MQTT 5" if mqtt5 else "MQTT 3.1.1"
        reconnect = not self._first
        if self._since is not None and reconnect:
            self.log.info("reconnected to ThingsBoard at %s (%s) after %.1f s", self.address, proto,
                          time.monotonic() - self._since)
        else:
            self.log.info("connected to ThingsBoard at %s (%s)", self.address, proto)
        self._first, self._since = False, None
        self._said.clear()
        return reconnect

    def lost(self, reason: str) -> None:
        """The session that was up is gone (not a stop)."""
        self.log.warning("connection to ThingsBoard at %s lost: %s", self.address, reason)
        self._since = time.monotonic()
        self._said.add("down")
