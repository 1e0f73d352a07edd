"""Hot reload end to end: a real daemon, a real broker and subscriber, SIGHUP / rest-gateway reload / file watch."""
from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from typing import Any

import requests
import yaml
from prometheus_client.parser import text_string_to_metric_families

from tests.fixtures.daemon import ROOT


def endpoint(path: str, key: str = "v") -> dict[str, Any]:
    """An anonymous JSON endpoint storing ``seq`` and ``value`` (as telemetry key ``key``) for device ``${name}``."""
    return {"endpoint": path, "HTTPMethods": ["POST"], "security": {"type": "anonymous"},
            "converter": {"type": "json", "deviceNameExpression": "${name}", "deviceTypeExpression": "sensor",
                          "attributes": [],
                          "timeseries": [{"type": "long", "key": "seq", "value": "${seq}"},
                                         {"type": "double", "key": key, "value": "${value}"}]}}


def rest_config(*mappings: dict[str, Any]) -> dict[str, Any]:
    return {"server": {"host": "127.0.0.1", "port": 0}, "mapping": list(mappings)}


def write_rest(daemon: Any, rest: dict[str, Any]) -> None:
    """Replace the daemon's rest.json (same port) in one rename, as a deploy tool would."""
    rest = json.loads(json.dumps(rest))
    rest["server"]["port"] = daemon.port
    path = os.path.join(daemon.workdir, "rest.json")
    with open(path + ".new", "w", encoding="utf-8") as fh:
        json.dump(rest, fh, indent=2)
    os.replace(path + ".new", path)


def write_general(daemon: Any, **changes: Any) -> None:
    general = dict(daemon.general, **changes)
    with open(daemon.config_path + ".new", "w", encoding="utf-8") as fh:
        yaml.safe_dump(general, fh)
    os.replace(daemon.config_path + ".new", daemon.config_path)


def reloads(daemon: Any) -> dict[str, float]:
    """rest_gateway_config_reloads_total by outcome, and the other config_* samples, from /metrics."""
    text = requests.get(daemon.admin_url("/metrics"), timeout=5).text
    found: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == "rest_gateway_config_reloads_total":
                found[sample.labels["outcome"]] = sample.value
            elif sample.name.startswith("rest_gateway_config_"):
                found[sample.name] = sample.value
    return found


def wait_until(predicate: Any, timeout: float = 30.0, what: str = "condition") -> Any:
    deadline = time.monotonic() + timeout
    while True:
        result = predicate()
        if result:
            return result
        assert time.monotonic() < deadline, f"{what}: not reached in {timeout} s"
        time.sleep(0.05)


def wait_outcome(daemon: Any, outcome: str, count: int, timeout: float = 30.0) -> dict[str, float]:
    return wait_until(lambda: (r := reloads(daemon)).get(outcome, 0) >= count and r, timeout,
                      f"{count} reload(s) with outcome {outcome}; log:\n{daemon.log_text()[-3000:]}")


def sighup(daemon: Any) -> None:
    daemon.proc.send_signal(signal.SIGHUP)


def post(daemon: Any, path: str, name: str, seq: int, value: float = 1.0) -> int:
    return requests.post(daemon.url(path), json={"name": name, "seq": seq, "value": value}, timeout=10).status_code


def delivered(subscriber: Any) -> dict[int, dict[str, Any]]:
    """seq → the telemetry values ThingsBoard got with it."""
    found = {}
    for body in subscriber.on("v1/gateway/telemetry"):
        if isinstance(body, dict):
            for entries in body.values():
                for entry in entries:
                    values = entry.get("values", {})
                    if "seq" in values:
                        found[int(values["seq"])] = values
    return found


class Load:
    """A few threads posting as fast as they get answers, to whichever endpoints exist at the moment."""

    def __init__(self, daemon: Any, threads: int = 4) -> None:
        self.daemon = daemon
        self.results: list[tuple[float, str, int, int]] = []  # (started, path, seq, status)
        self.answered: dict[int, float] = {}  # seq -> when its answer came
        self.paths = ["/a", "/old"]
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._next = 0
        self._threads = [threading.Thread(target=self._run, args=(i,), daemon=True) for i in range(threads)]

    def _seq(self) -> int:
        with self._lock:
            self._next += 1
            return self._next

    def _run(self, index: int) -> None:
        session = requests.Session()
        turn = 0
        while not self._stop.is_set():
            path = self.paths[turn % len(self.paths)]
            turn += 1
            seq = self._seq()
            started = time.monotonic()
            try:
                status = session.post(self.daemon.url(path), json={"name": f"load{index}", "seq": seq,
                                                                   "value": seq / 10}, timeout=30).status_code
            except requests.RequestException as exc:
                status = -1
                print("request failed:", exc)
            with self._lock:
                self.results.append((started, path, seq, status))
                self.answered[seq] = time.monotonic()

    def start(self) -> Load:
        for thread in self._threads:
            thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(60)


