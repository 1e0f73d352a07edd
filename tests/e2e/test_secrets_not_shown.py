"""Endpoint secrets never shown by the admin listener or ``check``: the status page, /metrics, the check output.

A real daemon with bearer tokens (inline, from the environment and from a tokensFile) and an hmac
secret; devices send good requests, a wrong bearer token, the right token with a body that fails to
convert, and an hmac request carrying the secret itself. Each page must show the endpoints' traffic
(so the test looks at a page that knows about them) and none of the values.
"""
from __future__ import annotations

import hashlib
import hmac
import os
import subprocess
import sys
import time
from pathlib import Path

import requests

from tests.e2e.test_operations import scrape, value, wait_for
from tests.fixtures.daemon import ROOT

INLINE_TOKEN = "inline-bearer-7c2d9e41a0b3"
ENV_TOKEN = "env-bearer-3b8f6a1c5d2e"
FILED_TOKEN = "filed-bearer-9e4a7d2c1f0b"
HMAC_SECRET = "hmac-secret-5a1e8c3f7b2d9046"
WRONG_TOKEN = "guessed-bearer-0f1e2d3c4b5a"  # sent by a client, refused: not a secret of ours, still never shown
SHOWN_NEVER = (INLINE_TOKEN, ENV_TOKEN, FILED_TOKEN, HMAC_SECRET, WRONG_TOKEN)
CONVERTER = {"type": "json", "deviceNameExpression": "${name}", "deviceTypeExpression": "meter",
             "attributes": [], "timeseries": [{"type": "double", "key": "temp", "value": "${temp}"}]}
REST = {"host": "127.0.0.1", "port": "0", "mapping": [
    {"endpoint": "/bearer", "HTTPMethods": ["POST"], "converter": CONVERTER,
     "security": {"type": "bearer", "tokens": [INLINE_TOKEN, "${ENV:RGW_SHOWN_TOKEN}"], "tokensFile": "tokens.txt"}},
    {"endpoint": "/signed", "HTTPMethods": ["POST"], "converter": CONVERTER,
     "security": {"type": "hmac", "secret": HMAC_SECRET}}]}


def leaks(text: str) -> list[str]:
    return [secret for secret in SHOWN_NEVER if secret in text]


def test_status_page_metrics_and_check_never_show_a_token_or_secret(make_daemon, mqtt_subscriber) -> None:
    daemon = make_daemon(REST, start=False)
    Path(daemon.workdir, "tokens.txt").write_text(f"{FILED_TOKEN}\n", encoding="utf-8")
    env = {"RGW_SHOWN_TOKEN": ENV_TOKEN}
    daemon.start(env=env)

    def post(path: str, body: bytes, **headers: str) -> int:
        headers.setdefault("Content-Type", "application/json")
        return requests.post(daemon.url(path), data=body, headers=headers, timeout=5).status_code

    for index, token in enumerate((INLINE_TOKEN, ENV_TOKEN, FILED_TOKEN)):
        assert post("/bearer", b'{"name": "m1", "temp": %d}' % index, Authorization=f"Bearer {token}") == 200
    assert post("/bearer", b'{"name": "m1", "temp": 9}', Authorization=f"Bearer {WRONG_TOKEN}") == 401
    # the right token, a body that does not convert and repeats the token: a converter error excerpt
    unparsable = b'{"name": "m1", "note": "' + INLINE_TOKEN.encode() + b'", "temp": '
    assert post("/bearer", unparsable, Authorization=f"Bearer {INLINE_TOKEN}") == 400
    time.sleep(1 - time.time() % 1)  # a timestamp of the second the gateway started in is refused
    ts = str(int(time.time()))
    body = b'{"name": "m2", "temp": 1}'
    signature = hmac.new(HMAC_SECRET.encode(), ts.encode() + b"." + body, hashlib.sha256).hexdigest()
    assert post("/signed", body, **{"X-Timestamp": ts, "X-Signature": signature}) == 200
    assert post("/signed", body, **{"X-Timestamp": ts, "X-Signature": HMAC_SECRET}) == 401  # a confused device

    def counted(samples: dict, endpoint: str) -> float:
        return sum(v for (name, labels), v in samples.items()
                   if name == "rest_gateway_http_requests_total" and ("endpoint", endpoint) in labels)

    assert wait_for(lambda: (s := scrape(daemon)) and counted(s, "/bearer") == 5 and counted(s, "/signed") == 2
                    and value(s, "rest_gateway_storage_events") == 0), daemon.log_text()
    metrics = requests.get(daemon.admin_url("/metrics"), timeout=5).text
    assert "/bearer" in metrics and "/signed" in metrics
    assert not leaks(metrics), leaks(metrics)

    page = requests.get(daemon.admin_url("/"), timeout=5)
    assert page.status_code == 200 and page.headers["Content-Type"].startswith("text/html")
    html = page.text
    assert 'data-endpoint="/bearer"' in html and 'data-endpoint="/signed"' in html
    excerpt = html.partition('<pre class="excerpt">')[2].partition("</pre>")[0]
    assert "note" in excerpt and "***" in excerpt, f"the converter error excerpt is not on the page: {html}"
    assert not leaks(html), leaks(html)

    full = {k: v for k, v in os.environ.items() if not k.startswith(("RGW_", "TB_GW_"))}
    full.update(env, PYTHONPATH=ROOT)
    done = subprocess.run([sys.executable, "-m", "gateway", "check", "-c", daemon.config_path], env=full,
                          capture_output=True, text=True, timeout=30, cwd=daemon.workdir)
    output = done.stdout + done.stderr
    assert done.returncode == 0 and "/bearer  security bearer" in output and "/signed  security hmac" in output, \
        output
    assert not leaks(output), leaks(output)
    assert daemon.stop() == 0
    assert not leaks(daemon.log_text()), leaks(daemon.log_text())
