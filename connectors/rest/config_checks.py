"""Semantic checks of a normalised rest.json: what a schema cannot say (routes, files, regexes, classes)."""
from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from typing import Any

from connectors.rest.device_api.model import DeviceApiConfig
from connectors.rest.downlink.attribute_requests import request_methods
from connectors.rest.downlink.model import EntryError, parse_attribute_update, parse_rpc
from connectors.rest.model import Mapping, RestConfig
from connectors.rest.security_config import ENDPOINT_SECURITY_TYPES
from connectors.rest.tls_context import TlsConfigError, build_context
from converters.casting import KNOWN_TYPES
from converters.expressions import ExpressionError, compile_template
from converters.loader import ConverterLoadError, find_converter_class
from gateway.config.document import Problems, check_readable_file
from gateway.config.locate import join

RESERVED_PATHS = ("/health", "/metrics")
KNOWN_METHODS = ("GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS")
_PATH_VARIABLE = re.compile(r"\{[^{}/]*\}")


def check_rest_config(config: RestConfig, server_ptr: str, downlink_ptr: str, problems: Problems,
                      extension_paths: Sequence[str] = ()) -> None:
    """Add a problem for everything in ``config`` that would fail at startup or at request time."""
    _check_tls(config, server_ptr, problems)
    _check_connection_room(config, server_ptr, problems)
    routes: dict[tuple[str, str], str] = {}
    for mapping in config.mappings:
        _check_route(mapping.endpoint, mapping.methods, mapping.pointer, routes, problems)
        _check_security(mapping.security.type, mapping.security.username, mapping.security.password,
                        mapping.pointer, problems, ENDPOINT_SECURITY_TYPES)
        _check_converter(mapping, problems, extension_paths)
        _check_report_keys(mapping, problems)
        if mapping.response.expected and not mapping.response.attribute:
            problems.error(join(mapping.pointer, "response", "responseExpected"),
                           "responseExpected is true but there is no responseAttribute",
                           "\"responseAttribute\": the name of the shared attribute ThingsBoard sets on the "
                           "device to answer (or responseExpected false)")
        if mapping.response.expected and mapping.idempotency is not None:
            problems.error(join(mapping.pointer, "idempotency"),
                           "idempotency cannot be combined with response.responseExpected: the answer is "
                           "ThingsBoard's, not known when the data is stored",
                           "no idempotency section on this mapping, or responseExpected false")
    sections = (("attributeUpdates", config.attribute_updates, parse_attribute_update),
                ("serverSideRpc", config.server_side_rpc, parse_rpc),
                ("attributeRequests", config.attribute_requests, None))
    for name, entries, parse in sections:
        for index, entry in enumerate(entries):
            pointer = join(downlink_ptr, name, index)
            _check_downlink(entry, pointer, problems)
            if parse is not None:
                _check_relay_entry(entry, pointer, parse, config.file, problems)
            elif isinstance(entry.get("endpoint"), str):
                methods = request_methods(entry)
                _check_route(entry["endpoint"], methods, pointer, routes, problems)
                _check_templates([(join(pointer, key), entry[key]) for key in
                                  ("deviceNameExpression", "attributeNameExpression")
                                  if isinstance(entry.get(key), str)], problems)
    if config.device_api is not None and config.device_api.enabled:
        _check_device_api_paths(config.device_api.base_path, routes, problems)


def _check_report_keys(mapping: Mapping, problems: Problems) -> None:
    """A data point's own reportStrategy is matched to the key it produces: the key must be a constant."""
    for kind in ("attributes", "timeseries"):
        points = mapping.converter.raw.get(kind)
        for index, point in enumerate(points if isinstance(points, list) else ()):
            if isinstance(point, dict) and "reportStrategy" in point and "${" in str(point.get("key", "")):
                problems.error(join(mapping.pointer, "converter", kind, index, "reportStrategy"),
                               f"a per-key reportStrategy needs a constant key, not {point['key']!r}",
                               "a constant \"key\", or the strategy on the mapping (\"reportStrategy\" next to "
                               "\"converter\") instead")


def check_served(raw_mapping: Any, device_api: DeviceApiConfig | None, problems: Problems) -> None:
    """A rest.json must serve something: at least one ``mapping`` entry, or the enabled device API.

    ``raw_mapping`` is the ``mapping`` value as written (``None`` when the key is absent); a value that
    is not a list is the schema check's to report.
    """
    if device_api is not None and device_api.enabled:
        return
    if raw_mapping is None:
        pointer, what = "", "there is no \"mapping\" key"
    elif raw_mapping == []:
        pointer, what = "/mapping", "\"mapping\" is empty"
    else:
        return
    why = "there is no \"deviceApi\" section" if device_api is None else "\"deviceApi\" is disabled"
    problems.error(pointer, f"nothing to serve: {what} and {why}",
                   "at least one \"mapping\" entry (an endpoint and its converter), or an enabled "
                   "\"deviceApi\" section to serve ThingsBoard's HTTP device API (docs/device-api.md)")


