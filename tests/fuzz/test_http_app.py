"""The REST connector's Flask app in-process, fuzzed fast: every answer documented, every 200 really stored."""
from __future__ import annotations

import json
import logging
from collections.abc import Iterator

import pytest
from hypothesis import given
from hypothesis import strategies as st

from connectors.rest.config import rest_config_from_data
from connectors.rest.connector import RestConnector
from gateway.config.document import Problems
from gateway.storage.memory import MemoryStorage, SizeLimits
from gateway.uplink import GatewayUplink
from tests.fixtures.daemon import ROOT
from tests.fuzz.http_inputs import MAX_BODY, bodies, content_types
from tests.fuzz.support import DOCUMENTED_STATUSES, Outcomes, fuzz_settings
from tests.fuzz.test_http_daemon import fuzz_rest

EXTENSIONS = [f"{ROOT}/extensions"]


class Target:
    """A RestConnector's app on real memory storage (no server, no ThingsBoard link)."""

    def __init__(self) -> None:
        problems = Problems("fuzz-rest.json")
        config = rest_config_from_data(dict(fuzz_rest(), port="5000"), "fuzz-rest.json", problems, EXTENSIONS)
        assert config is not None, problems.errors
        self.storage = MemoryStorage(SizeLimits(1_000_000, 512 * 1024 * 1024))
        connector = RestConnector("fuzz", config, GatewayUplink(self.storage, northbound=None), EXTENSIONS,
                                  logging.getLogger("tests.fuzz"))
        self.client = connector.app.test_client()


@pytest.fixture(scope="module")
def target() -> Iterator[Target]:
    yield Target()


app_paths = st.sampled_from(["/fuzz"] * 8 + ["/auth"] * 3 + ["/dev/7/data"] * 3 + ["/custom"] * 2
                            + ["/dev/%ff/data", "/dev/a%2Fb/data", "/nope", "/fuzz/", "/metrics", "/dev//data"])
queries = st.one_of(st.just(b""), st.binary(max_size=40),
                    st.sampled_from([b"name=q&d=1.5", b"name=%ff", b"%zz", b"name", b"a=1&a=2", b"ts=-1e999"]))
auth_headers = st.sampled_from([None, "Basic dXNlcjpwYXNzd29yZA==", "Basic dXNlcjp3cm9uZw==", "Basic ###",
                                "Basic " + "A" * 10_000, "Negotiate x", "Basic 8J+YgDrwn5iA"])


def check_stored(target: Target, before: int, answer_body: dict, raw: bytes) -> None:
    """A 200 says how many messages it stored: exactly that many valid JSON events were added."""
    stored = answer_body["stored"]
    assert isinstance(stored, int) and stored >= 0, answer_body
    assert target.storage.count() == before + stored, (raw[:200], answer_body)
    if stored:
        for event in target.storage.peek(before + stored)[before:]:
            record = json.loads(event.payload)  # strict: no NaN/Infinity sneaks into storage
            assert record, record


@fuzz_settings(ci_examples=400, soak_examples=20_000)
@given(method=st.sampled_from(["POST"] * 6 + ["GET", "PUT", "DELETE", "HEAD"]), path=app_paths, query=queries,
       body=bodies, ctype=content_types, auth=auth_headers)
def test_app_answers(target, method, path, query, body, ctype, auth):
    headers = {"Authorization": auth} if auth else {}
    if ctype is not None:
        headers["Content-Type"] = ctype
    before = target.storage.count()
    answer = target.client.open(path, method=method, data=body, headers=headers,
                                environ_overrides={"QUERY_STRING": query.decode("latin-1")})
    target.outcomes.add(answer.status_code)
    assert answer.status_code in DOCUMENTED_STATUSES - {431, 501}, (answer.status_code, answer.data[:300])
    assert answer.mimetype == "application/json"
    if method == "HEAD":
        return
    document = answer.get_json()
    if answer.status_code == 200:
        check_stored(target, before, document, body)
    else:
        assert document["status"] == answer.status_code and document["error"], document
        assert target.storage.count() == before  # a refused request stores nothing
    if answer.status_code == 413:
        assert len(body) > MAX_BODY


@pytest.fixture(scope="module", autouse=True)
def outcomes(target: Target) -> Iterator[None]:
    target.outcomes = Outcomes("HTTP requests (generated, in-process app)")
    yield
    target.outcomes.write()
