"""The wheel as a user gets it: built from a copy of the tree, installed into a fresh venv, checked and run.

The venv has no ``--system-site-packages`` (that would hide a missing ``install_requires`` entry),
so pip installs the dependencies from the configured index: this is the one test that needs it,
and it builds one venv for the whole module (a few seconds with pip's cache, ~30 s cold).
Every command runs from a directory outside the repo, so nothing is imported from the source tree.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
import venv
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from tests.e2e.test_uplink import AUTH, SPEC_BODY, published, wait_until
from tests.fixtures.daemon import ACCESS_TOKEN, ROOT, free_port

PACKAGES = ("gateway", "connectors", "converters", "extensions")
# what is not part of the source a wheel is built from (build output, caches, local venvs and data)
_NOT_SOURCE = shutil.ignore_patterns(".git", ".ci", "build", "dist", "*.egg-info", "__pycache__", "*.pyc",
                                     "data", ".venv", "venv", ".pytest_cache", ".ruff_cache", ".hypothesis")


def _run(args: list[str], cwd: Path, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items()
           if k not in ("PYTHONPATH", "VIRTUAL_ENV", "TB_GW_HOST", "TB_GW_PORT", "TB_GW_ACCESS_TOKEN")}
    return subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)


class Installed:
    """The built wheel and a fresh venv it is installed in."""

    def __init__(self, wheel: Path, venv_dir: Path, outside: Path) -> None:
        self.wheel = wheel
        self.bin = venv_dir / "bin"
        self.outside = outside  # a working directory with no source tree on it

    def run(self, *args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
        return _run([str(self.bin / "rest-gateway"), *args], cwd or self.outside, timeout=60)


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Installed]:
    base = tmp_path_factory.mktemp("packaging")
    source = base / "source"
    shutil.copytree(ROOT, source, ignore=_NOT_SOURCE)
    built = _run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(base / "dist"), "."], source)
    assert built.returncode == 0, f"pip wheel failed:\n{built.stdout}\n{built.stderr}"
    (wheel,) = (base / "dist").glob("rest_gateway-*.whl")
    venv_dir = base / "venv"
    venv.EnvBuilder(with_pip=True, system_site_packages=False).create(venv_dir)
    done = _run([str(venv_dir / "bin" / "python"), "-m", "pip", "install", "-q", str(wheel)], base)
    assert done.returncode == 0, f"installing the wheel failed:\n{done.stdout}\n{done.stderr}"
    outside = base / "work"
    outside.mkdir()
    yield Installed(wheel, venv_dir, outside)


def _source_files() -> set[str]:
    """Every file of the four packages in the tree (code and data), as wheel member names."""
    found = set()
    for package in PACKAGES:
        for path in Path(ROOT, package).rglob("*"):
            if path.is_file() and "__pycache__" not in path.parts and path.suffix != ".pyc":
                found.add(path.relative_to(ROOT).as_posix())
    return found


def test_wheel_holds_every_module_and_data_file(installed: Installed) -> None:
    with zipfile.ZipFile(installed.wheel) as wheel:
        members = set(wheel.namelist())
    for data in ("connectors/rest/schema.json", "gateway/config/general_schema.json",
                 "extensions/custom_converter.py", "extensions/__init__.py"):
        assert data in members, f"{data} is missing from {installed.wheel.name}"
    missing = sorted(_source_files() - members)
    assert not missing, f"files of the packages missing from the wheel (setup.py package_data?): {missing}"
    assert not [m for m in members if m.startswith("tests/")], "the test suite must not be installed"


def test_installed_wheel_checks_the_shipped_config(installed: Installed, tmp_path: Path) -> None:
    for name in ("gateway.yaml", "rest.json"):
        shutil.copy(Path(ROOT, "config", name), tmp_path / name)
    where = _run([str(installed.bin / "python"), "-c", "import gateway, extensions; print(gateway.__file__)"],
                 installed.outside)
    assert where.returncode == 0, where.stderr
    assert where.stdout.strip().startswith(str(installed.bin.parent)), where.stdout  # not the source tree
    done = installed.run("check", "-c", str(tmp_path / "gateway.yaml"))
    assert done.returncode == 0, f"{done.stdout}\n{done.stderr}"
    assert "Configuration is valid." in done.stdout
    # /anon1's CustomConverter comes from the installed extensions package
    assert "converter custom CustomConverter" in done.stdout, done.stdout


def test_installed_wheel_runs_and_delivers(installed: Installed, tmp_path: Path, broker, mqtt_subscriber) -> None:
    with open(Path(ROOT, "config", "rest.json"), encoding="utf-8") as fh:
        rest = json.load(fh)
    port = free_port()
    rest["port"] = str(port)
    (tmp_path / "rest.json").write_text(json.dumps(rest))
    (tmp_path / "gateway.yaml").write_text(
        f"thingsboard: {{host: 127.0.0.1, port: {broker.port}, protocol: {broker.protocol},"
        f" security: {{accessToken: {ACCESS_TOKEN}}}}}\n"
        "storage: {type: sqlite, data_file_path: ./data/gateway.db}\n"
        "connectors: [{name: REST, type: rest, configuration: rest.json}]\n")
    log = open(tmp_path / "gateway.log", "wb")
    proc = subprocess.Popen([str(installed.bin / "rest-gateway"), "run", "-c", str(tmp_path / "gateway.yaml")],
                            cwd=installed.outside, stdout=log, stderr=subprocess.STDOUT,
                            env={k: v for k, v in os.environ.items() if k != "PYTHONPATH"})
    log.close()
    try:
        answer = None
        for _ in range(400):
            assert proc.poll() is None, (tmp_path / "gateway.log").read_text()
            try:
                answer = requests.post(f"http://127.0.0.1:{port}/my_devices", json=SPEC_BODY, auth=AUTH, timeout=5)
                break
            except requests.ConnectionError:
                time.sleep(0.05)
        assert answer is not None and answer.status_code == 200, (tmp_path / "gateway.log").read_text()
        telemetry = wait_until(mqtt_subscriber, lambda: published(mqtt_subscriber, "v1/gateway/telemetry"), 15)
        assert telemetry[0]["SN-001"][0]["values"] == {"temperature": 32.0, "humidity": 67.0}
        assert (tmp_path / "data" / "gateway.db").exists()  # relative to the config file, as documented
    finally:
        proc.terminate()
        proc.wait(20)
