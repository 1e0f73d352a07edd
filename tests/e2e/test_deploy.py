"""The deployment files in deploy/: the systemd unit, the server config they share, the Docker image."""
from __future__ import annotations

import configparser
import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from gateway.config.general import ENV_HOST, ENV_PORT, ENV_TOKEN
from gateway.config.loader import load_config
from tests.fixtures.daemon import ROOT

DEPLOY = Path(ROOT, "deploy")
UNIT = DEPLOY / "systemd" / "rest-gateway.service"
INSTALLED_COMMAND = "/opt/rest-gateway/bin/rest-gateway"
CONFIG_DIR, STATE_DIR = "/etc/rest-gateway", "/var/lib/rest-gateway"


def unit_settings() -> dict[str, list[str]]:
    """The [Service] settings of the unit, each key with every value it is given (in order)."""
    parser = configparser.ConfigParser(strict=False, interpolation=None, empty_lines_in_values=False,
                                       dict_type=_MultiDict)
    parser.optionxform = str  # type: ignore[assignment,method-assign]
    parser.read_string(UNIT.read_text(encoding="utf-8"))
    return {key: value.split("\n") for key, value in parser["Service"].items()}


class _MultiDict(dict):
    """configparser keeps the last of repeated keys; systemd keeps them all (SystemCallFilter=...)."""

    def __setitem__(self, key: str, value: object) -> None:
        if isinstance(value, list) and key in self and isinstance(self[key], list):
            self[key].extend(value)
        else:
            super().__setitem__(key, value)


def test_unit_is_hardened_and_uses_the_documented_paths() -> None:
    service = unit_settings()
    expected = {"DynamicUser": "yes", "ProtectSystem": "strict", "NoNewPrivileges": "yes", "PrivateTmp": "yes",
                "ProtectHome": "yes", "StateDirectory": "rest-gateway", "ConfigurationDirectory": "rest-gateway",
                "Restart": "on-failure", "RestrictAddressFamilies": "AF_INET AF_INET6 AF_UNIX",
                "CapabilityBoundingSet": ""}
    for key, value in expected.items():
        assert service.get(key) == [value], f"{UNIT.name}: {key}={service.get(key)}, expected {value}"
    assert service["ExecStart"] == [f"{INSTALLED_COMMAND} run -c ${{CONFIGURATION_DIRECTORY}}/gateway.yaml"]
    # the storage the shipped server config names is the StateDirectory, the one writable place
    general = yaml.safe_load((DEPLOY / "config" / "gateway.yaml").read_text(encoding="utf-8"))
    assert Path(general["storage"]["data_file_path"]).parent == Path(STATE_DIR)
    assert service["WorkingDirectory"] == [STATE_DIR]


def test_server_config_is_the_shipped_one_listening_on_all_interfaces() -> None:
    shipped = json.loads(Path(ROOT, "config", "rest.json").read_text(encoding="utf-8"))
    server = json.loads((DEPLOY / "config" / "rest.json").read_text(encoding="utf-8"))
    assert server.pop("host") == "0.0.0.0"
    assert server["deviceApi"]["coap"].pop("host") == "0.0.0.0"
    shipped.pop("host")
    shipped["deviceApi"]["coap"].pop("host")
    assert server == shipped, "deploy/config/rest.json drifted from config/rest.json (only the hosts may differ)"
    done = subprocess.run([sys.executable, "-m", "gateway", "check", "-c", str(DEPLOY / "config" / "gateway.yaml")],
                          cwd=ROOT, capture_output=True, text=True, timeout=60,
                          env={"PATH": "/usr/bin:/bin", "PYTHONPATH": ROOT})
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"storage sqlite at {STATE_DIR}/gateway.db" in done.stdout


