"""Typed downlink entries (attributeUpdates, serverSideRpc) parsed from rest.json, compiled at load."""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

import regex

from connectors.rest.downlink.templates import (
    DownlinkTemplate,
    TemplateError,
    is_absolute,
    join_url,
    looks_like_host_port,
)
from converters.expressions import ExpressionError
from gateway.config.document import resolve_path

ATTRIBUTE_NAMES = frozenset({"deviceName", "attributeKey", "attributeValue"})
RPC_NAMES = frozenset({"deviceName", "methodName", "requestId", "restId", "params"})
DEFAULT_TIMEOUT = 0.5
DEFAULT_TRIES = 3
DEFAULT_ATTRIBUTE_VALUE = '{"deviceName":"${deviceName}","${attributeKey}":"${attributeValue}"}'
DEFAULT_RPC_VALUE = "${params}"
JSON_MEDIA = ("application/json", "text/json")


class EntryError(ValueError):
    """Everything wrong with one downlink entry: ``problems`` holds (key, message, expected)."""

    def __init__(self, problems: list[tuple[str, str, str]]) -> None:
        super().__init__("; ".join(f"{key}: {message}" for key, message, _ in problems))
        self.problems = problems


@dataclass(frozen=True, slots=True)
class RequestOptions:
    """How one entry calls its target."""

    method: str = "POST"
    headers: tuple[tuple[str, str], ...] = ()
    username: str | None = None
    password: str = field(default="", repr=False)
    cert: tuple[str, str] | str | None = None
    timeout: float = DEFAULT_TIMEOUT
    tries: int = DEFAULT_TRIES
    allow_redirects: bool = True
    verify: bool = False
    base_url: str = ""

    def header(self, name: str) -> str | None:
        """A header's value; names are case-insensitive (``CONTENT-TYPE`` = ``Content-Type``)."""
        wanted = name.lower()
        for key, value in self.headers:
            if key.lower() == wanted:
                return value
        return None


@dataclass(frozen=True, slots=True)
class DownlinkEntry:
    """What attributeUpdates and serverSideRpc entries share."""

    pointer: str
    device_filter: Any  # compiled regex.Pattern
    url: DownlinkTemplate
    body: DownlinkTemplate | None
    body_is_json: bool
    options: RequestOptions

    def matches_device(self, device: str) -> bool:
        return self.device_filter.fullmatch(device) is not None

    def base_for(self, connector_base: str, own_address: str) -> str | None:
        """The base a relative URL is resolved against (None for an absolute URL)."""
        if is_absolute(self.url.text) or looks_like_host_port(self.url.text):
            return None
        return self.options.base_url or connector_base or own_address

    def resolve(self, rendered_url: str, connector_base: str, own_address: str) -> str:
        """The absolute URL for a rendered ``requestUrlExpression``."""
        if is_absolute(rendered_url):
            return rendered_url
        if looks_like_host_port(self.url.text):
            return "http://" + rendered_url
        return join_url(self.options.base_url or connector_base or own_address, rendered_url)

    def render_body(self, context: dict[str, Any]) -> bytes | None:
        if self.body is None:
            return None
        text = self.body.render_json(context) if self.body_is_json else self.body.render_text(context)
        return text.encode("utf-8")


@dataclass(frozen=True, slots=True)
class AttributeUpdateEntry(DownlinkEntry):
    """One ``attributeUpdates`` entry."""

    attribute_filter: Any = None

    def matches(self, device: str, key: str) -> bool:
        return self.matches_device(device) and self.attribute_filter.fullmatch(key) is not None


@dataclass(frozen=True, slots=True)
class RpcEntry(DownlinkEntry):
    """One ``serverSideRpc`` entry; ``response_timeout`` None means: send, do not reply."""

    method_filter: Any = None
    response_timeout: float | None = None

    def matches(self, device: str, method: str) -> bool:
        return self.matches_device(device) and self.method_filter.fullmatch(method) is not None


class _Collector:
    def __init__(self, entry: dict[str, Any]) -> None:
        self.entry = entry
        self.problems: list[tuple[str, str, str]] = []

    def error(self, key: str, message: str, expected: str) -> None:
        self.problems.append((key, message, expected))

    def regex(self, key: str) -> Any:
        pattern = self.entry.get(key, ".*")
        if not isinstance(pattern, str):
            return None  # the schema reports the type
        try:
            return regex.compile(pattern)
        except (regex.error, ValueError, OverflowError, RecursionError) as exc:
            self.error(key, f"invalid regular expression {pattern!r}: {exc}",
                       "a valid regular expression, e.g. \".*\"")
            return None

    def template(self, key: str, default: str | None, names: frozenset[str]) -> DownlinkTemplate | None:
        text = self.entry.get(key, default)
        if not isinstance(text, str):
            return None
        try:
            return DownlinkTemplate(text, names)
        except (ExpressionError, TemplateError) as exc:
            self.error(key, f"invalid expression {text!r}: {exc}", "text with ${...} placeholders")
            return None


def _headers(value: Any, problems: _Collector) -> tuple[tuple[str, str], ...]:
    if isinstance(value, str):  # the ThingsBoard gateway also accepts a JSON string
        try:
            value = json.loads(value) if value.strip() else {}
        except ValueError:
            problems.error("httpHeaders", "is a string but not a JSON object", "an object of header names to values")
            return ()
    if not isinstance(value, dict):
        return ()
    headers = []
    for name, header_value in value.items():
        if not isinstance(header_value, str | int | float) or isinstance(header_value, bool):
            problems.error("httpHeaders", f"header {name!r} is not a string", "a string value per header")
            continue
        headers.append((str(name), str(header_value)))
    return tuple(headers)


