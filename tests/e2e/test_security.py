"""Security end to end: no credential in any log or config message; converters only from extension folders."""
from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import requests
import yaml

from converters.loader import ConverterLoadError, find_converter_class
from tests.e2e.test_uplink import SPEC_BODY, published, shipped_rest, wait_until
from tests.fixtures.daemon import ACCESS_TOKEN, ROOT

PASSWORD = "pw-93d1-secret"
RELAY_PASSWORD = "relay-pw-55aa-secret"


def b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def forbidden_strings(*passwords: str) -> list[str]:
    """Each secret, and the forms it travels in (Basic header value, URL-encoded)."""
    found = []
    for secret in passwords:
        found += [secret, b64(f"user:{secret}"), b64(f"nobody:{secret}")]
    return found


def set_log_level(gw, level: str) -> None:
    gw.general["logLevel"] = level
    with open(gw.config_path, "w", encoding="utf-8") as fh:
        yaml.safe_dump(gw.general, fh)


def test_no_credential_in_a_debug_log_with_failed_logins(make_daemon, mqtt_subscriber):
    rest = shipped_rest()
    rest["mapping"][0]["security"]["password"] = PASSWORD
    rest["attributeUpdates"] = [{
        "HTTPMethod": "POST", "deviceNameFilter": "nothing-matches-.*", "attributeFilter": ".*",
        "requestUrlExpression": "http://127.0.0.1:9/${deviceName}", "valueExpression": "{\"${attributeKey}\":1}",
        "security": {"type": "basic", "username": "relay", "password": RELAY_PASSWORD}, "timeout": 1}]
    gw = make_daemon(rest, start=False)
    set_log_level(gw, "DEBUG")
    gw.start()
    url = gw.url("/my_devices")
    typo = PASSWORD + "x"
    attempts = [("user", PASSWORD + "x"), ("nobody", PASSWORD), ("user", ""), ("", PASSWORD)]
    for user, password in attempts:
        answer = requests.post(url, json=SPEC_BODY, auth=(user, password), timeout=5)
        assert answer.status_code == 401
        assert PASSWORD not in answer.text and typo not in answer.text
    for headers in ({"Authorization": f"Bearer {PASSWORD}"}, {"Authorization": f"Basic {PASSWORD}"},
                    {"Authorization": "Basic " + b64(f"user:{PASSWORD}") + "="}):
        assert requests.post(url, json=SPEC_BODY, headers=headers, timeout=5).status_code == 401
    # the right credentials, also on paths that fail for other reasons
    assert requests.post(url, json=SPEC_BODY, auth=("user", PASSWORD), timeout=5).status_code == 200
    assert requests.put(url, json=SPEC_BODY, auth=("user", PASSWORD), timeout=5).status_code == 405
    assert requests.post(url + "/x", json=SPEC_BODY, auth=("user", PASSWORD), timeout=5).status_code == 404
    assert requests.post(url, data=b"{", auth=("user", PASSWORD), timeout=5).status_code == 400
    # a shared-attribute update that no relay entry takes, and an RPC nobody serves
    mqtt_subscriber.publish("v1/gateway/attributes", {"device": "SN-001", "data": {"k": PASSWORD}})
    mqtt_subscriber.publish("v1/gateway/rpc", {"device": "SN-001", "data": {"id": 7, "method": "m", "params": {}}})
    wait_until(mqtt_subscriber, lambda: published(mqtt_subscriber, "v1/gateway/telemetry"), timeout=10)
    assert gw.stop() == 0
    text = gw.log_text()
    assert " DEBUG " in text, "the run really logged at DEBUG"
    leaks = [s for s in forbidden_strings(PASSWORD, typo, RELAY_PASSWORD) + [ACCESS_TOKEN] if s in text]
    assert not leaks, f"secrets in the log: {leaks}"


def write_general(folder: Path, rest: object, thingsboard_extra: dict | None = None) -> Path:
    (folder / "rest.json").write_text(json.dumps(rest), encoding="utf-8")
    thingsboard = {"host": "127.0.0.1", "port": 1, "security": {"accessToken": ACCESS_TOKEN}}
    thingsboard.update(thingsboard_extra or {})
    general = {"thingsboard": thingsboard, "storage": {"type": "memory"}, "logLevel": "DEBUG",
               "connectors": [{"name": "REST", "type": "rest", "configuration": "rest.json"}]}
    path = folder / "gateway.yaml"
    path.write_text(yaml.safe_dump(general), encoding="utf-8")
    return path


