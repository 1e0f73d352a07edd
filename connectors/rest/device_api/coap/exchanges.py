"""The CoAP fast path's memory of recent exchanges, per source endpoint: what it answered to which
message id, so a retransmitted CON is answered again instead of being stored twice (RFC 7252 §4.5).

Why per source. A client retransmits a CON it got no answer to 2-45 s later (MAX_TRANSMIT_SPAN), and
a delayed copy may come up to EXCHANGE_LIFETIME (247 s) after the original. A memory bounded by a
global count of exchanges forgets sooner the faster everyone else posts: at 20,000 messages/s a
64k-entry cache spans about 3 s. Kept per source endpoint (address and port, as RFC 7252 deduplicates),
what a client's retransmission needs is its own last exchanges, which no other client's rate pushes
out: with NSTART 1 (RFC 7252 §4.7) a client has one outstanding request and retransmits only that one,
the newest it sent. ``per_source`` (default 4) also covers a few requests in flight at once, or a
copy the network delayed behind the next request.

Bounds. At most ``sources`` endpoints are kept (default 16,384), least recently heard from first out,
and an exchange older than ``lifetime`` is forgotten (after that the client may reuse its message id
for a new request, which is then served as new). A retransmission is therefore recognised whatever the
global rate, unless more than ``sources`` other endpoints sent something since that client's last
datagram. Memory, measured with tracemalloc (tests/unit/test_coap_exchanges.py): about 1 KB per
source that keeps posting (976 bytes: the key and its address string, the OrderedDict node, a small
dict that has grown to 16 slots, and a tuple, float and int for each of its 4 exchanges; about 540
with a single exchange), so at most about 16 MB at the default 16,384 sources. A source silent for
EXCHANGE_LIFETIME is dropped when a new source comes. (A flat list per source takes 610 bytes but
costs more per datagram than the dict's lookup in C; the fast path exists for speed.)

Cost per datagram: one OrderedDict lookup by ``(host, port)`` and one small-dict lookup by message id;
on a new request an insert into the source's dict, the removal of its oldest, and a move to the
LRU's end. No timer. Measured next to the global two-generation cache this replaces (which formatted
a string key per datagram), it costs the same or less per datagram.
"""
from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable

EXCHANGE_LIFETIME = 247.0  # seconds, RFC 7252 §4.8.2 with the default parameters
DEFAULT_SOURCES = 16_384
DEFAULT_PER_SOURCE = 4

#: a remembered answer: the code of an empty piggybacked answer, a whole encoded answer, or a marker
Answer = int | bytes
Source = tuple[str, int]


class RecentExchanges:
    """``source -> {mid: (answer, at)}`` (oldest first, at most ``per_source``), the sources in an LRU.

    Used on the event loop's thread only.
    """

    def __init__(self, sources: int = DEFAULT_SOURCES, per_source: int = DEFAULT_PER_SOURCE,
                 lifetime: float = EXCHANGE_LIFETIME, now: Callable[[], float] = time.monotonic) -> None:
        self.max_sources = max(1, sources)
        self.per_source = max(1, per_source)
        self.lifetime = lifetime
        self._now = now
        self._sources: OrderedDict[Source, dict[int, tuple[Answer, float]]] = OrderedDict()
        self.evicted = 0  # sources dropped to stay within ``max_sources`` while still within the lifetime

    def get(self, source: Source, mid: int) -> Answer | None:
        """The answer remembered for ``mid`` from ``source`` within the lifetime, or None."""
        entry = self._sources.get(source)
        if entry is None:
            return None
        found = entry.get(mid)
        if found is None or found[1] <= self._now() - self.lifetime:
            return None
        return found[0]

    def put(self, source: Source, mid: int, answer: Answer) -> None:
        """Remember a new exchange (the source's oldest goes when it has ``per_source`` already)."""
        now = self._now()
        sources = self._sources
        entry = sources.get(source)
        if entry is None:
            self._make_room(now)
            sources[source] = {mid: (answer, now)}
            return
        if mid in entry:
            del entry[mid]  # a message id used again after the lifetime: now the newest
        entry[mid] = (answer, now)
        if len(entry) > self.per_source:
            del entry[next(iter(entry))]
        sources.move_to_end(source)

    def answer(self, source: Source, mid: int, answer: Answer) -> None:
        """Record the answer of an exchange still remembered (a forgotten one stays forgotten)."""
        entry = self._sources.get(source)
        if entry is not None:
            found = entry.get(mid)
            if found is not None:
                entry[mid] = (answer, found[1])

    def _make_room(self, now: float) -> None:
        """Before a new source: drop sources silent for a whole lifetime, and the least recent past the cap."""
        sources = self._sources
        stale = now - self.lifetime
        while sources:
            entry = next(iter(sources.values()))
            newest = max(at for _, at in entry.values())
            if newest > stale and len(sources) < self.max_sources:
                return
            sources.popitem(last=False)
            if newest > stale:
                self.evicted += 1

    def exchanges(self) -> int:
        """The number of exchanges remembered (some may be past the lifetime, no longer answered)."""
        return sum(len(entry) for entry in self._sources.values())

    def __len__(self) -> int:
        """The number of sources remembered."""
        return len(self._sources)
