"""One connector configuration sent by ThingsBoard: checked, written with a backup, reloaded, or rolled back.

The steps, each of which can end the change with the running configuration untouched:

1. the attribute must be the reference's shape for an existing connector (same name, type and file);
2. masked secrets (``***``) sent back take the current values; one left without a value is refused;
3. the new file is staged beside the old one and read with the connector type's own checks (those
   of ``rest-gateway check``); any error refuses it, naming the key, and nothing on disk changes;
4. the old file is backed up, the new one renamed over it, and the daemon reloads exactly as on
   SIGHUP (every file checked again, restart-only changes refused, all connectors switched at once);
5. if that reload does not apply it, the backup is put back, so disk and running config agree again.
"""
from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from connectors.registry import connector_type
from gateway.config.model import ConnectorEntry
from gateway.reload import ReloadResult
from gateway.remote_config import files
from gateway.remote_config.report import masked_keys, unmask


@dataclass(frozen=True)
class Outcome:
    """How one remote change ended: ``ok`` when what ThingsBoard asked for now runs (or already did)."""

    attribute: str
    ok: bool
    outcome: str  # applied, unchanged, refused, invalid, restart_required, failed
    errors: list[str] = field(default_factory=list)
    backup: str | None = None

    def status(self, ts: int) -> dict[str, Any]:
        """The ``remoteConfigurationStatus`` value reporting it."""
        status: dict[str, Any] = {"ts": ts, "attribute": self.attribute, "status": "ok" if self.ok else "error",
                                  "outcome": self.outcome, "errors": list(self.errors)}
        if self.backup:
            status["backup"] = self.backup
        return status


def change_connector(entry: ConnectorEntry, value: Any, current: Any, extension_paths: Sequence[str],
                     reload: Callable[[str], ReloadResult]) -> Outcome:
    """Apply ThingsBoard's attribute ``value`` for connector ``entry`` (steps in the module docstring); never raises.

    ``current`` is the content of the connector file that runs (masked values are taken from it).
    """
    name = entry.name
    refused = _shape_problems(entry, value)
    if refused:
        return Outcome(name, False, "refused", refused)
    candidate = unmask(value["configurationJson"], current)
    left = masked_keys(candidate)
    if left:
        return Outcome(name, False, "refused", [
            f"{entry.configuration}: {pointer}: a masked secret (***) with no current value to keep "
            "(expected the secret itself)" for pointer in left])
    if candidate == current:
        return Outcome(name, True, "unchanged")
    kind = connector_type(entry.type)
    if kind is None:
        return Outcome(name, False, "failed", [f"connector type {entry.type!r} is not available"])
    try:
        staged = files.write_staged(entry.configuration, json.dumps(candidate, indent=2, ensure_ascii=False) + "\n")
    except OSError as exc:
        return Outcome(name, False, "failed", [f"{entry.configuration}: cannot be written: {exc}"])
    try:
        _, problems = kind.read_config(staged, list(extension_paths))
        errors = [str(dataclasses.replace(p, file=entry.configuration)) for p in problems.errors]
        if errors:
            return Outcome(name, False, "invalid", errors)
        saved = files.backup(entry.configuration)
        files.replace_with(staged, entry.configuration)
    except Exception as exc:  # a disk error, or a connector's checks failing unexpectedly
        return Outcome(name, False, "failed", [f"{entry.configuration}: cannot be checked or replaced: "
                                               f"{type(exc).__name__}: {exc}"])
    finally:
        if os.path.exists(staged):
            os.remove(staged)
    result = reload(f"remote configuration of {name!r} from ThingsBoard")
    if result.ok:
        return Outcome(name, True, result.outcome, [], saved)
    try:
        files.restore(saved, entry.configuration)
        back = f"{entry.configuration} restored from {saved}; the previous configuration keeps running"
    except OSError as exc:
        back = f"{entry.configuration} could NOT be restored from {saved}: {exc}; the previous configuration " \
               "keeps running, but the file on disk is the refused one"
    return Outcome(name, False, result.outcome, [*result.problems, back], saved)


def _shape_problems(entry: ConnectorEntry, value: Any) -> list[str]:
    """Why ``value`` cannot be a change of ``entry`` (the reference's connector attribute), or nothing."""
    if not isinstance(value, dict) or not isinstance(value.get("configurationJson"), dict):
        return [f"{entry.name}: expected {{\"name\", \"type\", \"configuration\", \"configurationJson\": {{...the "
                "connector file...}}}} as the reference gateway sends"]
    problems = []
    if value.get("name") not in (None, entry.name):
        problems.append(f"{entry.name}: name {value['name']!r} differs from the attribute's connector: renaming a "
                        "connector needs gateway.yaml and a restart")
    kind = value.get("type")
    if isinstance(kind, str) and kind.strip().lower() != entry.type:
        problems.append(f"{entry.name}: type {kind!r} differs from the running {entry.type!r}: changing a "
                        "connector's type needs gateway.yaml and a restart")
    file_name = value.get("configuration")
    if isinstance(file_name, str) and file_name and os.path.basename(file_name) != \
            os.path.basename(entry.configuration):
        problems.append(f"{entry.name}: configuration file {file_name!r} differs from the running "
                        f"{os.path.basename(entry.configuration)!r}: another file needs gateway.yaml and a restart")
    return problems