def broken_configs() -> list[tuple[str, object, dict | None]]:
    def with_security(security: dict, **extra: object) -> dict:
        rest = shipped_rest()
        rest["mapping"][0]["security"] = security
        rest["mapping"][0].update(extra)
        return rest

    return [
        ("method error next to a password", with_security(
            {"type": "basic", "username": "user", "password": PASSWORD}, HTTPMethod=["FETCH"]), None),
        ("misspelt security type", with_security({"type": "basci", "username": "u", "password": PASSWORD}), None),
        ("misspelt password key", with_security({"type": "basic", "username": "u", "pasword": PASSWORD}), None),
        ("password of the wrong type", with_security({"type": "basic", "username": "u", "password": [PASSWORD]}),
         None),
        ("token of the wrong type", shipped_rest(), {"security": {"accessToken": [ACCESS_TOKEN]}}),
        ("token next to an unknown key", shipped_rest(),
         {"security": {"accessToken": ACCESS_TOKEN, "pasword": PASSWORD}, "port": "not-a-port"}),
    ]


@pytest.mark.parametrize("command", ["check", "run"])
@pytest.mark.parametrize("case", broken_configs(), ids=lambda c: c[0] if isinstance(c, tuple) else str(c))
def test_config_errors_never_print_credentials(tmp_path, case, command):
    _name, rest, thingsboard = case
    config = write_general(tmp_path, rest, thingsboard)
    env = dict(os.environ, PYTHONPATH=ROOT)
    for name in ("TB_GW_HOST", "TB_GW_PORT", "TB_GW_ACCESS_TOKEN"):
        env.pop(name, None)
    done = subprocess.run([sys.executable, "-m", "gateway", command, "-c", str(config)], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=30)
    output = done.stdout + done.stderr
    assert done.returncode == 1, output  # every case is a config error: run refuses to start
    assert "Traceback" not in output, output
    leaks = [s for s in forbidden_strings(PASSWORD) + [ACCESS_TOKEN] if s in output]
    assert not leaks, f"{leaks} printed:\n{output}"


# ---------------------------------------------------------------- custom converters: only from extension folders

EVIL = """
import pathlib
pathlib.Path({marker!r}).write_text("imported")
class EvilConverter:
    def convert(self, config, data):
        return None
"""


@pytest.fixture
def elsewhere_on_sys_path(tmp_path, monkeypatch):
    """A converter module in a folder that is on sys.path but is no extension folder; writes a marker when imported."""
    elsewhere = tmp_path / "site"
    elsewhere.mkdir()
    marker = tmp_path / "imported.marker"
    (elsewhere / "evil_conv_7f3a.py").write_text(EVIL.format(marker=str(marker)), encoding="utf-8")
    monkeypatch.syspath_prepend(str(elsewhere))
    extensions = tmp_path / "extensions"
    extensions.mkdir()
    yield extensions, marker
    sys.modules.pop("evil_conv_7f3a", None)


@pytest.mark.parametrize("name", ["EvilConverter", "evil_conv_7f3a.EvilConverter"])
def test_a_converter_elsewhere_on_sys_path_is_not_loaded(elsewhere_on_sys_path, name):
    extensions, marker = elsewhere_on_sys_path
    with pytest.raises(ConverterLoadError, match="not found"):
        find_converter_class(name, [str(extensions)])
    assert not marker.exists(), "code outside the extension folders was executed"
    assert "evil_conv_7f3a" not in sys.modules


@pytest.mark.parametrize("name", ["../x.Cls", "..x.Cls", "x/../y.Cls", "/etc/passwd.Cls", "x/py.Cls", "~root.Cls",
                                  "os.system", "__import__", ".Cls", "x.Cls\x00"])
def test_path_like_converter_names_are_refused(tmp_path, name):
    outside = tmp_path / "x.py"
    outside.write_text("class Cls:\n    def convert(self, config, data):\n        return None\n", encoding="utf-8")
    extensions = tmp_path / "ext"
    extensions.mkdir()
    with pytest.raises(ConverterLoadError):
        find_converter_class(name, [str(extensions)])


def test_a_converter_in_an_extension_folder_loads(tmp_path):
    extensions = tmp_path / "ext"
    (extensions / "rest").mkdir(parents=True)
    (extensions / "rest" / "good_conv.py").write_text(
        "class GoodConverter:\n    def convert(self, config, data):\n        return None\n", encoding="utf-8")
    assert find_converter_class("GoodConverter", [str(extensions)]).__name__ == "GoodConverter"
    assert find_converter_class("good_conv.GoodConverter", [str(extensions)]).__name__ == "GoodConverter"
