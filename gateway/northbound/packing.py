"""Packing stored events into few publishes of the MQTT gateway API: by device, split at the size and
datapoint limits."""
from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from gateway.northbound.own_telemetry import TOPIC_OWN_TELEMETRY, is_own, own_entry
from gateway.northbound.publishes import TOPIC_ATTRIBUTES, TOPIC_TELEMETRY, DeadLetter, Publish, connect_publish
from gateway.northbound.records import Entry, RecordReader, encode

#: bytes of an MQTT PUBLISH besides topic and payload: fixed header (1 + up to 4 length bytes),
#: topic length (2), packet id (2), MQTT 5 properties length (up to 4); plus a safety margin
PACKET_OVERHEAD = 13
SAFETY_MARGIN = 51

def payload_budget(max_packet_bytes: int, topic: str) -> int:
    """The largest payload that keeps a PUBLISH on ``topic`` within ``max_packet_bytes``."""
    return max_packet_bytes - len(topic.encode()) - PACKET_OVERHEAD - SAFETY_MARGIN


@dataclass(slots=True)
class PackResult:
    """Publishes in the order to send them, what was set aside, and the batch's last event id.

    ``ready_through``: events that need no publish at all (leading invalid or empty ones), removable now.
    """

    publishes: list[Publish] = field(default_factory=list)
    dead_letters: list[DeadLetter] = field(default_factory=list)
    ready_through: int | None = None
    last_id: int | None = None


# ---------------------------------------------------------------- message building

class _Builder:
    """Accumulates ``{"dev": <open> item,item <close>, ...}`` for one topic without re-serialising."""

    def __init__(self, topic: str, budget: int, brackets: bytes, max_datapoints: int | None,
                 out: list[Publish], touched: dict[int, int]) -> None:
        self.topic, self.budget, self.max_dp = topic, budget, max_datapoints
        self.open, self.close = brackets[:1], brackets[1:]
        self.out, self.touched = out, touched
        self._reset()

    def _reset(self) -> None:
        self.devices: dict[bytes, list[bytes]] = {}
        self.size = 2  # outer braces
        self.datapoints = 0
        self.events: set[int] = set()

    def cost(self, dev_key: bytes, item: bytes) -> int:
        if dev_key in self.devices:
            return len(item) + 1
        return len(dev_key) + 3 + len(item) + (1 if self.devices else 0)

    def fresh_cost(self, dev_key: bytes, item: bytes) -> int:
        return 2 + len(dev_key) + 3 + len(item)

    def add(self, dev_key: bytes, item: bytes, datapoints: int, event_ids: Iterable[int]) -> None:
        """Add an item that fits in an empty message; flushes first if it does not fit this one."""
        over_dp = self.max_dp is not None and self.datapoints and self.datapoints + datapoints > self.max_dp
        if self.devices and (self.size + self.cost(dev_key, item) > self.budget or over_dp):
            self.flush()
        self.size += self.cost(dev_key, item)
        self.devices.setdefault(dev_key, []).append(item)
        self.datapoints += datapoints
        index = len(self.out)
        for event_id in event_ids:
            self.events.add(event_id)
            if self.touched.get(event_id, -1) < index:
                self.touched[event_id] = index

    def flush(self) -> None:
        if not self.devices:
            return
        parts = [key + b":" + self.open + b",".join(items) + self.close
                 for key, items in self.devices.items()]
        payload = b"{" + b",".join(parts) + b"}"
        self.out.append(Publish(self.topic, payload, self.datapoints, first_id=min(self.events)))
        self._reset()


def _split_pieces(pieces: list[bytes], prefix: bytes, suffix: bytes, limit: int,
                  max_count: int | None) -> list[tuple[bytes, int]]:
    """Group ``"k":v`` pieces into ``prefix + pieces + suffix`` chunks of at most ``limit`` bytes.

    Returns (chunk, number of pieces in it).
    """
    chunks: list[tuple[bytes, int]] = []
    current: list[bytes] = []
    size = len(prefix) + len(suffix)
    for piece in pieces:
        extra = len(piece) + (1 if current else 0)
        if current and (size + extra > limit or (max_count is not None and len(current) >= max_count)):
            chunks.append((prefix + b",".join(current) + suffix, len(current)))
            current, size = [], len(prefix) + len(suffix)
            extra = len(piece)
        current.append(piece)
        size += extra
    if current:
        chunks.append((prefix + b",".join(current) + suffix, len(current)))
    return chunks


