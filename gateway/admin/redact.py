"""Secrets out of a payload excerpt before the status page shows it.

Two passes over a refused request body: every credential of the configuration (ThingsBoard token
and password, the admin password, each connector's passwords, tokens and HMAC secrets) is replaced
wherever it appears; and the values of keys that name a secret (password, token, secret, apikey,
authorization, credential...) are replaced in JSON (parsed when it parses, else matched as text,
as a refused body often is cut or broken) and in form or query text (``password=...``). Only then
is the excerpt cut to its length, so a secret is never half shown.
"""
from __future__ import annotations

import json
import re
from collections.abc import Iterable
from typing import Any

MASK = "***"
EXCERPT_CHARS = 160
#: a key naming a secret (matched anywhere in the key, case-insensitively)
SECRET_KEY = re.compile(r"pass(?:word|wd)?|token|secret|api[-_]?key|authori[sz]ation|credential|private[-_]?key",
                        re.IGNORECASE)
_STRING = r'"(?:[^"\\]|\\.)*"'
#: "key": value in JSON text, the value a string (maybe unterminated), a number, or a literal
_JSON_PAIR = re.compile(r'(?P<key>' + _STRING + r')(?P<sep>\s*:\s*)(?P<value>"(?:[^"\\]|\\.)*"?|[^\s,}\]]+)')
_FORM_PAIR = re.compile(r'(?P<key>[A-Za-z0-9_.\-\[\]]+)(?P<sep>=)(?P<value>[^&\s]*)')
#: config secrets shorter than this are not searched for (they would mask ordinary text)
MIN_SECRET_CHARS = 4


def _mask_json(value: Any) -> Any:
    if isinstance(value, dict):
        return {key: MASK if isinstance(key, str) and SECRET_KEY.search(key) else _mask_json(item)
                for key, item in value.items()}
    if isinstance(value, list):
        return [_mask_json(item) for item in value]
    return value


def _mask_pairs(text: str) -> str:
    def json_pair(match: re.Match[str]) -> str:
        if SECRET_KEY.search(match["key"]):
            return f'{match["key"]}{match["sep"]}"{MASK}"'
        return match[0]

    def form_pair(match: re.Match[str]) -> str:
        if SECRET_KEY.search(match["key"]):
            return f'{match["key"]}={MASK}'
        return match[0]

    return _FORM_PAIR.sub(form_pair, _JSON_PAIR.sub(json_pair, text))


def redact(text: str, secrets: Iterable[str]) -> str:
    """``text`` with every configured secret and every secret-named key's value replaced by ``***``."""
    for secret in sorted({s for s in secrets if s and len(s) >= MIN_SECRET_CHARS}, key=len, reverse=True):
        text = text.replace(secret, MASK)
    try:
        parsed = json.loads(text)
    except ValueError:
        return _mask_pairs(text)
    if isinstance(parsed, dict | list):
        return json.dumps(_mask_json(parsed), ensure_ascii=False, separators=(",", ":"))
    return _mask_pairs(text)


def excerpt(body: bytes, secrets: Iterable[str], truncated: bool = False, limit: int = EXCERPT_CHARS) -> str:
    """The start of a refused body for display: decoded, redacted, then cut to ``limit`` characters."""
    text = redact(body.decode("utf-8", "replace"), secrets)
    if len(text) > limit or truncated:
        return text[:limit] + "…"
    return text


def redact_json(value: Any, secrets: Iterable[str]) -> Any:
    """A copy of JSON ``value`` with each secret-named key's value and each configured secret inside a string masked.

    For what is reported rather than shown: remote configuration's attributes (docs/remote-configuration.md).
    """
    found = sorted({s for s in secrets if s and len(s) >= MIN_SECRET_CHARS}, key=len, reverse=True)

    def walk(item: Any) -> Any:
        if isinstance(item, dict):
            return {key: MASK if isinstance(key, str) and SECRET_KEY.search(key) else walk(sub)
                    for key, sub in item.items()}
        if isinstance(item, list):
            return [walk(sub) for sub in item]
        if isinstance(item, str):
            for secret in found:
                item = item.replace(secret, MASK)
        return item

    return walk(value)
