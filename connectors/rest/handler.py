"""Handles one request to one mapping: authenticate, read, convert, store durably, answer.

With a ``response`` section the answers carry its configured bodies, and with ``responseExpected``
the answer waits for ThingsBoard to set ``responseAttribute`` on the device (see response_waits.py).
"""
from __future__ import annotations

import logging
from contextlib import nullcontext
from typing import Any

from flask import Response
from werkzeug.wrappers import Request

from connectors.base import Uplink, UplinkRateLimited, UplinkUnavailable
from connectors.rest.body_encoding import BodyEncodingError, decode_body
from connectors.rest.hmac_auth import HmacAuthenticator
from connectors.rest.idempotency import Claim, IdempotencyKeys
from connectors.rest.metrics import RequestMetrics
from connectors.rest.model import DEFAULT_MAX_BODY_BYTES, Mapping
from connectors.rest.report_strategy import MappingStrategies, ReportFilter, Strategy, Update, mapping_strategies
from connectors.rest.request_data import BadRequestData, read_request
from connectors.rest.response_waits import Closed, ResponseWaits
from connectors.rest.responses import configured_response, error_response, json_bytes_response, json_response
from connectors.rest.security import endpoint_authenticator
from converters.base import ConversionError, Converter
from converters.legacy import normalize_result
from converters.model import ConvertedData
from gateway.rate_limit import RateLimited, RequestRateLimit, TokenBuckets


