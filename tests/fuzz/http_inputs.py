"""Hypothesis strategies for hostile HTTP requests: bodies, JSON shapes, headers, URLs, framing."""
from __future__ import annotations

import json
from typing import Any

from hypothesis import strategies as st

# Keys the fuzz endpoint's expressions read; generated bodies use them so values reach every expression.
EXPRESSION_KEYS = ("name", "kind", "s", "d", "f", "i", "l", "b", "j", "ts", "nested", "arr")
ENDPOINT_EXPRESSIONS = {
    "deviceNameExpression": "dev-${name}", "deviceTypeExpression": "${kind}",
    "attributes": [{"type": "string", "key": "s", "value": "${s}"},
                   {"type": "json", "key": "j", "value": "${j}"},
                   {"type": "string", "key": "deep", "value": "${nested.a.b}"}],
    "timeseries": [{"type": t, "key": t, "value": "${" + k + "}"}
                   for t, k in (("double", "d"), ("float", "f"), ("int", "i"), ("long", "l"),
                                ("bool", "b"), ("json", "j"), ("string", "arr[1]"))],
    "timestampExpression": "${ts}",
}

MAX_BODY = 65536  # the fuzz daemon's maxBodySize: room for 10,000 levels of nesting, "over" stays cheap

scalars = st.one_of(
    st.none(), st.booleans(), st.text(max_size=20),
    st.integers(min_value=-(10 ** 30), max_value=10 ** 30),
    st.floats(allow_nan=False, allow_infinity=False),
    st.sampled_from(["1e400", "-1e400", "1" * 5000, "0x10", "", " ", "true", "NaN", "١٢٣"]),
)
json_values = st.recursive(scalars, lambda inner: st.one_of(
    st.lists(inner, max_size=4), st.dictionaries(st.sampled_from(EXPRESSION_KEYS) | st.text(max_size=5), inner,
                                                 max_size=4)), max_leaves=12)
messages = st.fixed_dictionaries({"name": st.text(min_size=1, max_size=8)},
                                 optional={k: json_values for k in EXPRESSION_KEYS if k != "name"})
documents = st.one_of(
    messages, messages, messages, st.lists(messages, min_size=1, max_size=3),
    st.fixed_dictionaries({}, optional={k: json_values for k in EXPRESSION_KEYS}),
    st.lists(st.fixed_dictionaries({}, optional={k: json_values for k in EXPRESSION_KEYS}), max_size=4),
    json_values,
)


def _encode(document: Any) -> bytes:
    return json.dumps(document, ensure_ascii=False).encode("utf-8")


@st.composite
def json_bodies(draw: st.DrawFn) -> bytes:
    """JSON text, valid or damaged: truncated, with raw huge numbers, NaN/Infinity, duplicate keys."""
    text = _encode(draw(documents))
    damage = draw(st.sampled_from(["none", "none", "none", "truncate", "literal", "duplicate", "invalid_utf8"]))
    if damage == "truncate" and text:
        text = text[:draw(st.integers(0, len(text) - 1))]
    elif damage == "literal":
        literal = draw(st.sampled_from([b"NaN", b"Infinity", b"-Infinity", b"1e99999", b"9" * 5000,
                                        b"-0.0e-99999", b"1" + b"0" * 400 + b".5"]))
        key = draw(st.sampled_from(EXPRESSION_KEYS)).encode()
        text = b'{"name": "n", "' + key + b'": ' + literal + b"}"
    elif damage == "duplicate":
        key = draw(st.sampled_from(EXPRESSION_KEYS)).encode()
        text = b'{"name": "a", "' + key + b'": 1, "' + key + b'": "x", "name": "b"}'
    elif damage == "invalid_utf8" and text:
        cut = draw(st.integers(0, len(text)))
        text = text[:cut] + draw(st.sampled_from([b"\xff", b"\xc3", b"\xed\xa0\x80", b"\x80"])) + text[cut:]
    return text