def _check_device_api_paths(base_path: str, routes: dict[tuple[str, str], str], problems: Problems) -> None:
    """An endpoint under deviceApi.basePath would shadow (or be shadowed by) a device API route."""
    reported: set[str] = set()
    for (endpoint, _method), pointer in routes.items():
        if (endpoint == base_path or endpoint.startswith(base_path + "/")) and pointer not in reported:
            reported.add(pointer)
            problems.error(join(pointer, "endpoint"), f"endpoint {endpoint!r} is under the device API's "
                           f"basePath {base_path!r}", "another path, or another deviceApi.basePath")


def _check_connection_room(config: RestConfig, pointer: str, problems: Problems) -> None:
    """Requests that may wait (responseExpected, device API long polls) must not fill ``connectionLimit``.

    Each waiting request keeps its connection; were they allowed as many as the limit, waitress would
    stop accepting and every other request would queue in the listen backlog until a wait ended. The
    limit must leave room for them and for as many other requests as there are ``threads``.
    """
    server = config.server
    parts = []
    if any(mapping.response.expected for mapping in config.mappings):
        parts.append((server.max_waiting_responses, "maxWaitingResponses"))
    if config.device_api is not None and config.device_api.enabled:
        parts.append((config.device_api.max_concurrent_polls, "deviceApi.maxConcurrentPolls"))
    if not parts:
        return
    threads = server.threads_for(store_waits=True)  # the storage is gateway.yaml's: assume the larger default
    needed = sum(n for n, _ in parts) + threads
    if server.connection_limit < needed:
        held = " + ".join(f"{name} {n}" for n, name in parts)
        problems.error(join(pointer, "connectionLimit"),
                       f"connectionLimit {server.connection_limit} can be filled by waiting requests ({held}): "
                       f"other requests would not be accepted until a wait ends",
                       f"at least {needed} ({held} + threads {threads}), or lower those bounds")


def _check_tls(config: RestConfig, pointer: str, problems: Problems) -> None:
    server = config.server
    if not server.ssl:
        return
    files_ok = True
    for key, path in (("cert", server.cert), ("key", server.key)):
        where = join(pointer, "security", key)
        reason = check_readable_file(path) if path else None
        if not path:
            problems.error(where, f"SSL is true but no {key} file is set",
                           f"security.{key}: the path of a readable PEM file (relative paths are "
                           "relative to rest.json)", line=problems.index.line(join(pointer, "SSL")))
        elif reason:
            problems.error(where, f"TLS {key} file {path} {reason}", "a readable PEM file")
        files_ok = files_ok and bool(path) and not reason
    if files_ok:
        try:
            build_context(server.cert, server.key)
        except TlsConfigError as exc:
            problems.error(join(pointer, "security"), str(exc), "a PEM certificate and its unencrypted private key")


def _route_key(endpoint: str) -> str:
    """Routes that differ only in path-variable names are the same route."""
    return _PATH_VARIABLE.sub("{}", endpoint)


def _check_route(endpoint: str, methods: Iterable[str], pointer: str,
                 routes: dict[tuple[str, str], str], problems: Problems) -> None:
    where = join(pointer, "endpoint")
    if not endpoint.startswith("/"):
        problems.error(where, f"endpoint {endpoint!r} does not start with '/'",
                       f"a path such as '/{endpoint}'")
        return
    for reserved in RESERVED_PATHS:
        if endpoint.rstrip("/") == reserved or endpoint.startswith(reserved + "/"):
            problems.error(where, f"endpoint {endpoint!r} is reserved by the gateway ({reserved})",
                           f"another path; {', '.join(RESERVED_PATHS)} are served by rest-gateway itself")
            return
    methods = tuple(methods)
    if not methods:
        problems.error(pointer, "no HTTP method is allowed",
                       "HTTPMethods: a non-empty list such as [\"POST\"]")
    for method in methods:
        if method not in KNOWN_METHODS:
            problems.error(join(pointer, "HTTPMethods"), f"unknown HTTP method {method!r}",
                           "one of " + ", ".join(KNOWN_METHODS))
            continue
        key = (_route_key(endpoint), method)
        if key in routes:
            problems.error(where, f"{method} {endpoint} is already mapped at {routes[key]}",
                           "each endpoint and method in one mapping entry only")
        else:
            routes[key] = pointer


