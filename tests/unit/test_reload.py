"""Hot reload's parts: the reload/pidFile keys, restart-only changes, the file watcher, the pid file, log masks."""
from __future__ import annotations

import dataclasses
import json
import logging
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

from connectors.rest.app_switch import AppSwitch
from connectors.rest.config import load_rest_config
from connectors.rest.reload_checks import restart_only_changes as rest_restart_changes
from gateway.config.check import check_report
from gateway.config.loader import LoadedConfig, load_config
from gateway.config_watch import ConfigWatcher
from gateway.logs import SecretMask
from gateway.pidfile import PidFileError, PidFileUnwritable, read_pid, remove_pid_file, write_pid_file
from gateway.reload import Reloader, restart_only_changes
from tests.unit.test_general_config import GENERAL, write_set


def test_reload_and_pid_file_defaults(tmp_path: Path) -> None:
    cfg = load_config(write_set(tmp_path, GENERAL), env={}).gateway
    assert (cfg.reload.watch, cfg.reload.interval_s) == (False, 1.0)
    assert cfg.pid_file == str(tmp_path / "data" / "rest-gateway.pid")  # beside the storage file


def test_reload_and_pid_file_set(tmp_path: Path) -> None:
    general = {**GENERAL, "reload": {"watch": True, "intervalSeconds": 0.5}, "pidFile": "run/gw.pid"}
    cfg = load_config(write_set(tmp_path, general), env={}).gateway
    assert (cfg.reload.watch, cfg.reload.interval_s) == (True, 0.5)
    assert cfg.pid_file == str(tmp_path / "run" / "gw.pid")  # relative to gateway.yaml


def test_check_reports_bad_reload_keys(tmp_path: Path) -> None:
    general = {**GENERAL, "reload": {"watch": "yes", "intervalSeconds": 0, "poll": 1}, "pidFile": ""}
    code, text = check_report(write_set(tmp_path, general), env={})
    assert code == 1
    for pointer in ("/reload/watch", "/reload/intervalSeconds", "/reload/poll", "/pidFile"):
        assert pointer in text, text


def test_general_restart_only_changes_name_the_section_and_never_a_credential(tmp_path: Path) -> None:
    old = load_config(write_set(tmp_path, GENERAL), env={}).gateway
    tb = dict(GENERAL["thingsboard"], host="other.example", security={"accessToken": "new-secret-token"})
    new = load_config(write_set(tmp_path, {**GENERAL, "thingsboard": tb, "logLevel": "DEBUG",
                                           "reload": {"watch": True}}), env={}).gateway
    changes = restart_only_changes(old, new)
    assert len(changes) == 1, changes
    assert "thingsboard" in changes[0] and "host, security changed" in changes[0]
    assert "new-secret-token" not in changes[0] and "tok-123" not in changes[0]
    storage = dataclasses.replace(old, storage=dataclasses.replace(old.storage, data_file_path="/elsewhere.db"))
    assert restart_only_changes(old, storage) == [f"{old.file}: storage (the event storage): data_file_path changed"]
    assert restart_only_changes(old, dataclasses.replace(old, log_level="DEBUG")) == []


def _rest(tmp_path: Path, name: str, server: dict, *mappings: dict) -> object:
    path = tmp_path / name
    path.write_text(json.dumps({"server": server, "mapping": list(mappings)}), encoding="utf-8")
    return load_rest_config(str(path))


def _mapping(endpoint: str, **extra: object) -> dict:
    return {"endpoint": endpoint, "HTTPMethods": ["POST"],
            "converter": {"type": "json", "deviceNameExpression": "${n}"}, **extra}


def test_rest_restart_only_changes(tmp_path: Path) -> None:
    old = _rest(tmp_path, "a.json", {"port": 5000}, _mapping("/a"))
    more = _rest(tmp_path, "b.json", {"port": 5000}, _mapping("/a"), _mapping("/b"))
    assert rest_restart_changes(old, more, waits_ready=False) == []
    moved = _rest(tmp_path, "c.json", {"port": 5001, "threads": 8}, _mapping("/a"))
    changes = rest_restart_changes(old, moved, waits_ready=False)
    assert [c.split(": ", 1)[1] for c in changes] == ["HTTP listener server.port (5000 -> 5001)",
                                                      "HTTP listener server.threads (default -> 8)"]
    waiting = _rest(tmp_path, "d.json", {"port": 5000},
                    _mapping("/a", response={"responseExpected": True, "responseAttribute": "r"}))
    assert any("responseExpected" in c for c in rest_restart_changes(old, waiting, waits_ready=False))
    assert rest_restart_changes(old, waiting, waits_ready=True) == []


def test_watcher_reloads_once_per_settled_change(tmp_path: Path) -> None:
    path = tmp_path / "rest.json"
    path.write_text("{}", encoding="utf-8")
    calls: list[str] = []
    seen = threading.Event()

    def changed(reason: str) -> None:
        calls.append(reason)
        seen.set()

    watcher = ConfigWatcher(lambda: [str(path)], 0.05, changed, logging.getLogger("test"))
    watcher.start()
    try:
        os.utime(path)  # touched, same content: nothing to do
        path.write_text('{"a": 1}', encoding="utf-8")
        assert seen.wait(20), "no reload after a change"
        assert calls == [f"change on disk of {path}"]
        seen.clear()
        path.unlink()  # a missing file is a change too (the reload reports it)
        assert seen.wait(20)
        assert len(calls) == 2
    finally:
        watcher.stop()
    assert not watcher.alive