def deeply_nested(levels: int, kind: str) -> bytes:
    """``levels`` of arrays or objects, optionally inside a message whose expressions read it."""
    if kind == "array":
        return b"[" * levels + b"]" * levels
    if kind == "object":
        return b'{"a":' * levels + b"1" + b"}" * levels
    return b'{"name":"deep","j":' + b"[" * levels + b"]" * levels + b"}"


bodies = st.one_of(
    json_bodies(), json_bodies(), json_bodies(),
    st.binary(max_size=600),
    st.text(max_size=200).map(lambda s: s.encode("utf-8")),
    st.builds(lambda n, k: deeply_nested(n, k), st.sampled_from([10, 500, 900, 990, 1100, 10_000]),
              st.sampled_from(["array", "object", "value"])),
    st.integers(MAX_BODY + 1, MAX_BODY * 3).map(lambda n: b'{"name":"' + b"x" * n + b'"}'),
)

content_types = st.sampled_from([
    None, "application/json", "application/json; charset=utf-8", "text/json", "application/vnd.x+json",
    "application/x-www-form-urlencoded", "text/plain", "multipart/form-data; boundary=x", "", ";;;",
    "application/json; charset=latin-1",
])
paths = st.one_of(
    st.sampled_from(["/fuzz"] * 4 + ["/auth"] * 2 + ["/dev/7/data", "/custom", "/fuzz?d=1.5&name=q"]),
    st.sampled_from(["/fuzz", "/fuzz/", "/auth", "/dev/7/data", "/dev/%ff/data", "/dev/..%2f..%2fetc/data",
                     "/custom", "/health", "/metrics", "/nope", "//fuzz", "/fuzz%00", "/%", "/fuzz?%ff=1",
                     "/fuzz?name=%zz", "/fuzz?name=a&name=b", "/fuzz;x=1", "*", "/fuzz#frag"]),
    st.text(st.characters(min_codepoint=33, max_codepoint=126), max_size=40).map(lambda s: "/" + s),
)
methods = st.sampled_from(["POST"] * 6 + ["GET", "PUT", "DELETE", "PATCH", "HEAD", "OPTIONS", "TRACE", "BREW", "post"])
header_values = st.one_of(
    st.text(st.characters(min_codepoint=32, max_codepoint=126), max_size=40),
    st.sampled_from(["Basic dXNlcjpwYXNzd29yZA==", "Basic %%%", "Basic " + "A" * 5000, "Bearer x",
                     "Basic dXNlcg==", "basic dXNlcjpwYXNzd29yZA==", "Basic 8J+YgDrwn5iA"]),
)


@st.composite
def raw_requests(draw: st.DrawFn) -> tuple[bytes, bool]:
    """A whole HTTP/1.1 request as bytes, framed correctly or not, and whether it is complete.

    An incomplete request (a Content-Length or chunk size that promises more than is sent before the
    client half-closes) may be closed without an answer; every complete one must be answered.
    """
    method = draw(methods)
    path = draw(paths)
    body = draw(bodies)
    lines = [f"{method} {path} HTTP/1.1", "Host: 127.0.0.1", "Connection: close"]
    ctype = draw(content_types)
    if ctype is not None:
        lines.append(f"Content-Type: {ctype}")
    if draw(st.booleans()):
        lines.append(f"Authorization: {draw(header_values)}")
    elif draw(st.booleans()):
        lines.append("Authorization: Basic dXNlcjpwYXNzd29yZA==")  # user:password, the /auth credentials
    for _ in range(draw(st.integers(0, 2))):
        lines.append(f"X-Fuzz-{draw(st.integers(0, 9))}: {draw(header_values)}")
    framing = draw(st.sampled_from(["length", "length", "chunked", "bad_chunked", "none", "wrong_length"]))
    payload = b""
    complete = True
    if framing == "length":
        lines.append(f"Content-Length: {len(body)}")
        payload = body
    elif framing == "wrong_length":
        wrong = draw(st.sampled_from(["-1", "abc", "1e3", " 5", "+5", "99999999999999999999"]))
        lines.append(f"Content-Length: {wrong}")
        payload = body
        complete = False
    elif framing in ("chunked", "bad_chunked"):
        lines.append("Transfer-Encoding: chunked")
        size = draw(st.integers(1, 512))
        pieces = [body[i:i + size] for i in range(0, len(body), size)]
        payload = b"".join(b"%x\r\n%s\r\n" % (len(p), p) for p in pieces) + b"0\r\n\r\n"
        if framing == "bad_chunked":
            payload = draw(st.sampled_from([b"zz\r\nabc\r\n0\r\n\r\n", b"5\r\nab\r\n0\r\n\r\n",
                                            b"-1\r\n\r\n", b"ffffffffffffffff\r\nx"]))
            complete = False
    head = "\r\n".join(lines).encode("latin-1", errors="replace")
    return head + b"\r\n\r\n" + payload, complete