def test_reload_under_load_delivers_every_200(make_daemon, mqtt_subscriber) -> None:
    daemon = make_daemon(rest_config(endpoint("/a"), endpoint("/old")))
    load = Load(daemon).start()
    marks: dict[str, float] = {}

    def answered_after(count: int) -> None:
        """Let the load run until ``count`` more requests are answered (not a fixed time: a busy box is slower)."""
        target = len(load.results) + count
        wait_until(lambda: len(load.results) >= target, 120, f"{count} more requests answered")

    try:
        answered_after(500)
        load.paths = ["/a", "/old", "/new"]
        write_rest(daemon, rest_config(endpoint("/a"), endpoint("/old"), endpoint("/new")))
        sighup(daemon)
        wait_outcome(daemon, "applied", 1)
        marks["new added"] = time.monotonic()
        answered_after(500)
        marks["converter sent"] = time.monotonic()
        write_rest(daemon, rest_config(endpoint("/a", key="w"), endpoint("/old"), endpoint("/new")))
        sighup(daemon)
        wait_outcome(daemon, "applied", 2)
        marks["converter changed"] = time.monotonic()
        answered_after(500)
        marks["old removal sent"] = time.monotonic()
        write_rest(daemon, rest_config(endpoint("/a", key="w"), endpoint("/new")))
        sighup(daemon)
        wait_outcome(daemon, "applied", 3)
        marks["old removed"] = time.monotonic()
        answered_after(500)
        # a reload that changes nothing is counted as such and disturbs nothing
        sighup(daemon)
        wait_outcome(daemon, "unchanged", 1)
        answered_after(500)
    finally:
        load.stop()
    results = load.results
    elapsed = results[-1][0] - results[0][0]
    rate = len(results) / elapsed
    print(f"{len(results)} requests in {elapsed:.1f} s ({rate:.0f} req/s, 4 threads) over 4 reloads")
    for mark in marks.values():  # every switch happened with requests on both sides of it
        assert any(started < mark for started, *_ in results) and any(started > mark for started, *_ in results)
    statuses = {status for _, _, _, status in results}
    assert statuses <= {200, 404}, f"unexpected answers: {statuses}"
    for started, path, seq, status in results:
        if path == "/a":
            assert status == 200, (path, seq, status)
        elif path == "/new" and started > marks["new added"]:
            assert status == 200, (path, seq, status)
        elif path == "/old" and load.answered[seq] < marks["old removal sent"]:
            # answered before the reload was asked for (one sent earlier may wait in the server's queue past
            # the switch on a loaded machine, and is then rightly served by the new configuration)
            assert status == 200, (path, seq, status)
        elif path == "/old" and started > marks["old removed"]:
            assert status == 404, (path, seq, status)
    accepted = {seq: (started, path) for started, path, seq, status in results if status == 200}
    assert any(path == "/new" for _, path in accepted.values())
    got = wait_until(lambda: (d := delivered(mqtt_subscriber)).keys() >= accepted.keys() and d, 90,
                     "every 200 delivered")
    for seq, (started, path) in accepted.items():
        if path == "/a" and started > marks["converter changed"]:
            assert "w" in got[seq] and "v" not in got[seq], got[seq]
        elif path == "/a" and load.answered[seq] < marks["converter sent"]:
            assert "v" in got[seq] and "w" not in got[seq], got[seq]
    samples = reloads(daemon)
    assert samples["applied"] == 3 and samples["unchanged"] == 1 and samples.get("invalid", 0) == 0
    assert samples["rest_gateway_config_last_reload_success"] == 1
    assert "applied" in daemon.log_text() and "Traceback" not in daemon.log_text()
    took = re.findall(r"switched in (\d+) ms", daemon.log_text())
    print(f"reloads applied under load in {', '.join(took)} ms (read, checked, built and switched)")
    assert daemon.stop() == 0


