"""Handles one request to one mapping: authenticate, read, convert, store durably, answer.

With a ``response`` section the answers carry its configured bodies, and with ``responseExpected``
the answer waits for ThingsBoard to set ``responseAttribute`` on the device (see response_waits.py).
"""
from __future__ import annotations

import logging
from typing import Any

from flask import Response
from werkzeug.wrappers import Request

from connectors.base import Uplink, UplinkUnavailable
from connectors.rest.body_encoding import BodyEncodingError, decode_body
from connectors.rest.model import DEFAULT_MAX_BODY_BYTES, Mapping
from connectors.rest.report_strategy import ReportFilter, mapping_strategies
from connectors.rest.request_data import BadRequestData, read_request
from connectors.rest.response_waits import Closed, ResponseWaits
from connectors.rest.responses import configured_response, error_response, json_bytes_response, json_response
from connectors.rest.security import BasicAuthenticator
from converters.base import ConversionError, Converter
from converters.legacy import normalize_result
from converters.model import ConvertedData

UNAUTHORIZED_HEADERS = {"WWW-Authenticate": 'Basic realm="rest-gateway", charset="UTF-8"'}


class MappingHandler:
    """The request handler of one ``mapping`` entry (one endpoint and its methods)."""

    def __init__(self, mapping: Mapping, converter: Converter, uplink: Uplink, logger: logging.Logger,
                 waits: ResponseWaits | None = None) -> None:
        """``waits`` is required when the mapping has ``response.responseExpected``."""
        self.mapping = mapping
        self.response = mapping.response
        self.waits = waits if mapping.response.expected else None
        self.converter = converter
        self.uplink = uplink
        self.log = logger
        strategies = mapping_strategies(mapping.report_strategy, mapping.converter.raw)
        self.report = None if strategies.trivial else ReportFilter(strategies)
        self._auth = BasicAuthenticator(mapping.security) if mapping.security.type == "basic" else None
        self._converter_config = mapping.converter.raw
        self._converter_name = mapping.converter.extension or "json"
        self._always_raw = bool(getattr(converter, "raw_body", False))  # the converter asks for bytes
        self._want_raw = self._always_raw or mapping.converter.type == "custom"

    def __call__(self, request: Request, path_vars: dict[str, Any]) -> Response:
        if not self.response.has_unsuccessful:
            return self._handle(request, path_vars)
        answer = self._handle(request, path_vars)
        if answer.status_code < 400:
            return answer
        self.log.debug("%s: answering %d with unsuccessfulResponse instead of: %s", self.mapping.endpoint,
                       answer.status_code, answer.get_data(as_text=True))
        headers = {k: v for k, v in answer.headers.items() if k in ("WWW-Authenticate", "Retry-After")}
        return configured_response(answer.status_code, self.response.unsuccessful, headers)

    def _handle(self, request: Request, path_vars: dict[str, Any]) -> Response:
        if self._auth is not None and not self._auth.check(request.headers.get("Authorization")):
            return error_response(401, "authentication required: wrong or missing Basic credentials",
                                  UNAUTHORIZED_HEADERS)
        body = request.get_data(cache=False)
        try:
            limit = request.max_content_length or DEFAULT_MAX_BODY_BYTES
            body = decode_body(body, request.headers.get("Content-Encoding"), limit)
            request_input = read_request(
                body, request.content_type or "", request.query_string, path_vars, self._want_raw
            )
        except BodyEncodingError as exc:
            return error_response(exc.status, str(exc))
        except BadRequestData as exc:
            return error_response(400, str(exc))
        raw_only = self._always_raw or request_input.body_kind == "raw"
        converted: list[ConvertedData] = []
        many = len(request_input.messages) > 1
        for index, message in enumerate(request_input.messages):
            where = f"message [{index}]: " if many else ""
            try:
                result = self.converter.convert(self._converter_config, request_input.raw if raw_only else message)
                if type(result) is ConvertedData and type(result.device_name) is str and result.device_name.strip():
                    items = [result]  # what normalize_result gives for it, without its generic checks
                else:
                    items = normalize_result(result, self._converter_name)
            except ConversionError as exc:
                return error_response(400, f"{where}{exc}")
            except Exception as exc:  # a custom converter failing on this input must not become a 500
                self.log.exception("converter %s failed on a request to %s", self._converter_name,
                                   self.mapping.endpoint)
                return error_response(
                    400, f"{where}converter {self._converter_name} could not convert the message: "
                    f"{type(exc).__name__}: {exc}"
                )
            for item in items:
                if not isinstance(item.device_name, str) or not item.device_name.strip():
                    return error_response(400, f"{where}the device name is empty")
            converted.extend(items)
        reported = self.report.apply(converted) if self.report is not None else None
        if self.waits is not None:
            return self._store_and_wait(converted, reported)
        to_store = [item for item in converted if not item.is_empty()]
        if to_store:
            try:
                self.uplink.send(to_store)
            except UplinkUnavailable as exc:
                return error_response(503, f"data not accepted: {exc.reason}",
                                      {"Retry-After": str(exc.retry_after)})
            except ValueError as exc:
                return error_response(400, f"converted data cannot be sent to ThingsBoard: {exc}")
        if reported:
            self.report.commit(reported)  # type: ignore[union-attr]
        if self.response.has_success:
            return configured_response(200, self.response.success)
        if len(to_store) == len(converted) and not any(item.skipped for item in converted):
            return json_bytes_response(200, b'{"stored":%d}' % len(to_store))  # the common answer, pre-encoded
        return json_response(200, _success_body(converted, len(to_store)))

    def _store_and_wait(self, converted: list[ConvertedData], reported: list | None) -> Response:
        """Store with ``responseExpected: true`` on the first message's device, then wait for its answer."""
        assert self.waits is not None
        first = converted[0]
        first.attributes["responseExpected"] = True  # as the reference sends it: the rule chain's cue
        try:
            waiter = self.waits.open(first.device_name, self.response.attribute)
        except Closed:
            return error_response(503, "the gateway is stopping; retry later", {"Retry-After": "5"})
        if waiter is None:
            return error_response(503, f"too many requests are waiting for ThingsBoard's answer "
                                  f"(maxWaitingResponses {self.waits.limit}); retry later", {"Retry-After": "1"})
        to_store = [item for item in converted if not item.is_empty()]
        try:
            self.uplink.send(to_store)
        except UplinkUnavailable as exc:
            self.waits.cancel(waiter)
            return error_response(503, f"data not accepted: {exc.reason}", {"Retry-After": str(exc.retry_after)})
        except ValueError as exc:
            self.waits.cancel(waiter)
            return error_response(400, f"converted data cannot be sent to ThingsBoard: {exc}")
        if reported:
            self.report.commit(reported)  # type: ignore[union-attr]
        try:
            value = self.waits.wait(waiter, self.response.timeout)
        except TimeoutError:
            return error_response(408, f"the data is stored, but ThingsBoard did not set "
                                  f"{self.response.attribute!r} on {first.device_name!r} within "
                                  f"{self.response.timeout:g} s (response.timeout)", stored=len(to_store))
        except Closed:
            return error_response(503, "the data is stored, but the gateway is stopping before ThingsBoard "
                                  "answered", {"Retry-After": "5"}, stored=len(to_store))
        return configured_response(200, value)


def _success_body(converted: list[ConvertedData], stored: int) -> dict[str, Any]:
    body: dict[str, Any] = {"stored": stored}
    skipped = [
        {"device": item.device_name, **skip.to_json()} for item in converted for skip in item.skipped
    ]
    if skipped:
        body["skipped"] = skipped
    if stored < len(converted):
        body["empty"] = [item.device_name for item in converted if item.is_empty()]
    return body