def _check_security(kind: str, username: str, password: str, pointer: str, problems: Problems,
                    allowed: tuple[str, ...] = ("anonymous", "basic")) -> None:
    where = join(pointer, "security")
    if kind not in allowed:
        problems.error(join(where, "type"), f"unknown security type {kind!r}", " or ".join(allowed))
    if kind == "basic":
        for key, value in (("username", username), ("password", password)):
            if not value:
                problems.error(where, f"basic security without a {key}",
                               f"a non-empty \"{key}\" for type basic")


def _check_converter(mapping: Mapping, problems: Problems, extension_paths: Sequence[str]) -> None:
    conv = mapping.converter
    where = join(mapping.pointer, "converter")
    if conv.type not in ("json", "custom"):
        return  # the schema has reported it
    if conv.type == "custom":
        if not conv.extension:
            problems.error(where, "custom converter without \"extension\"",
                           "\"extension\": the name of a converter class (a Converter subclass)")
        else:
            _check_extension(conv.extension, join(where, "extension"), problems, extension_paths)
        return
    if conv.extension:
        problems.warn(join(where, "extension"), "\"extension\" is ignored for a json converter",
                      "\"type\": \"custom\" to use the extension class")
    info_ptr = join(where, "deviceInfo") if "deviceInfo" in conv.raw else where
    if not conv.device_name_expression:
        problems.error(info_ptr, "no device name expression",
                       "deviceInfo.deviceNameExpression (3.7+) or deviceNameExpression (legacy), "
                       "e.g. \"${sensorName}\"")
    templates = []
    if conv.device_name_source == "request":
        templates.append((join(info_ptr, "deviceNameExpression"), conv.device_name_expression))
    if conv.device_type_source == "request":
        key = "deviceProfileExpression" if "deviceInfo" in conv.raw else "deviceTypeExpression"
        templates.append((join(info_ptr, key), conv.device_type_expression))
    for section, points in (("attributes", conv.attributes), ("timeseries", conv.timeseries)):
        for index, point in enumerate(points):
            pointer = join(where, section, index)
            templates += [(join(pointer, "key"), point.key), (join(pointer, "value"), point.value)]
            if point.ts_field:
                templates.append((join(pointer, "tsField"), point.ts_field))
            _check_type(point.type, join(pointer, "type"), problems)
    _check_templates(templates, problems)


def _check_templates(templates: list[tuple[str, str]], problems: Problems) -> None:
    for pointer, text in templates:
        try:
            compile_template(text)
        except ExpressionError as exc:
            problems.error(pointer, f"invalid expression {text!r}: {exc}",
                           "text with ${path} placeholders, e.g. \"${sensor.temp}\"")


def _check_type(type_name: str, pointer: str, problems: Problems) -> None:
    if type_name.strip().lower() not in KNOWN_TYPES:
        problems.error(pointer, f"unknown data point type {type_name!r}",
                       "one of " + ", ".join(sorted(KNOWN_TYPES)))


def _check_extension(name: str, pointer: str, problems: Problems, extension_paths: Sequence[str]) -> None:
    try:
        find_converter_class(name, list(extension_paths))
    except ConverterLoadError as exc:
        problems.error(pointer, f"converter class {name!r} cannot be loaded: {exc}",
                       "a Converter subclass of that name in an extension folder (extensionPaths)")


def _check_relay_entry(entry: dict[str, Any], pointer: str, parse: Any, rest_file: str,
                       problems: Problems) -> None:
    """Compile an attributeUpdates/serverSideRpc entry as the connector will (regexes, templates)."""
    try:
        parse(entry, pointer, rest_file)
    except EntryError as exc:
        for key, message, expected in exc.problems:
            if key:  # an unkeyed problem is a type error the schema check has reported
                problems.error(join(pointer, key), message, expected)
    if "extension" in entry:
        problems.warn(join(pointer, "extension"), "custom downlink converters are not supported; "
                      "the entry's requestUrlExpression and valueExpression are used",
                      "requestUrlExpression/valueExpression templates")


def _check_downlink(entry: dict[str, Any], pointer: str, problems: Problems) -> None:
    method = entry.get("HTTPMethod")
    if isinstance(method, str) and method not in KNOWN_METHODS:
        problems.error(join(pointer, "HTTPMethod"), f"unknown HTTP method {method!r}",
                       "one of " + ", ".join(KNOWN_METHODS))
    security = entry.get("security")
    if isinstance(security, dict) and isinstance(security.get("type", "anonymous"), str):
        kind = security.get("type", "anonymous").lower()
        allowed = ("anonymous", "basic") if "endpoint" in entry else ("anonymous", "basic", "cert")
        _check_security(kind, str(security.get("username") or ""), str(security.get("password") or ""),
                        pointer, problems, allowed)
