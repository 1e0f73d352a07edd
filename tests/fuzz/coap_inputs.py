"""Hypothesis strategies for hostile CoAP datagrams: well-formed requests with odd fields, options
encoded by hand (so reserved nibbles and lengths past the end are possible), and raw mutations.

Every JSON payload carries a marker key ``"fzN"`` filled in at send time (the ``{MARK}`` placeholder),
so what the subscriber receives can be traced to the datagram that carried it (a key, not a value:
ThingsBoard's gateway API merges attribute posts of one device, so only keys survive for sure).
"""
from __future__ import annotations

import json
from typing import Any

from hypothesis import strategies as st

MARK = b"{MARK}"
TOKEN = "FUZZ_COAP_TOKEN"

# options by number: known ones (critical and elective), unassigned, and the extremes
OPTION_NUMBERS = st.one_of(
    st.sampled_from([1, 3, 4, 5, 6, 7, 8, 9, 11, 12, 14, 15, 17, 20, 23, 27, 28, 35, 39, 60, 252, 258, 292,
                     2048, 2049, 65000, 65535]),
    st.integers(min_value=0, max_value=65804),
)
OPTION_VALUES = st.one_of(st.binary(max_size=12), st.sampled_from([b"", b"\x00", b"\x0e", b"\xff" * 4, b"\x3f",
                                                                    b"\x08", b"\x16"]))
SEGMENTS = st.sampled_from(["api", "v1", TOKEN, "telemetry", "attributes", "rpc", "1", "claim", "provision",
                            "fw", "sw", "", "..", "%00", "x" * 300]) | st.text(max_size=8)
PATHS = st.one_of(
    st.sampled_from([f"api/v1/{TOKEN}/telemetry", f"api/v1/{TOKEN}/attributes", f"api/v1/{TOKEN}/rpc",
                     f"api/v1/{TOKEN}/rpc/1", f"api/v1/{TOKEN}/claim", "api/v1/provision", f"fw/{TOKEN}"]),
    st.lists(SEGMENTS, max_size=6).map("/".join),
)
JSON_LEAVES = st.none() | st.booleans() | st.integers(-(2 ** 70), 2 ** 70) | st.floats(allow_nan=False) \
    | st.text(max_size=8)
# no key that looks like a marker, and no "ts"/"values" pair that would turn the object into a timestamped one
KEYS = st.text(min_size=1, max_size=6).filter(lambda k: not k.startswith("fz") and k not in ("ts", "values"))
JSON_OBJECTS = st.dictionaries(KEYS,
                               st.recursive(JSON_LEAVES, lambda inner: st.lists(inner, max_size=3)
                                            | st.dictionaries(st.text(max_size=4), inner, max_size=3),
                                            max_leaves=5), max_size=4)


def _marked(values: dict[str, Any]) -> bytes:
    """``values`` with the marker first: ``{"fz{MARK}": 1, ...}``."""
    rest = json.dumps(values)[1:]
    return b'{"fz' + MARK + b'": 1' + (b", " + rest.encode() if rest != "}" else b"}")


MARKED_ARRAYS = st.lists(JSON_OBJECTS.map(_marked), min_size=1, max_size=3).map(
    lambda items: b"[" + b", ".join(items) + b"]")
PAYLOADS = st.one_of(
    JSON_OBJECTS.map(_marked),
    MARKED_ARRAYS,
    st.binary(max_size=80),
    st.sampled_from([b"", b"{", b"[]", b"{}", b"null", b"[" * 3000 + b"]" * 3000, b'{"a": NaN}', b"\xff\xfe"]),
)


def _extended(value: int) -> tuple[int, bytes]:
    if value < 13:
        return value, b""
    if value < 269:
        return 13, bytes([value - 13])
    return 14, (value - 269).to_bytes(2, "big")


def encode_options(options: list[tuple[int, bytes]]) -> bytes:
    """Options in number order with delta/length encoding (RFC 7252 §3.1), values as given."""
    out, last = b"", 0
    for number, value in sorted(options, key=lambda option: option[0]):
        delta, delta_ext = _extended(number - last)
        length, length_ext = _extended(len(value))
        out += bytes([(delta << 4) | length]) + delta_ext + length_ext + value
        last = number
    return out


@st.composite
def requests(draw: st.DrawFn) -> bytes:
    """One datagram shaped like a request (any type and code), usually to a real resource."""
    mtype = draw(st.sampled_from([0, 0, 0, 1, 2, 3]))
    code = draw(st.sampled_from([1, 2, 2, 2, 3, 4, 5, 6, 7, 0, 0x1F, 0x45, 0xFF]) | st.integers(0, 255))
    token = draw(st.binary(max_size=8))
    options = [(11, segment.encode()) for segment in draw(PATHS).split("/") if segment]
    options += draw(st.lists(st.tuples(OPTION_NUMBERS, OPTION_VALUES), max_size=4))
    if draw(st.booleans()):
        options.append((15, draw(st.sampled_from([b"clientKeys=a,b", b"sharedKeys=c", b"title=T", b"=",
                                                  b"sharedKeys=" + b"k," * 50]))))
    payload = draw(PAYLOADS)
    head = bytes([0x40 | (mtype << 4) | len(token), code, 0, 0]) + token  # the MID is set at send time
    return head + encode_options(options) + (b"\xff" + payload if payload else b"")


@st.composite
def plausible_posts(draw: st.DrawFn) -> bytes:
    """A telemetry or attributes post a device could send, with odd but acceptable fields: most are
    stored, so the run checks that what is stored is what was acknowledged."""
    mtype = draw(st.sampled_from([0, 1]))
    token = draw(st.binary(max_size=8))
    resource = draw(st.sampled_from(["telemetry", "attributes"]))
    options = [(11, b"api"), (11, b"v1"), (11, TOKEN.encode()), (11, resource.encode())]
    options += draw(st.lists(st.tuples(st.sampled_from([4, 6, 8, 14, 20, 28, 60, 252, 258, 2048, 65000]),
                                       OPTION_VALUES), max_size=3))
    if draw(st.booleans()):
        options.append((12, draw(st.sampled_from([b"", b"\x32", b"\x00\x32", b"\x3c", b"\x2a", b"\xff\xff"]))))
    if draw(st.booleans()):
        options.append((27, draw(st.sampled_from([b"", b"\x00", b"\x06", b"\x10", b"\x0e", b"\x08"]))))
    payload = draw(st.one_of(JSON_OBJECTS.map(_marked), MARKED_ARRAYS))
    head = bytes([0x40 | (mtype << 4) | len(token), 2, 0, 0]) + token
    return head + encode_options(options) + b"\xff" + payload


@st.composite
def mutated(draw: st.DrawFn) -> bytes:
    """A request cut short, or with bytes before its payload overwritten."""
    data = draw(requests())
    marker = data.find(b"\xff", 4)
    end = len(data) if marker < 0 else marker
    if draw(st.booleans()):
        return data[:draw(st.integers(0, len(data)))]
    for _ in range(draw(st.integers(1, 3))):
        index = draw(st.integers(0, max(0, end - 1)))
        if index < len(data):
            data = data[:index] + bytes([draw(st.integers(0, 255))]) + data[index + 1:]
    return data


DATAGRAMS = st.one_of(plausible_posts(), requests(), mutated(), st.binary(max_size=120))