def test_an_invalid_file_keeps_the_running_config(make_daemon, mqtt_subscriber) -> None:
    daemon = make_daemon(rest_config(endpoint("/a")))
    broken = rest_config(endpoint("/a"), endpoint("/b"))
    broken["mapping"][1]["converter"].pop("deviceNameExpression")
    broken["mapping"][1]["security"] = {"type": "bearer"}
    write_rest(daemon, broken)
    sighup(daemon)
    samples = wait_outcome(daemon, "invalid", 1)
    assert samples["rest_gateway_config_last_reload_success"] == 0
    log = daemon.log_text()
    assert "refused: 2 problem(s)" in log or "refused" in log
    rest_file = os.path.join(daemon.workdir, "rest.json")
    problems = [line for line in log.splitlines() if rest_file in line and "/mapping/1" in line]
    assert any("deviceNameExpression" in line for line in problems), log
    assert any("/mapping/1/security" in line and "token" in line for line in problems), log
    assert post(daemon, "/a", "dev", 1) == 200
    assert post(daemon, "/b", "dev", 2) == 404
    wait_until(lambda: 1 in delivered(mqtt_subscriber), what="the old endpoint's data delivered")
    # a syntax error is refused the same way
    with open(rest_file, "w", encoding="utf-8") as fh:
        fh.write('{"server": {"port": 1, ')
    sighup(daemon)
    wait_outcome(daemon, "invalid", 2)
    assert post(daemon, "/a", "dev", 3) == 200
    assert daemon.stop() == 0


def test_restart_only_changes_are_named_and_nothing_is_applied(make_daemon, broker) -> None:
    daemon = make_daemon(rest_config(endpoint("/a")))
    # a new endpoint together with a new MQTT host and HTTP port: neither is applied
    rest = rest_config(endpoint("/a"), endpoint("/b"))
    write_rest(daemon, rest)
    write_general(daemon, thingsboard=dict(daemon.general["thingsboard"], host="tb.example.com"))
    sighup(daemon)
    wait_outcome(daemon, "restart_required", 1)
    log = daemon.log_text()
    assert "needs a restart" in log and "thingsboard" in log and "host changed" in log, log
    assert post(daemon, "/b", "dev", 1) == 404  # not half-applied
    assert post(daemon, "/a", "dev", 2) == 200
    write_general(daemon)  # the host back: only the new endpoint remains, and is applied
    rest["server"]["port"] = daemon.port + 1
    path = os.path.join(daemon.workdir, "rest.json")
    with open(path, "w", encoding="utf-8") as fh:
        json.dump(rest, fh)
    sighup(daemon)
    wait_outcome(daemon, "restart_required", 2)
    assert "HTTP listener server.port" in daemon.log_text()
    write_rest(daemon, rest)
    sighup(daemon)
    wait_outcome(daemon, "applied", 1)
    assert post(daemon, "/b", "dev", 3) == 200
    assert daemon.stop() == 0


def reload_command(daemon: Any) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    return subprocess.run([sys.executable, "-m", "gateway", "reload", "-c", daemon.config_path],
                          capture_output=True, text=True, timeout=60, env=env, cwd=daemon.workdir)


def test_reload_command_signals_the_daemon_by_its_pid_file(make_daemon, mqtt_subscriber) -> None:
    daemon = make_daemon(rest_config(endpoint("/a")))
    pid_file = os.path.join(daemon.workdir, "data", "rest-gateway.pid")
    assert open(pid_file, encoding="ascii").read().strip() == str(daemon.proc.pid)
    write_rest(daemon, rest_config(endpoint("/a"), endpoint("/b")))
    done = reload_command(daemon)
    assert done.returncode == 0, done.stderr
    assert f"pid {daemon.proc.pid}" in done.stdout
    wait_outcome(daemon, "applied", 1)
    assert post(daemon, "/b", "dev", 1) == 200
    wait_until(lambda: 1 in delivered(mqtt_subscriber), what="the new endpoint's data delivered")
    # an invalid file is reported at the prompt and not sent at all
    broken = rest_config(endpoint("/a"))
    broken["mapping"][0]["converter"]["deviceNameExpression"] = 5
    write_rest(daemon, broken)
    done = reload_command(daemon)
    assert done.returncode == 1
    assert "/mapping/0/converter/deviceNameExpression" in done.stderr and "not reloading" in done.stderr
    assert reloads(daemon).get("invalid", 0) == 0
    assert post(daemon, "/b", "dev", 2) == 200
    write_rest(daemon, rest_config(endpoint("/a")))
    assert daemon.stop() == 0
    assert not os.path.exists(pid_file), "the pid file is removed on a clean exit"
    done = reload_command(daemon)
    assert done.returncode == 3 and "no rest-gateway is running" in done.stderr, done.stderr


