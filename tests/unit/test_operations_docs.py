"""docs/operations.md against what ships: the systemd lines it quotes are the unit's own."""
from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_the_systemd_lines_quoted_in_the_docs_are_those_of_the_shipped_unit() -> None:
    docs = (ROOT / "docs" / "operations.md").read_text(encoding="utf-8")
    unit = (ROOT / "deploy" / "systemd" / "rest-gateway.service").read_text(encoding="utf-8").splitlines()
    excerpt = re.search(r"```ini\n# /etc/systemd/system/rest-gateway\.service[^\n]*\n(.*?)```", docs, re.S)
    assert excerpt, "docs/operations.md no longer quotes the service unit"
    lines = [line for line in excerpt.group(1).splitlines() if line and not line.startswith("#")]
    assert any(line.startswith("ExecStart=") for line in lines)
    for line in lines:
        assert line in unit, f"docs/operations.md quotes {line!r}, which deploy/systemd/rest-gateway.service lacks"