# Requests whose head never ends (no CRLF CRLF): the server may close them at EOF without answering.
UNTERMINATED = frozenset({b"POST /fuzz HTTP/1.1\nHost: x\nConnection: close\n\n"})

hostile_heads = st.sampled_from([
    # CR/LF inside headers, header injection, obs-fold, bare CR/LF, NUL
    b"POST /fuzz HTTP/1.1\r\nHost: x\r\nX-A: a\rInjected: 1\r\nConnection: close\r\n\r\n",
    b"POST /fuzz HTTP/1.1\r\nHost: x\r\nX-A: a\nInjected: 1\r\nConnection: close\r\n\r\n",
    b"POST /fuzz HTTP/1.1\r\nHost: x\r\nX-A: a\r\n folded\r\nConnection: close\r\n\r\n",
    b"POST /fuzz HTTP/1.1\r\nHost: x\r\nX-A: a\x00b\r\nConnection: close\r\n\r\n",
    b"POST /fuzz HTTP/1.1\nHost: x\nConnection: close\n\n",
    b"POST /fu\rzz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    b"POST /fuzz HTTP/1.1\r\nHost: x\r\nBad Header: 1\r\nConnection: close\r\n\r\n",
    b"POST /fuzz HTTP/1.1\r\nHost: x\r\n: empty\r\nConnection: close\r\n\r\n",
    b"POST /fuzz HTTP/9.9\r\nHost: x\r\nConnection: close\r\n\r\n",
    b"POST /fuzz\r\nConnection: close\r\n\r\n",
    b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + b"\x00" * 40 + b"\r\n\r\n",  # a TLS hello
    b"GARBAGE\r\n\r\n",
    b"POST /fuzz HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nContent-Length: 6\r\nConnection: close\r\n\r\nhello!",
    b"POST /fuzz HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip, chunked\r\nConnection: close\r\n\r\n0\r\n\r\n",
    b"POST /fuzz HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip\r\nConnection: close\r\n\r\n",
    b"POST /fuzz HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n"
    b"Connection: close\r\n\r\n0\r\n\r\n",
    b"POST /fuzz HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{}",
    b"GET /" + b"a" * 100_000 + b" HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    b"GET /fuzz?" + b"name=" + b"x" * 70_000 + b" HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    b"POST /fuzz HTTP/1.1\r\nHost: x\r\nX-Long: " + b"v" * 70_000 + b"\r\nConnection: close\r\n\r\n",
    b"POST /fuzz HTTP/1.1\r\nHost: x\r\n" + b"".join(b"X-%d: 1\r\n" % i for i in range(5000))
    + b"Connection: close\r\n\r\n",
    b"POST /fuzz HTTP/1.1\r\nHost: x\r\nContent-Length: 100000000\r\nConnection: close\r\n\r\n{}",
])