def test_watcher_ignores_what_a_reload_already_read(tmp_path: Path) -> None:
    path = tmp_path / "gateway.yaml"
    path.write_text("a: 1\n", encoding="utf-8")
    calls: list[str] = []
    watcher = ConfigWatcher(lambda: [str(path)], 3600, calls.append, logging.getLogger("test"))
    watcher.rebaseline()
    path.write_text("a: 2\n", encoding="utf-8")
    watcher.rebaseline()  # what a SIGHUP reload does after reading the files
    assert watcher._baseline[str(path)] is not None and calls == []


def test_pid_file_written_read_and_removed(tmp_path: Path) -> None:
    path = str(tmp_path / "run" / "gw.pid")
    write_pid_file(path)
    assert read_pid(path) == os.getpid()
    remove_pid_file(path)
    assert not os.path.exists(path)


def test_pid_file_of_a_running_gateway_is_refused_a_stale_one_replaced(tmp_path: Path) -> None:
    path = tmp_path / "gw.pid"
    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)  # rest-gateway stand-in"])
    try:
        deadline = time.monotonic() + 30  # until the child has exec'd (before, /proc shows pytest's command)
        while b"stand-in" not in Path(f"/proc/{other.pid}/cmdline").read_bytes() and time.monotonic() < deadline:
            time.sleep(0.01)
        path.write_text(f"{other.pid}\n", encoding="ascii")
        try:
            write_pid_file(str(path))
            raise AssertionError("a running gateway's pid file was taken over")
        except PidFileError as exc:
            assert str(other.pid) in str(exc) and str(path) in str(exc)
        remove_pid_file(str(path))
        assert read_pid(str(path)) == other.pid  # another process's file is left alone
    finally:
        other.kill()
        other.wait(10)
    write_pid_file(str(path))  # its process has gone: a stale file
    assert read_pid(str(path)) == os.getpid()


def test_secret_mask_takes_secrets_a_reload_brings() -> None:
    mask = SecretMask(["old-secret"], ["/api/v1"])
    mask.extend(["new-secret"], ["/dev/api"])
    assert mask.mask("old-secret new-secret /api/v1/tok1/x /dev/api/tok2") == "*** *** /api/v1/***/x /dev/api/***"


def test_app_switch_serves_later_requests_with_the_new_app() -> None:
    def app(name: str):  # a WSGI app answering its name
        def serve(environ: dict, start_response: object) -> list[bytes]:
            return [name.encode()]
        return serve

    switch = AppSwitch(app("old"))
    assert switch({}, None) == [b"old"]
    switch.switch(app("new"))
    assert switch({}, None) == [b"new"]


def test_an_unwritable_pid_file_is_told_apart(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("", encoding="utf-8")
    try:
        write_pid_file(str(blocker / "gw.pid"))  # a folder that is a file: cannot be created
        raise AssertionError("no error")
    except PidFileUnwritable as exc:
        assert "pidFile" in str(exc) and str(blocker) in str(exc)


class _Connector:
    """A running connector stand-in: prepares as told."""

    def __init__(self, name: str, prepare: object) -> None:
        self.name = name
        self.prepare_reload = prepare


def _reloader(tmp_path: Path, prepare: object) -> tuple[Reloader, list[LoadedConfig]]:
    path = write_set(tmp_path, GENERAL)
    applied: list[LoadedConfig] = []
    running = load_config(path, env={})
    reloader = Reloader(lambda: running, lambda: [_Connector("REST", prepare)], applied.append)
    rest = tmp_path / "rest.json"
    rest.write_text(rest.read_text(encoding="utf-8").replace('"/my_devices"', '"/renamed"'), encoding="utf-8")
    return reloader, applied


def test_a_connector_that_cannot_build_fails_the_reload_and_nothing_applies(tmp_path: Path) -> None:
    def cannot(config: object, folders: object) -> None:
        raise ValueError("the converter cannot be built")

    reloader, applied = _reloader(tmp_path, cannot)
    result = reloader.reload("test")
    assert (result.outcome, result.problems) == ("failed", ["ValueError: the converter cannot be built"])
    assert applied == [] and reloader.stats()["last_ok"] is False and reloader.counts["failed"] == 1


def test_a_valid_change_is_prepared_then_applied(tmp_path: Path) -> None:
    switched: list[object] = []

    def prepare(config: object, folders: object) -> object:
        return lambda: switched.append(config)

    reloader, applied = _reloader(tmp_path, prepare)
    before = reloader.loaded_at
    result = reloader.reload("test")
    assert result.outcome == "applied" and result.ok
    assert [m.endpoint for m in switched[0].mappings][0] == "/renamed" and len(applied) == 1
    assert reloader.loaded_at >= before and reloader.stats()["last_outcome"] == "applied"
