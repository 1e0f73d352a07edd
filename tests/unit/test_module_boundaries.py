"""The import boundaries the project's layout promises, read from the source (not from what happens to be loaded)."""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def imported_modules(path: Path) -> set[str]:
    """Every module ``path`` imports, at any depth of the file (lazy imports included)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
    return found


def sources(package: str) -> list[Path]:
    return sorted((ROOT / package).rglob("*.py"))


def offenders(package: str, forbidden: tuple[str, ...]) -> dict[str, list[str]]:
    result = {}
    for path in sources(package):
        bad = sorted(m for m in imported_modules(path) if m.startswith(forbidden))
        if bad:
            result[str(path.relative_to(ROOT))] = bad
    return result


@pytest.mark.parametrize(("package", "forbidden", "why"), [
    ("gateway", ("connectors.rest",), "connectors register by type; gateway/ knows only connectors.base/registry"),
    ("connectors", ("gateway.northbound", "paho"), "a connector never imports the MQTT client"),
    ("converters", ("flask", "waitress", "werkzeug", "connectors"), "a converter knows no HTTP server"),
])
def test_a_layer_does_not_import_what_it_must_not_know(package: str, forbidden: tuple[str, ...], why: str) -> None:
    assert sources(package), package
    assert offenders(package, forbidden) == {}, why


def test_the_sender_knows_its_client_and_connection_only_through_its_ports() -> None:
    northbound = ROOT / "gateway" / "northbound"
    for name in ("sender.py", "sender_ports.py"):
        imports = imported_modules(northbound / name)
        assert not any(m.startswith("gateway.northbound.client") for m in imports), name
        assert not any(m.startswith("paho") for m in imports), name
    assert "gateway.northbound.sender_ports" in imported_modules(northbound / "sender.py")
