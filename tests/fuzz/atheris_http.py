"""Optional coverage-guided fuzzing (atheris) of the HTTP input path; run by hand, not by pytest.

Feeds libFuzzer's bytes to ``parse_json``, ``read_request`` and the REST connector's Flask app
(the same in-process target as tests/fuzz/test_http_app.py). Any exception other than the
documented ``BadRequestData``, or an answer that is not a documented status with a JSON
``{"error", "status"}`` body, is a crash that libFuzzer reports with the input that caused it.

    python -m venv /tmp/atheris-venv && /tmp/atheris-venv/bin/pip install atheris
    PYTHONPATH=/tmp/atheris-venv/lib/python3.11/site-packages:. \\
        python tests/fuzz/atheris_http.py -atheris_runs=20000 -max_len=4096

(atheris 3.0 ships a manylinux wheel with libFuzzer for CPython 3.11 on x86-64, so no clang is
needed; any libFuzzer flag works, e.g. ``-max_total_time=600`` or a corpus directory.)
"""
from __future__ import annotations

import os
import sys

import atheris

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))

# coverage feedback from our own packages only (libraries are not instrumented)
with atheris.instrument_imports(include=["connectors", "converters", "gateway", "extensions"]):
    from connectors.rest.request_data import BadRequestData, parse_json, read_request
    from tests.fuzz.support import DOCUMENTED_STATUSES
    from tests.fuzz.test_http_app import Target

PATHS = ["/fuzz", "/auth", "/dev/7/data", "/custom", "/dev/%ff/data", "/nope", "/metrics"]
METHODS = ["POST", "POST", "POST", "GET", "PUT", "DELETE"]
CONTENT_TYPES = ["application/json", "application/x-www-form-urlencoded", "text/plain", "text/json; charset=x",
                 "application/vnd+json", ""]
AUTH = [None, "Basic dXNlcjpwYXNzd29yZA==", "Basic dXNlcjp3cm9uZw==", "Basic ###"]

_target: Target | None = None


def _app() -> Target:
    global _target
    if _target is None:
        _target = Target()
    return _target


def fuzz_one(data: bytes) -> None:
    """One libFuzzer input: the first byte picks the target, the rest is its input."""
    provider = atheris.FuzzedDataProvider(data)
    kind = provider.ConsumeIntInRange(0, 2)
    if kind == 0:
        try:
            parse_json(provider.ConsumeBytes(provider.remaining_bytes()))
        except BadRequestData:
            pass
        return
    if kind == 1:
        content_type = provider.PickValueInList(CONTENT_TYPES)
        want_raw = provider.ConsumeBool()
        query = provider.ConsumeBytes(provider.ConsumeIntInRange(0, 64))
        try:
            read_request(provider.ConsumeBytes(provider.remaining_bytes()), content_type, query, {}, want_raw)
        except BadRequestData:
            pass
        return
    method, path = provider.PickValueInList(METHODS), provider.PickValueInList(PATHS)
    headers = {"Content-Type": provider.PickValueInList(CONTENT_TYPES)}
    auth = provider.PickValueInList(AUTH)
    if auth:
        headers["Authorization"] = auth
    query = provider.ConsumeBytes(provider.ConsumeIntInRange(0, 64)).decode("latin-1")
    body = provider.ConsumeBytes(provider.remaining_bytes())
    answer = _app().client.open(path, method=method, data=body, headers=headers,
                                environ_overrides={"QUERY_STRING": query})
    if answer.status_code not in DOCUMENTED_STATUSES or answer.mimetype != "application/json":
        raise AssertionError(f"undocumented answer {answer.status_code} {answer.mimetype}: {answer.data[:300]!r}")
    document = answer.get_json()
    if answer.status_code != 200 and not (document.get("error") and document.get("status") == answer.status_code):
        raise AssertionError(f"error answer without a JSON error body: {answer.data[:300]!r}")


def main() -> None:
    atheris.Setup(sys.argv, fuzz_one)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