def test_systemd_analyze_verify_accepts_the_unit(tmp_path: Path) -> None:
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze is not installed (Debian package systemd; .ci/run installs it)")
    # verify insists that ExecStart's program exists: stand one in for the installed venv's command
    program = tmp_path / "rest-gateway"
    program.write_text("#!/bin/sh\nexit 0\n")
    program.chmod(0o755)
    unit = tmp_path / UNIT.name
    unit.write_text(UNIT.read_text(encoding="utf-8").replace(INSTALLED_COMMAND, str(program)), encoding="utf-8")
    done = subprocess.run([analyze, "verify", str(unit)], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr
    # unknown keys and bad values are only warnings to verify: the unit must produce none
    assert done.stdout.strip() == "" and done.stderr.strip() == "", done.stdout + done.stderr


# ---------------------------------------------------------------------------------------------- Docker

DOCKERFILE = DEPLOY / "docker" / "Dockerfile"
COMPOSE = DEPLOY / "docker" / "compose.yaml"


def dockerfile_instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) of the Dockerfile, continuation lines joined, comments dropped."""
    lines, current = [], ""
    for raw in DOCKERFILE.read_text(encoding="utf-8").splitlines():
        if not current and (not raw.strip() or raw.lstrip().startswith("#")):
            continue
        current += raw.rstrip()
        if current.endswith("\\"):
            current = current[:-1] + " "
            continue
        lines.append(current.strip())
        current = ""
    return [(line.split(None, 1)[0].upper(), line.split(None, 1)[1] if " " in line else "") for line in lines]


def healthcheck_command() -> list[str]:
    (args,) = [args for op, args in dockerfile_instructions() if op == "HEALTHCHECK"]
    return json.loads(args[args.index("CMD") + 3:].strip())


def test_every_path_the_dockerfile_copies_exists() -> None:
    copies = [args.split() for op, args in dockerfile_instructions() if op == "COPY"]
    assert copies
    for args in copies:
        assert not any(a.startswith("--from") for a in args), args  # build-stage files come by --mount
        *sources, _dest = [a for a in args if not a.startswith("--")]
        for source in sources:
            assert Path(ROOT, source).exists(), f"Dockerfile copies {source}, which is not in the repository"
    # the build stage copies what setup.py needs to build the wheel, the four packages included
    copied = {source.rstrip("/") for args in copies for source in args[:-1]}
    assert {"setup.py", "README.md", "gateway", "connectors", "converters", "extensions"} <= copied


def test_image_is_slim_non_root_with_config_and_data_volumes() -> None:
    ops = dockerfile_instructions()
    bases = [args.split()[0] for op, args in ops if op == "FROM"]
    assert bases and all(base == "python:3.11-slim" for base in bases), bases
    (user,) = [args for op, args in ops if op == "USER"]
    assert user not in ("root", "0")
    (volumes,) = [json.loads(args) for op, args in ops if op == "VOLUME"]
    assert volumes == [CONFIG_DIR, STATE_DIR]
    (cmd,) = [json.loads(args) for op, args in ops if op == "CMD"]
    assert cmd == ["run", "-c", f"{CONFIG_DIR}/gateway.yaml"]
    config_copy = [args.split() for op, args in ops if op == "COPY" and args.split()[-1].rstrip("/") == CONFIG_DIR]
    assert config_copy == [["deploy/config/gateway.yaml", "deploy/config/rest.json", CONFIG_DIR + "/"]]


def test_healthcheck_asks_the_admin_listener_of_the_shipped_config() -> None:
    command = healthcheck_command()
    assert command[:2] == ["python", "-c"], "no curl in python:3.11-slim: the check must be python -c"
    url = re.search(r"http://127\.0\.0\.1:(\d+)(/[a-z]*)'", command[2])
    assert url, command
    assert url.group(2) == "/healthz", "HEALTHCHECK must ask the admin listener's liveness probe"
    admin = load_config(str(DEPLOY / "config" / "gateway.yaml")).gateway.admin
    assert admin.enabled and int(url.group(1)) == admin.port, "HEALTHCHECK asks another port than the image's admin"
    # the check runs inside the container: the admin listener must listen on its loopback
    assert admin.host in ("127.0.0.1", "0.0.0.0"), admin.host
    image_config = json.loads((DEPLOY / "config" / "rest.json").read_text(encoding="utf-8"))
    exposed = [args for op, args in dockerfile_instructions() if op == "EXPOSE"]
    assert exposed == [f"{image_config['port']} {image_config['deviceApi']['coap']['port']}/udp"]


def test_healthcheck_command_tells_a_live_gateway_from_a_dead_one(make_daemon) -> None:
    gw = make_daemon(json.loads(Path(ROOT, "config", "rest.json").read_text(encoding="utf-8")))
    command = healthcheck_command()
    script = re.sub(r"127\.0\.0\.1:\d+", f"127.0.0.1:{gw.admin_port}", command[2])
    assert subprocess.run([sys.executable, "-c", script], capture_output=True, timeout=30).returncode == 0
    gw.kill()
    assert subprocess.run([sys.executable, "-c", script], capture_output=True, timeout=30).returncode != 0


def test_compose_runs_the_image_with_mosquitto_and_only_known_overrides() -> None:
    compose = yaml.safe_load(COMPOSE.read_text(encoding="utf-8"))
    services = compose["services"]
    assert set(services) == {"mosquitto", "rest-gateway"}
    gateway = services["rest-gateway"]
    context = (COMPOSE.parent / gateway["build"]["context"]).resolve()
    assert context == Path(ROOT).resolve() and (context / gateway["build"]["dockerfile"]) == DOCKERFILE
    assert set(gateway["environment"]) <= {ENV_HOST, ENV_PORT, ENV_TOKEN}, "the gateway reads no other TB_GW_*"
    assert gateway["environment"][ENV_HOST] == "mosquitto"
    assert {v.split(":")[1] for v in gateway["volumes"]} == {CONFIG_DIR, STATE_DIR}
    assert any(p.endswith(":5000") for p in gateway["ports"])
    assert any(p.endswith(":5683/udp") for p in gateway["ports"]), "the CoAP device API is UDP"


def _docker_daemon() -> str:
    docker = shutil.which("docker")
    if docker is None:
        pytest.skip("docker is not installed")
    info = subprocess.run([docker, "info"], capture_output=True, text=True, timeout=30)
    if info.returncode != 0:
        reason = (info.stderr.strip().splitlines() or [f"docker info exited {info.returncode}"])[-1]
        pytest.skip(f"no docker daemon reachable ({reason})")
    return docker


def test_image_builds_checks_its_config_and_runs_healthy() -> None:
    docker = _docker_daemon()
    tag = "rest-gateway:test"
    built = subprocess.run([docker, "build", "-f", str(DOCKERFILE), "-t", tag, ROOT],
                           capture_output=True, text=True, timeout=900)
    assert built.returncode == 0, built.stdout[-3000:] + built.stderr[-3000:]
    check = subprocess.run([docker, "run", "--rm", tag, "check", "-c", f"{CONFIG_DIR}/gateway.yaml"],
                           capture_output=True, text=True, timeout=120)
    assert check.returncode == 0 and "Configuration is valid." in check.stdout, check.stdout + check.stderr
    uid = subprocess.run([docker, "run", "--rm", "--entrypoint", "id", tag, "-u"], capture_output=True,
                         text=True, timeout=120)
    assert uid.returncode == 0 and uid.stdout.strip() != "0", uid.stdout + uid.stderr
    # run it (no broker: a ThingsBoard outage keeps it live) until its own HEALTHCHECK calls it healthy;
    # only the probe interval is shortened, the command is the image's
    name = f"rest-gateway-test-{os.getpid()}"
    started = subprocess.run([docker, "run", "-d", "--name", name, "--health-interval", "2s", tag],
                             capture_output=True, text=True, timeout=120)
    assert started.returncode == 0, started.stdout + started.stderr
    try:
        deadline = time.monotonic() + 120
        status = ""
        while time.monotonic() < deadline and status not in ("healthy", "unhealthy"):
            time.sleep(1)
            status = subprocess.run([docker, "inspect", "--format", "{{.State.Health.Status}}", name],
                                    capture_output=True, text=True, timeout=30).stdout.strip()
        logs = subprocess.run([docker, "logs", name], capture_output=True, text=True, timeout=30)
        assert status == "healthy", f"container health {status!r}:\n{logs.stdout[-3000:]}{logs.stderr[-3000:]}"
    finally:
        subprocess.run([docker, "rm", "-f", name], capture_output=True, timeout=120)
