"""Reads and checks a mapping endpoint's ``security`` (anonymous, basic, bearer, hmac).

Problems are reported by JSON pointer and never show a secret's value.
"""
from __future__ import annotations

import re
from typing import Any

from connectors.rest.hmac_auth import ALGORITHMS
from connectors.rest.model import HmacSettings, Security
from gateway.config.document import Problems, resolve_path
from gateway.config.locate import join

ENDPOINT_SECURITY_TYPES = ("anonymous", "basic", "bearer", "hmac")
_B64TOKEN = re.compile(r"[A-Za-z0-9\-._~+/]+=*")  # RFC 6750 b64token: what fits after "Bearer "
_HEADER_NAME = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")  # RFC 9110 token
_HMAC = HmacSettings(secret="")
MIN_SECRET_BYTES = 16


def read_security(section: dict[str, Any], file: str, pointer: str, problems: Problems) -> Security:
    """The Security of one mapping's ``security`` object (``pointer``); reads ``tokensFile`` now."""
    kind = _str(section, "type", "anonymous").lower() or "anonymous"
    tokens: list[str] = []
    hmac_settings = None
    if kind == "bearer":
        tokens = _tokens(section, file, pointer, problems)
    elif kind == "hmac":
        hmac_settings = _hmac(section, pointer, problems)
    return Security(type=kind, username=_str(section, "username"), password=_str(section, "password"),
                    tokens=tuple(tokens), hmac=hmac_settings)


def _tokens(section: dict[str, Any], file: str, pointer: str, problems: Problems) -> list[str]:
    where = join(pointer, "tokens")
    tokens = [t for t in section.get("tokens", []) if isinstance(t, str)] if isinstance(
        section.get("tokens"), list) else []
    for index, token in enumerate(tokens):
        _check_token(token, join(where, index), problems)
    path = section.get("tokensFile")
    if isinstance(path, str) and path:
        tokens += _tokens_file(resolve_path(path, file), join(pointer, "tokensFile"), problems)
    if not tokens and not any(p.pointer.startswith(pointer) for p in problems.errors):
        problems.error(pointer, "bearer security without any token",
                       "\"tokens\": a list of accepted tokens, or \"tokensFile\": a file with one token a line")
    return tokens


def _tokens_file(path: str, pointer: str, problems: Problems) -> list[str]:
    try:
        with open(path, encoding="utf-8") as handle:
            lines = handle.read().splitlines()
    except FileNotFoundError:
        problems.error(pointer, f"tokens file {path} does not exist",
                       "a readable file with one token a line (relative paths are relative to rest.json)")
        return []
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else type(exc).__name__
        problems.error(pointer, f"tokens file {path} cannot be read: {reason}", "a readable UTF-8 text file")
        return []
    tokens = []
    for number, line in enumerate(lines, 1):
        text = line.strip()
        if not text or text.startswith("#"):
            continue
        if _check_token(text, pointer, problems, f"line {number} of {path}: "):
            tokens.append(text)
    if not tokens:
        problems.error(pointer, f"tokens file {path} holds no token", "one token a line; # starts a comment")
    return tokens


def _check_token(token: str, pointer: str, problems: Problems, where: str = "") -> bool:
    if not _B64TOKEN.fullmatch(token):
        problems.error(pointer, f"{where}a bearer token is empty or has characters a Bearer header cannot carry "
                       "(the value is not shown: it is a credential)",
                       "letters, digits and - . _ ~ + / (then optional = padding)")
        return False
    return True


def _hmac(section: dict[str, Any], pointer: str, problems: Problems) -> HmacSettings:
    secret = _str(section, "secret")
    if not secret:
        problems.error(pointer, "hmac security without a secret", "\"secret\": the key shared with the devices")
    elif len(secret.encode("utf-8")) < MIN_SECRET_BYTES:
        problems.warn(join(pointer, "secret"), f"the hmac secret is shorter than {MIN_SECRET_BYTES} bytes",
                      "a long random secret, e.g. from: openssl rand -hex 32")
    names = {}
    for key, default in (("header", _HMAC.header), ("timestampHeader", _HMAC.timestamp_header)):
        names[key] = _str(section, key, default).strip() or default
        if not _HEADER_NAME.fullmatch(names[key]):
            problems.error(join(pointer, key), f"{names[key]!r} is not an HTTP header name",
                           "letters, digits and - (e.g. X-Signature)")
    if names["header"].lower() == names["timestampHeader"].lower():
        problems.error(join(pointer, "timestampHeader"), "the timestamp and the signature use the same header",
                       "two different header names")
    algorithm = _str(section, "algorithm", _HMAC.algorithm).lower()
    if algorithm not in ALGORITHMS:
        algorithm = _HMAC.algorithm  # the schema has reported it
    skew = section.get("maxSkewSeconds", _HMAC.max_skew_seconds)
    cache = section.get("replayCacheSize", _HMAC.replay_cache_size)
    return HmacSettings(secret=secret, header=names["header"], timestamp_header=names["timestampHeader"],
                        algorithm=algorithm,
                        max_skew_seconds=skew if _whole(skew) else _HMAC.max_skew_seconds,
                        replay_cache_size=cache if _whole(cache) else _HMAC.replay_cache_size)


def _str(data: dict, key: str, default: str = "") -> str:
    value = data.get(key, default)
    return value if isinstance(value, str) else default


def _whole(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 1