class MappingHandler:
    """The request handler of one ``mapping`` entry (one endpoint and its methods)."""

    def __init__(self, mapping: Mapping, converter: Converter, uplink: Uplink, logger: logging.Logger,
                 metrics: RequestMetrics | None = None, waits: ResponseWaits | None = None,
                 report_default: Strategy | None = None, report_scope: str = "") -> None:
        """``waits`` is required when the mapping has ``response.responseExpected``. ``report_default``:
        the reportStrategy of a mapping without its own (the connector's or the gateway's);
        ``report_scope``: the name its reportStrategy state is stored under (survives a restart)."""
        self.mapping = mapping
        self.metrics = metrics
        self.response = mapping.response
        self.waits = waits if mapping.response.expected else None
        self.converter = converter
        self.uplink = uplink
        self.log = logger
        self.report_default = report_default
        strategies = mapping_strategies(mapping.report_strategy, mapping.converter.raw, report_default)
        scope = report_scope or mapping.endpoint
        self.report = None if strategies.trivial else ReportFilter(strategies, scope=scope)
        self._take_stored_state(strategies, scope)
        self._auth = endpoint_authenticator(mapping.security)
        self._keys = IdempotencyKeys(mapping.idempotency, mapping.endpoint, uplink) if mapping.idempotency else None
        limit = mapping.rate_limit
        self._limit = TokenBuckets(limit) if limit is not None else None
        self._limit_by = limit.by if limit is not None else ""
        self._converter_config = mapping.converter.raw
        self._converter_name = mapping.converter.extension or "json"
        self._always_raw = bool(getattr(converter, "raw_body", False))  # the converter asks for bytes
        self._want_raw = self._always_raw or mapping.converter.type == "custom"

    def keep_state_of(self, old: MappingHandler) -> None:
        """Over a reload, keep what ``old`` learnt where its setting did not change: the hmac replay
        cache, the rate limit's buckets, the reportStrategy's last values."""
        if old.mapping.security == self.mapping.security:
            self._auth = old._auth
        elif isinstance(old._auth, HmacAuthenticator) and isinstance(self._auth, HmacAuthenticator):
            self._auth.take_over(old._auth)
        if old.mapping.rate_limit == self.mapping.rate_limit:
            self._limit = old._limit
        if old.report is not None and self.report is not None:
            self.report.adopt(old.report)

    def _take_stored_state(self, strategies: MappingStrategies, scope: str) -> None:
        """Take the reportStrategy state an earlier run (or configuration) stored, and delete that of
        keys now sent as received (ON_RECEIVED records nothing, so it would be stale if the strategy
        changed back). Without it every key starts unknown: its next value is sent."""
        try:
            marks = self.uplink.report_marks(scope)
            stale = {(m.kind, m.key) for m in marks if not strategies.records(m.kind, m.key)}
            if stale:
                self.uplink.forget_report_marks(scope, sorted(stale))
        except UplinkUnavailable as exc:
            self.log.warning("%s: reportStrategy state not read (%s); the next value of every key is sent",
                             self.mapping.endpoint, exc.reason)
            return
        if self.report is not None:
            self.report.load(m for m in marks if (m.kind, m.key) not in stale)

    def __call__(self, request: Request, path_vars: dict[str, Any]) -> Response:
        if not self.response.has_unsuccessful:
            return self._authenticated(request, path_vars)
        answer = self._authenticated(request, path_vars)
        if answer.status_code < 400:
            return answer
        self.log.debug("%s: answering %d with unsuccessfulResponse instead of: %s", self.mapping.endpoint,
                       answer.status_code, answer.get_data(as_text=True))
        headers = {k: v for k, v in answer.headers.items() if k in ("WWW-Authenticate", "Retry-After")}
        return configured_response(answer.status_code, self.response.unsuccessful, headers)

    def _authenticated(self, request: Request, path_vars: dict[str, Any]) -> Response:
        auth = self._auth
        body = request.get_data(cache=False) if auth is not None and auth.needs_body else None
        if auth is not None:
            refusal = auth.refuse(request.headers, body or b"")
            if refusal is not None:
                return error_response(refusal.status, refusal.message, refusal.headers)
        if body is None:
            body = request.get_data(cache=False)
        claim = self._keys.claim(request, body) if self._keys is not None else None
        if isinstance(claim, Response):
            response = claim  # the answer of an earlier request with this Idempotency-Key, or why not
        else:
            try:
                response = self._handle(request, path_vars, body, claim)
            finally:
                if claim is not None:
                    self._keys.release(claim)  # type: ignore[union-attr]
        if auth is not None and auth.needs_body and response.status_code != 200:
            auth.forget(request.headers, body)  # nothing was stored: the signed request may be sent again
        return response

    def _handle(self, request: Request, path_vars: dict[str, Any], body: bytes, claim: Claim | None = None
                ) -> Response:
        if self._limit is not None and self._limit_by != "device":
            key = (request.remote_addr or "") if self._limit_by == "client" else ""
            refused = self._take(key)
            if refused is not None:
                return refused
        try:
            limit = request.max_content_length or DEFAULT_MAX_BODY_BYTES
            body = decode_body(body, request.headers.get("Content-Encoding"), limit)
            request_input = read_request(
                body, request.content_type or "", request.query_string, path_vars, self._want_raw
            )
        except BodyEncodingError as exc:
            return error_response(exc.status, str(exc))
        except BadRequestData as exc:
            return self._refused("bad_body", str(exc), body)
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
                return self._refused("conversion", f"{where}{exc}", body)
            except Exception as exc:  # a custom converter failing on this input must not become a 500
                self.log.exception("converter %s failed on a request to %s from %s", self._converter_name,
                                   self.mapping.endpoint, request.remote_addr,
                                   extra={"endpoint": self.mapping.endpoint, "client": request.remote_addr})
                return self._refused("converter_failed", f"{where}converter {self._converter_name} could not "
                                     f"convert the message: {type(exc).__name__}: {exc}", body)
            for item in items:
                if not isinstance(item.device_name, str) or not item.device_name.strip():
                    return self._refused("empty_device_name", f"{where}the device name is empty", body)
            converted.extend(items)
        devices = [item.device_name for item in converted if not item.is_empty()]
        if devices and self._limit_by == "device":
            refused = self._take(*devices)
            if refused is not None:
                return refused
        if self.waits is not None:
            return self._store_and_wait(converted)
        if self.report is None:
            return self._store(converted, None, claim, body)
        with self.report.holding([item.device_name for item in converted]):  # a device's requests in turn
            return self._store(converted, self.report.apply(converted), claim, body)

    def _store(self, converted: list[ConvertedData], reported: list[Update] | None, claim: Claim | None,
               body: bytes) -> Response:
        """Store what is left of ``converted`` (with the receipt and reportStrategy marks) and answer."""
        to_store = [item for item in converted if not item.is_empty()]
        answer = self._success(converted, len(to_store))
        if to_store:
            receipt = self._keys.receipt(claim, answer) if claim is not None else None  # type: ignore[union-attr]
            try:
                if reported:
                    self.uplink.send(to_store, receipt, self.report.marks(reported))  # type: ignore[union-attr]
                elif receipt is None:
                    self.uplink.send(to_store)
                else:  # the answer is stored with the data, for a retry with the same Idempotency-Key
                    self.uplink.send(to_store, receipt)
            except UplinkRateLimited as exc:
                return too_many(exc.reason, exc.retry_after)
            except UplinkUnavailable as exc:
                return error_response(503, f"data not accepted: {exc.reason}",
                                      {"Retry-After": str(exc.retry_after)})
            except ValueError as exc:
                return self._refused("not_sendable", f"converted data cannot be sent to ThingsBoard: {exc}", body)
        if reported:
            self.report.commit(reported)  # type: ignore[union-attr]
        return answer

    def _success(self, converted: list[ConvertedData], stored: int) -> Response:
        """The 200 of a request whose ``stored`` messages are stored."""
        if self.response.has_success:
            return configured_response(200, self.response.success)
        if stored == len(converted) and not any(item.skipped for item in converted):
            return json_bytes_response(200, b'{"stored":%d}' % stored)  # the common answer, pre-encoded
        return json_response(200, _success_body(converted, stored))

    def _store_and_wait(self, converted: list[ConvertedData]) -> Response:
        """Store with ``responseExpected: true`` on the first message's device, then wait for its answer."""
        assert self.waits is not None
        first = converted[0]
        try:
            waiter = self.waits.open(first.device_name, self.response.attribute)
        except Closed:
            return error_response(503, "the gateway is stopping; retry later", {"Retry-After": "5"})
        if waiter is None:
            return error_response(503, f"too many requests are waiting for ThingsBoard's answer "
                                  f"(maxWaitingResponses {self.waits.limit}); retry later", {"Retry-After": "1"})
        guard = self.report.holding([item.device_name for item in converted]) if self.report else nullcontext()
        with guard:  # held while deciding and storing, never while waiting
            reported = self.report.apply(converted) if self.report is not None else None
            first.attributes["responseExpected"] = True  # as the reference sends it: the rule chain's cue
            to_store = [item for item in converted if not item.is_empty()]
            refused = self._send_or_refuse(to_store, reported)
            if refused is not None:
                self.waits.cancel(waiter)
                return refused
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

    def _send_or_refuse(self, to_store: list[ConvertedData], reported: list[Update] | None) -> Response | None:
        """Store ``to_store`` with its reportStrategy marks: None once stored, else the refusal."""
        try:
            if reported:
                self.uplink.send(to_store, None, self.report.marks(reported))  # type: ignore[union-attr]
            else:
                self.uplink.send(to_store)
        except UplinkRateLimited as exc:
            return too_many(exc.reason, exc.retry_after)
        except UplinkUnavailable as exc:
            return error_response(503, f"data not accepted: {exc.reason}", {"Retry-After": str(exc.retry_after)})
        except ValueError as exc:
            return error_response(400, f"converted data cannot be sent to ThingsBoard: {exc}")
        return None

    def _refused(self, reason: str, message: str, body: bytes) -> Response:
        """400 for data that cannot be converted, counted by ``reason`` for the metrics."""
        if self.metrics is not None:
            self.metrics.converter_error(self.mapping.endpoint, reason, message, body)
        return error_response(400, message)

    def _take(self, *keys: str) -> Response | None:
        """``None`` when a token is taken from each key's bucket, else the 429 answer."""
        assert self._limit is not None
        try:
            self._limit.take(keys)
        except RateLimited as exc:
            limit = self._limit.limit
            who = {"endpoint": "", "client": f" for client {keys[0]}", "device": " for this device"}[self._limit_by]
            return too_many(f"rate limit of {self.mapping.endpoint} exceeded{who}: {describe_limit(limit)}",
                            exc.retry_after)
        return None


def describe_limit(limit: RequestRateLimit) -> str:
    """``100 requests per 1 s, burst 200``."""
    return f"{limit.requests:g} requests per {limit.per_seconds:g} s, burst {limit.capacity}"


def too_many(message: str, retry_after: int) -> Response:
    """429 with ``Retry-After`` (whole seconds) and the JSON reason; nothing of the request is stored."""
    return error_response(429, f"{message}; nothing was stored, retry after {retry_after} s",
                          {"Retry-After": str(retry_after)}, retryAfter=retry_after)

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
