"""Remote configuration's pure parts: masking what is reported, unmasking what comes back, backups, parsing."""
from __future__ import annotations

import json
import os
import re
from pathlib import Path

import pytest

from connectors.rest.config import load_rest_config
from gateway.admin.redact import MASK, redact_json
from gateway.config.check import check_report
from gateway.config.errors import ConfigError
from gateway.config.loader import load_config
from gateway.northbound.inbound import (
    Malformed,
    OwnAttributesResponse,
    OwnAttributeUpdate,
    is_subscribed,
    parse_inbound,
)
from gateway.remote_config import files
from gateway.remote_config.report import masked_keys, unmask
from tests.unit.test_general_config import GENERAL, write_set

ROOT = Path(__file__).resolve().parents[2]

CONFIG = {"port": 5000, "mapping": [
    {"endpoint": "/a", "security": {"type": "basic", "username": "user", "password": "pw-aaaa"}},
    {"endpoint": "/b", "security": {"type": "bearer", "tokens": ["tok-bbbb"], "tokensFile": "t.txt"}},
    {"endpoint": "/c", "security": {"type": "hmac", "secret": "sec-cccc", "header": "X-Sig"},
     "note": "signed with sec-cccc"}]}


def test_every_secret_is_masked_and_the_rest_kept() -> None:
    shown = redact_json(CONFIG, ["sec-cccc", "ab"])
    text = json.dumps(shown)
    assert "pw-aaaa" not in text and "tok-bbbb" not in text and "sec-cccc" not in text
    assert shown["mapping"][0]["security"] == {"type": "basic", "username": "user", "password": MASK}
    assert shown["mapping"][1]["security"]["tokens"] == MASK
    assert shown["mapping"][2]["note"] == f"signed with {MASK}"
    assert shown["port"] == 5000 and CONFIG["mapping"][0]["security"]["password"] == "pw-aaaa"  # a copy


def test_masked_values_sent_back_keep_the_current_secret_by_endpoint() -> None:
    sent = redact_json(CONFIG, [])
    sent["mapping"].reverse()  # reordered: matched by endpoint, not by position
    sent["mapping"].append({"endpoint": "/d", "security": {"type": "basic", "username": "u", "password": "new-pw"}})
    back = unmask(sent, CONFIG)
    by_endpoint = {m["endpoint"]: m for m in back["mapping"]}
    assert by_endpoint["/a"]["security"]["password"] == "pw-aaaa"
    assert by_endpoint["/b"]["security"]["tokens"] == ["tok-bbbb"]
    assert by_endpoint["/c"]["security"]["secret"] == "sec-cccc"
    assert by_endpoint["/d"]["security"]["password"] == "new-pw"
    assert masked_keys(back) == []


def test_a_masked_value_with_nothing_to_keep_is_found_by_its_key() -> None:
    sent = {"mapping": [{"endpoint": "/new", "security": {"type": "basic", "password": MASK}}]}
    assert masked_keys(unmask(sent, CONFIG)) == ["/mapping/0/security/password"]
    assert masked_keys(unmask({"a/b": MASK}, {})) == ["/a~1b"]


def test_backups_are_timestamped_bounded_and_restorable(tmp_path: Path) -> None:
    path = tmp_path / "rest.json"
    for version in range(files.KEEP_BACKUPS + 3):
        path.write_text(json.dumps({"version": version}))
        saved = files.backup(str(path))
        assert re.fullmatch(r"rest\.backup\.\d{8}T\d{6}\.\d{6}Z_*\.json", os.path.basename(saved))
    kept = files.backups_of(str(tmp_path / "backup"), "rest", ".json")
    assert len(kept) == files.KEEP_BACKUPS
    assert [json.loads(Path(p).read_text())["version"] for p in kept] == list(range(3, files.KEEP_BACKUPS + 3))
    path.write_text("{}")
    files.restore(kept[0], str(path))
    assert json.loads(path.read_text()) == {"version": 3} and Path(kept[0]).exists()
    assert not Path(files.temp_path(str(path))).exists()


def test_a_replaced_file_keeps_its_permissions(tmp_path: Path) -> None:
    path = tmp_path / "rest.json"
    path.write_text("{}")
    path.chmod(0o640)
    files.replace_with(files.write_staged(str(path), '{"port": 1}'), str(path))
    assert path.stat().st_mode & 0o777 == 0o640 and json.loads(path.read_text()) == {"port": 1}
    saved = files.backup(str(path))
    path.chmod(0o600)
    files.restore(saved, str(path))
    assert path.stat().st_mode & 0o777 == 0o640


def test_the_gateway_devices_own_attribute_topics_are_parsed() -> None:
    assert parse_inbound("v1/devices/me/attributes", b'{"RemoteLoggingLevel": "DEBUG"}') == \
        OwnAttributeUpdate({"RemoteLoggingLevel": "DEBUG"})
    assert parse_inbound("v1/devices/me/attributes/response/7", b'{"shared": {"a": 1}}') == \
        OwnAttributesResponse(7, {"a": 1}, {})
    for topic, payload in (("v1/devices/me/attributes/response/x", b"{}"),
                           ("v1/devices/me/attributes/response/7", b'{"shared": [1]}'),
                           ("v1/devices/me/attributes", b"[1]")):
        with pytest.raises(Malformed):
            parse_inbound(topic, payload)
    assert is_subscribed("v1/devices/me/attributes") and is_subscribed("v1/devices/me/attributes/response/3")


def test_the_documented_connector_change_is_a_valid_rest_json(tmp_path: Path) -> None:
    text = (ROOT / "docs" / "remote-configuration.md").read_text(encoding="utf-8")
    blocks = [json.loads(block) for block in re.findall(r"```json\n(.*?)```", text, re.S)]
    change = next(block for block in blocks if "REST Connector" in block)["REST Connector"]
    config = change["configurationJson"]
    config["mapping"][0]["security"]["password"] = "a-real-password"  # the *** comes from the running file
    path = tmp_path / change["configuration"]
    path.write_text(json.dumps(config))
    assert [m.endpoint for m in load_rest_config(str(path), [str(ROOT / "extensions")]).mappings] == ["/data"]


def test_remote_configuration_is_off_by_default_and_a_boolean(tmp_path: Path) -> None:
    assert not load_config(write_set(tmp_path / "default", GENERAL), env={}).gateway.thingsboard.remote_configuration
    general = json.loads(json.dumps(GENERAL))
    general["thingsboard"]["remoteConfiguration"] = True
    path = write_set(tmp_path / "on", general)
    loaded = load_config(path, env={})
    assert loaded.gateway.thingsboard.remote_configuration and loaded.warnings == []
    code, text = check_report(path)
    assert code == 0 and "remote configuration ON" in text
    general["thingsboard"]["remoteConfiguration"] = "yes"
    with pytest.raises(ConfigError) as raised:
        load_config(write_set(tmp_path / "bad", general), env={})
    assert "/thingsboard/remoteConfiguration" in str(raised.value) and "true or false" in str(raised.value)
