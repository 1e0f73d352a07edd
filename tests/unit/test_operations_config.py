"""``admin`` and ``logging`` in gateway.yaml: defaults, ``rest-gateway check`` errors and warnings, masking."""
from __future__ import annotations

import io
import json
import logging
import sys
from pathlib import Path

from gateway.config.check import check_report
from gateway.config.loader import load_config
from gateway.logs import setup_logging
from tests.unit.test_general_config import GENERAL, write_set


def general(**sections: object) -> dict:
    return {**GENERAL, **sections}


def test_defaults_are_loopback_9100_text_logs(tmp_path: Path) -> None:
    cfg = load_config(write_set(tmp_path, general()), env={}).gateway
    assert (cfg.admin.enabled, cfg.admin.host, cfg.admin.port, cfg.admin.username) == (True, "127.0.0.1", 9100, "")
    assert cfg.admin.max_ready_backlog == 10000 and cfg.logging.format == "text"
    code, text = check_report(write_set(tmp_path, general()), env={})
    assert code == 0 and "admin listener http://127.0.0.1:9100" in text and "log format text" in text


def test_port_zero_or_enabled_false_turn_it_off(tmp_path: Path) -> None:
    for admin in ({"port": 0}, {"enabled": False}):
        cfg = load_config(write_set(tmp_path, general(admin=admin)), env={}).gateway
        assert cfg.admin.enabled is False
        assert "admin listener off" in check_report(write_set(tmp_path, general(admin=admin)), env={})[1]


def test_check_reports_every_admin_problem_at_once(tmp_path: Path) -> None:
    bad = general(admin={"port": 70000, "threads": 0, "security": {"username": "u"},
                         "readiness": {"maxBacklog": -1}}, logging={"format": "xml"})
    code, text = check_report(write_set(tmp_path, bad), env={})
    assert code == 1
    for pointer in ("/admin/port", "/admin/threads", "/admin/security", "/admin/readiness/maxBacklog",
                    "/logging/format"):
        assert pointer in text, text
    assert "0 to turn the admin listener off" in text and '"json"' in text


def test_admin_port_must_differ_from_a_connector_port(tmp_path: Path) -> None:
    port = json.loads((Path(write_set(tmp_path, general())).parent / "rest.json").read_text())["port"]
    code, text = check_report(write_set(tmp_path, general(admin={"port": int(port)})), env={})
    assert code == 1 and "/admin/port" in text and "also the port of connector 'REST'" in text


def test_open_admin_without_auth_is_a_warning(tmp_path: Path) -> None:
    code, text = check_report(write_set(tmp_path, general(admin={"host": "0.0.0.0"})), env={})
    assert code == 0 and "/admin/host" in text and "without authentication" in text
    secured = general(admin={"host": "0.0.0.0", "security": {"username": "u", "password": "p4ss"}})
    code, text = check_report(write_set(tmp_path, secured), env={})
    assert code == 0 and "without authentication" not in text and "basic auth" in text


def test_json_logs_are_one_object_per_line_with_secrets_masked(monkeypatch) -> None:
    stream = io.StringIO()
    monkeypatch.setattr(sys, "stderr", stream)
    root = logging.getLogger()
    saved = root.handlers[:], root.level
    try:
        setup_logging("INFO", ["tok-very-secret"], "json", ["/api/v1"])
        log = logging.getLogger("connectors.rest.My Connector")
        log.info("token %s on %s", "tok-very-secret", "/api/v1/provisioned-Tok3n/telemetry",
                 extra={"endpoint": "/sensors"})
        try:
            raise ValueError("bad tok-very-secret")
        except ValueError:
            logging.getLogger("gateway").exception("failed with tok-very-secret")
    finally:
        root.handlers[:] = saved[0]
        root.setLevel(saved[1])
    text = stream.getvalue()
    assert "tok-very-secret" not in text and "provisioned-Tok3n" not in text
    first, second = (json.loads(line) for line in text.splitlines())
    assert first["message"] == "token *** on /api/v1/***/telemetry"
    assert (first["level"], first["logger"], first["connector"], first["endpoint"]) == (
        "INFO", "connectors.rest.My Connector", "My Connector", "/sensors")
    assert first["time"].endswith("Z")
    assert second["level"] == "ERROR" and "ValueError: bad ***" in second["exception"]
    assert "connector" not in second


def test_statistics_default_off_and_read_at_top_level_or_under_thingsboard(tmp_path: Path) -> None:
    assert load_config(write_set(tmp_path, general()), env={}).gateway.statistics.enabled is False
    top = general(statistics={"enable": True, "statsSendPeriodInSeconds": 5})
    stats = load_config(write_set(tmp_path, top), env={}).gateway.statistics
    assert (stats.enabled, stats.period_seconds) == (True, 5)
    nested = general(thingsboard={**GENERAL["thingsboard"], "statistics": {"enable": True}})
    stats = load_config(write_set(tmp_path, nested), env={}).gateway.statistics
    assert (stats.enabled, stats.period_seconds) == (True, 60)
    code, text = check_report(write_set(tmp_path, top), env={})
    assert code == 0 and "statistics to ThingsBoard every 5 s" in text


def test_check_names_bad_statistics_keys(tmp_path: Path) -> None:
    bad = general(statistics={"enable": "yes", "statsSendPeriodInSeconds": 0})
    code, text = check_report(write_set(tmp_path, bad), env={})
    assert code == 1
    assert "/statistics/enable" in text and "/statistics/statsSendPeriodInSeconds" in text
    both = general(statistics={"enable": True},
                   thingsboard={**GENERAL["thingsboard"], "statistics": {"enable": True}})
    code, text = check_report(write_set(tmp_path, both), env={})
    assert code == 1 and "/thingsboard/statistics" in text and "one statistics section" in text
    custom = general(statistics={"enable": True, "commands": []})
    code, text = check_report(write_set(tmp_path, custom), env={})
    assert code == 0 and "/statistics/commands" in text and "not used" in text
