"""The dead-letter file: data ThingsBoard can never accept, moved aside as JSON lines, never dropped silently."""
from __future__ import annotations

import json
import logging
import threading
from datetime import UTC, datetime

from gateway.northbound.publishes import DeadLetter


class DeadLetterFile:
    """Appends dead letters to a JSONL file (or, with no path, only logs them)."""

    def __init__(self, path: str | None, logger: logging.Logger) -> None:
        self.path = path
        self.log = logger
        self._lock = threading.Lock()

    def write(self, letters: list[DeadLetter]) -> None:
        """Log the first few and append all of them, one JSON object per line."""
        for letter in letters[:3]:
            self.log.warning("dead-lettered data of event %s: %s", letter.event_id, letter.reason)
        if len(letters) > 3:
            self.log.warning("... and %d more dead letters", len(letters) - 3)
        if self.path is None:
            return
        now = datetime.now(UTC).isoformat()
        lines = [json.dumps({"time": now, "event_id": d.event_id, "reason": d.reason, "content": d.content},
                            separators=(",", ":"), ensure_ascii=False, default=repr) + "\n" for d in letters]
        try:
            with self._lock, open(self.path, "a", encoding="utf-8") as file:
                file.writelines(lines)
        except OSError as exc:
            self.log.error("cannot write dead-letter file %s: %s", self.path, exc)