def test_watch_mode_applies_changes_on_disk(make_daemon, mqtt_subscriber) -> None:
    daemon = make_daemon(rest_config(endpoint("/a")), general={"reload": {"watch": True, "intervalSeconds": 0.2}})
    write_rest(daemon, rest_config(endpoint("/a", key="w"), endpoint("/b")))
    wait_outcome(daemon, "applied", 1)
    assert post(daemon, "/b", "dev", 1) == 200
    assert post(daemon, "/a", "dev", 2) == 200
    got = wait_until(lambda: (d := delivered(mqtt_subscriber)).keys() >= {1, 2} and d, what="delivered")
    assert "w" in got[2] and "v" not in got[2]
    # gateway.yaml is watched too: a log level change applies, and the watcher keeps watching
    write_general(daemon, logLevel="DEBUG")
    wait_outcome(daemon, "applied", 2)
    write_rest(daemon, rest_config(endpoint("/a", key="w")))
    wait_outcome(daemon, "applied", 3)
    assert post(daemon, "/b", "dev", 3) == 404
    assert "change on disk of" in daemon.log_text()
    assert daemon.stop() == 0


def test_tokens_file_is_read_again_on_reload(make_daemon) -> None:
    secured = dict(endpoint("/a"), security={"type": "bearer", "tokensFile": "tokens.txt"})
    daemon = make_daemon(rest_config(endpoint("/open")), start=False)
    tokens = os.path.join(daemon.workdir, "tokens.txt")
    with open(tokens, "w", encoding="utf-8") as fh:
        fh.write("first-token-0001\n")
    write_rest(daemon, rest_config(secured))
    daemon.start()

    def status(token: str) -> int:
        return requests.post(daemon.url("/a"), json={"name": "dev", "seq": 1, "value": 1},
                             headers={"Authorization": f"Bearer {token}"}, timeout=10).status_code

    assert (status("first-token-0001"), status("second-token-0002")) == (200, 401)
    with open(tokens, "w", encoding="utf-8") as fh:
        fh.write("# rotated\nsecond-token-0002\n")
    sighup(daemon)
    wait_outcome(daemon, "applied", 1)
    assert (status("first-token-0001"), status("second-token-0002")) == (401, 200)
    assert "second-token-0002" not in daemon.log_text()
    assert daemon.stop() == 0


def test_changed_downlink_rules_take_effect(make_daemon, mqtt_subscriber) -> None:
    from tests.fixtures.http_target import HttpTarget

    target = HttpTarget(keep_alive=False).start()
    try:
        def rules(path: str) -> dict[str, Any]:
            rest = rest_config(endpoint("/a"))
            rest["requestsMapping"] = {"attributeUpdates": [{
                "HTTPMethod": "POST", "deviceNameFilter": ".*", "attributeFilter": ".*", "timeout": 5, "tries": 1,
                "requestUrlExpression": target.url + path + "/${deviceName}",
                "valueExpression": "{\"${attributeKey}\": \"${attributeValue}\"}"}]}
            return rest

        daemon = make_daemon(rules("/ok"))
        assert mqtt_subscriber.wait_for(lambda m: any(t == "v1/devices/me/rpc/request/1" for t, _, _ in m), 20)
        mqtt_subscriber.publish("v1/gateway/attributes", {"device": "SN-1", "data": {"fw": "1"}})
        target.wait_count("/ok/SN-1", 1, timeout=20)
        write_rest(daemon, rules("/echo"))
        sighup(daemon)
        wait_outcome(daemon, "applied", 1)
        mqtt_subscriber.publish("v1/gateway/attributes", {"device": "SN-1", "data": {"fw": "2"}})
        (received,) = target.wait_count("/echo/SN-1", 1, timeout=20)
        assert received.json() == {"fw": "2"}
        assert len([r for r in target.requests if r.path.startswith("/ok/")]) == 1
        assert daemon.stop() == 0
    finally:
        target.close()