def _pieces(values: dict[str, Any], event_id: int, device: str, dead: list[DeadLetter],
            what: str, fits: Callable[[int], bool]) -> list[bytes]:
    """Encode each key/value alone; a value that is not JSON or can never fit is dead-lettered."""
    pieces = []
    for key, value in values.items():
        try:
            piece = encode(key) + b":" + encode(value)
        except (ValueError, TypeError) as exc:
            dead.append(DeadLetter(event_id, f"{what} value is not valid JSON: {exc}",
                                   {"device": device, "key": key, "value": repr(value)}))
            continue
        if not fits(len(piece)):
            dead.append(DeadLetter(event_id, f"{what} value too large for one message ({len(piece)} bytes)",
                                   {"device": device, "key": key, "value": value}))
            continue
        pieces.append(piece)
    return pieces


class Packer:
    """Turns a batch of stored events into as few publishes as the size and data-point limits allow."""

    def __init__(self, max_packet_bytes: int = 65536, max_datapoints: int | None = None) -> None:
        self.max_packet_bytes = max_packet_bytes
        self.max_datapoints = max_datapoints
        self._reader = RecordReader()

    def pack(self, events: Sequence[tuple[int, bytes]], announced: set[str],
             on_connect: Callable[[str, str], None] | None = None) -> PackResult:
        """Pack ``events`` (id, stored record: either form in :mod:`gateway.northbound.records`), in id order.

        Emits ``v1/gateway/connect`` first for every device not in ``announced`` (which is updated),
        then attributes, then telemetry; each device's data keeps its order within a topic. The
        gateway's own telemetry (:mod:`gateway.northbound.own_telemetry`) gets a publish of its own.
        ``on_connect(device, type)`` is told about every device seen, for re-announcing later.
        """
        result = PackResult()
        if not events:
            return result
        result.last_id = events[-1][0]
        out, dead = result.publishes, result.dead_letters
        touched: dict[int, int] = {}
        attrs: dict[bytes, tuple[str, list[bytes | dict[str, Any]], list[int]]] = {}
        telemetry: dict[bytes, tuple[str, list[tuple[int, Entry]]]] = {}
        read = self._reader.read
        for event_id, payload in events:
            if is_own(payload):
                self._pack_own(event_id, payload, out, dead, touched)
                continue
            try:
                device, dtype, key, attributes, entries = read(payload)
            except (ValueError, TypeError, UnicodeDecodeError) as exc:
                dead.append(DeadLetter(event_id, f"invalid stored record: {exc}", _printable(payload)))
                continue
            if on_connect is not None:
                on_connect(device, dtype)
            if device not in announced and (attributes or entries):
                announced.add(device)
                connect = connect_publish(device, dtype)
                connect.first_id = event_id
                out.append(connect)
            if attributes:
                slot = attrs.get(key)
                if slot is None:
                    attrs[key] = (device, [attributes], [event_id])
                else:
                    slot[1].append(attributes)
                    slot[2].append(event_id)
            if entries:
                series = telemetry.get(key)
                if series is None:
                    telemetry[key] = series = (device, [])
                series[1].extend([(event_id, entry) for entry in entries])
        self._pack_attributes(attrs, out, dead, touched)
        self._pack_telemetry(telemetry, out, dead, touched)
        _assign_through(events, out, touched, result)
        return result

    def _pack_own(self, event_id: int, payload: bytes, out: list[Publish], dead: list[DeadLetter],
                  touched: dict[int, int]) -> None:
        """The gateway's own telemetry: one publish on ``v1/devices/me/telemetry``, or a dead letter."""
        try:
            item, count = own_entry(payload)
        except (ValueError, UnicodeDecodeError) as exc:
            dead.append(DeadLetter(event_id, f"invalid own telemetry record: {exc}", _printable(payload)))
            return
        if len(item) > payload_budget(self.max_packet_bytes, TOPIC_OWN_TELEMETRY) or (
                self.max_datapoints is not None and count > self.max_datapoints):
            dead.append(DeadLetter(event_id, "own telemetry too large for one message", _printable(payload)))
            return
        touched[event_id] = len(out)
        out.append(Publish(TOPIC_OWN_TELEMETRY, item, count, first_id=event_id))

    def _pack_attributes(self, attrs: dict[bytes, tuple[str, list[bytes | dict[str, Any]], list[int]]],
                         out: list[Publish], dead: list[DeadLetter], touched: dict[int, int]) -> None:
        budget = payload_budget(self.max_packet_bytes, TOPIC_ATTRIBUTES)
        builder = _Builder(TOPIC_ATTRIBUTES, budget, b"{}", None, out, touched)
        for key, (device, sources, ids) in attrs.items():
            first = sources[0]
            items: list[bytes] = []
            merged: dict[str, Any] | None = None
            if isinstance(first, bytes) and all(source == first for source in sources):
                items = [first[1:-1]]  # the same stored object every time: splice it as it is
            else:  # later values win, as ThingsBoard would end up with them one by one
                merged = {}
                for source in sources:
                    merged.update(json.loads(source) if isinstance(source, bytes) else source)
                try:
                    items = [encode(merged)[1:-1]]
                except (ValueError, TypeError):
                    items = []
            if not items or builder.fresh_cost(key, items[0]) > budget:
                if merged is None:
                    merged = json.loads(first) if isinstance(first, bytes) else dict(first)
                room = budget - (2 + len(key) + 3)
                pieces = _pieces(merged, ids[-1], device, dead, "attribute", lambda n, r=room: n <= r)
                items = [chunk for chunk, _ in _split_pieces(pieces, b"", b"", room, None)]
            for item in items:
                builder.add(key, item, 0, ids)
        builder.flush()

    def _pack_telemetry(self, telemetry: dict[bytes, tuple[str, list[tuple[int, Entry]]]], out: list[Publish],
                        dead: list[DeadLetter], touched: dict[int, int]) -> None:
        budget = payload_budget(self.max_packet_bytes, TOPIC_TELEMETRY)
        max_dp = self.max_datapoints
        builder = _Builder(TOPIC_TELEMETRY, budget, b"[]", max_dp, out, touched)
        add = builder.add
        for key, (device, entries) in telemetry.items():
            room = budget - (2 + len(key) + 3)
            for event_id, (item, count, entry) in entries:
                if item is not None and len(item) <= room and (max_dp is None or count <= max_dp):
                    add(key, item, count, (event_id,))
                    continue
                if entry is None:  # a spliced entry too big for one message: split it by key
                    entry = json.loads(item) if item is not None else {}
                values = entry["values"]
                prefix = b'{"ts":' + str(entry["ts"]).encode() + b',"values":{'
                fixed = len(prefix) + 2
                pieces = _pieces(values, event_id, device, dead, "telemetry",
                                 lambda n, r=room - fixed: n <= r)
                for chunk, chunk_count in _split_pieces(pieces, prefix, b"}}", room, max_dp):
                    add(key, chunk, chunk_count, (event_id,))
        builder.flush()


def _assign_through(events: Sequence[tuple[int, bytes]], out: list[Publish], touched: dict[int, int],
                    result: PackResult) -> None:
    """Mark each publish with the last event id completed once it (and all before it) is acked."""
    running = -1
    for event_id, _ in events:
        running = max(running, touched.get(event_id, -1))
        if running == -1:
            result.ready_through = event_id
        else:
            out[running].through_id = event_id
    best: int | None = None
    for publish in out:
        if publish.through_id is not None:
            best = publish.through_id
        publish.through_id = best


def _printable(payload: Any) -> Any:
    if isinstance(payload, bytes):
        return payload.decode("utf-8", "replace")
    return payload