def _options(entry: dict[str, Any], default_method: str, rest_file: str, problems: _Collector) -> RequestOptions:
    security = entry.get("security") if isinstance(entry.get("security"), dict) else {}
    kind = str(security.get("type", "anonymous")).lower()
    cert_file, key_file = security.get("cert"), security.get("key")
    cert: tuple[str, str] | str | None = None
    if isinstance(cert_file, str) and cert_file:
        cert_path = resolve_path(cert_file, rest_file)
        cert = (cert_path, resolve_path(key_file, rest_file)) if isinstance(key_file, str) and key_file else cert_path
    elif kind == "cert":
        problems.error("security", "security type cert without a \"cert\" file",
                       "\"cert\" (and \"key\"): PEM files of the client certificate")
    method = entry.get("HTTPMethod", default_method)
    timeout = entry.get("timeout", DEFAULT_TIMEOUT)
    tries = entry.get("tries", DEFAULT_TRIES)
    base_url = entry.get("baseUrl", "")
    return RequestOptions(
        method=method if isinstance(method, str) and method else default_method,
        headers=_headers(entry.get("httpHeaders", {}), problems),
        username=str(security.get("username", "")) if kind == "basic" else None,
        password=str(security.get("password", "")) if kind == "basic" else "",
        cert=cert,
        timeout=float(timeout) if isinstance(timeout, int | float) and timeout > 0 else DEFAULT_TIMEOUT,
        tries=tries if isinstance(tries, int) and tries >= 1 else DEFAULT_TRIES,
        allow_redirects=entry.get("allowRedirects", True) is not False,
        verify=entry.get("SSLVerify", False) is True,
        base_url=base_url.rstrip("/") if isinstance(base_url, str) else "",
    )


def _common(entry: dict[str, Any], pointer: str, names: frozenset[str], default_value: str,
            default_method: str, rest_file: str, collector: _Collector) -> dict[str, Any]:
    options = _options(entry, default_method, rest_file, collector)
    url = collector.template("requestUrlExpression", None, names)
    if "requestUrlExpression" not in entry:
        collector.error("requestUrlExpression", "is missing", "the URL to call, e.g. \"http://127.0.0.1:5001/\"")
    body = collector.template("valueExpression", default_value, names)
    media = (options.header("Content-Type") or "").split(";")[0].strip().lower()
    body_is_json = media in JSON_MEDIA or media.endswith("+json") or (
        not media and body is not None and body.fills_to_json())
    if body_is_json and not media and body is not None:
        options = _with_header(options, "Content-Type", "application/json")
    return {"pointer": pointer, "device_filter": collector.regex("deviceNameFilter"), "url": url,
            "body": body, "body_is_json": body_is_json, "options": options}


def _with_header(options: RequestOptions, name: str, value: str) -> RequestOptions:
    fields = {f: getattr(options, f) for f in RequestOptions.__dataclass_fields__}
    fields["headers"] = (*options.headers, (name, value))
    return RequestOptions(**fields)


def parse_attribute_update(entry: dict[str, Any], pointer: str, rest_file: str) -> AttributeUpdateEntry:
    """One ``attributeUpdates`` entry, compiled; raises :class:`EntryError` listing every problem."""
    collector = _Collector(entry)
    common = _common(entry, pointer, ATTRIBUTE_NAMES, DEFAULT_ATTRIBUTE_VALUE, "POST", rest_file, collector)
    attribute_filter = collector.regex("attributeFilter")
    if collector.problems or None in (common["device_filter"], common["url"], attribute_filter):
        raise EntryError(collector.problems or [("", "invalid entry", "see the schema errors")])
    return AttributeUpdateEntry(**common, attribute_filter=attribute_filter)


def parse_rpc(entry: dict[str, Any], pointer: str, rest_file: str) -> RpcEntry:
    """One ``serverSideRpc`` entry, compiled; raises :class:`EntryError` listing every problem."""
    collector = _Collector(entry)
    common = _common(entry, pointer, RPC_NAMES, DEFAULT_RPC_VALUE, "GET", rest_file, collector)
    method_filter = collector.regex("methodFilter")
    response_timeout = entry.get("responseTimeout")
    if not (isinstance(response_timeout, int | float) and not isinstance(response_timeout, bool)
            and response_timeout > 0):
        response_timeout = None
    if collector.problems or None in (common["device_filter"], common["url"], method_filter):
        raise EntryError(collector.problems or [("", "invalid entry", "see the schema errors")])
    return RpcEntry(**common, method_filter=method_filter,
                    response_timeout=float(response_timeout) if response_timeout else None)


def relative_url_bases(entries: list[tuple[str, dict[str, Any]]], connector_base: str,
                       own_address: str) -> list[tuple[str, str, str]]:
    """(pointer, URL template, base) for every entry whose ``requestUrlExpression`` is relative."""
    out = []
    for pointer, entry in entries:
        url = entry.get("requestUrlExpression")
        if not isinstance(url, str) or is_absolute(url) or looks_like_host_port(url):
            continue
        own = entry.get("baseUrl") if isinstance(entry.get("baseUrl"), str) else ""
        base = (own or connector_base or own_address).rstrip("/")
        out.append((pointer, url, base))
    return out
