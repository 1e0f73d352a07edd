"""Logging setup: readable text or one JSON object per line, with configured secrets masked in every record."""
from __future__ import annotations

import json
import logging
import re
import sys
from collections.abc import Iterable
from datetime import UTC, datetime

LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
#: loggers of connectors are named ``connectors.<type>.<connector name>``
_CONNECTOR_LOGGER = re.compile(r"^connectors\.[a-z]+\.(.+)$")


class SecretMask(logging.Filter):
    """Replaces every configured secret (tokens, passwords) by ``***`` in formatted messages.

    ``token_paths`` are URL prefixes followed by a device token (the device API's base paths):
    the path segment after them is masked too, whatever the token (provisioned ones included).
    """

    def __init__(self, secrets: Iterable[str], token_paths: Iterable[str] = ()) -> None:
        super().__init__()
        self.secrets: list[str] = []
        self._prefixes: set[str] = set()
        self._paths: re.Pattern[str] | None = None
        self.extend(secrets, token_paths)

    def extend(self, secrets: Iterable[str], token_paths: Iterable[str] = ()) -> None:
        """Mask these secrets and token paths as well from now on (a reload brought new ones)."""
        found = set(self.secrets) | {s for s in secrets if s and len(s) >= 3}
        self._prefixes |= {p.rstrip("/") for p in token_paths if p and p.strip("/")}
        prefixes = sorted(self._prefixes, key=len, reverse=True)
        self._paths = (re.compile("(" + "|".join(re.escape(p) for p in prefixes) + r")/[^/\s?#\"']+")
                       if prefixes else None)
        self.secrets = sorted(found, key=len, reverse=True)  # one assignment: a record sees old or new list

    def mask(self, text: str) -> str:
        """``text`` with every secret and device-token path segment replaced by ``***``."""
        for secret in self.secrets:
            if secret in text:
                text = text.replace(secret, "***")
        if self._paths is not None:
            text = self._paths.sub(r"\1/***", text)
        return text

    def filter(self, record: logging.LogRecord) -> bool:
        if not self.secrets and self._paths is None:
            return True
        message = record.getMessage()
        masked = self.mask(message)
        if masked != message:
            record.msg, record.args = masked, None
        return True


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message, connector, endpoint and client where known.

    Exception tracebacks go into ``exception`` and are masked like the message.
    """

    def __init__(self, mask: SecretMask) -> None:
        super().__init__()
        self._mask = mask

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, object] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds")
            .replace("+00:00", "Z"),
            "level": record.levelname,
            "logger": record.name,
            "message": self._mask.mask(record.getMessage()),
        }
        connector = getattr(record, "connector", None)
        if connector is None:
            match = _CONNECTOR_LOGGER.match(record.name)
            connector = match.group(1) if match else None
        if connector is not None:
            entry["connector"] = connector
        for key in ("endpoint", "client"):  # client: the request's client address (trustedProxies applied)
            value = getattr(record, key, None)
            if value is not None:
                entry[key] = value
        if record.exc_info:
            entry["exception"] = self._mask.mask(self.formatException(record.exc_info))
        elif record.exc_text:
            entry["exception"] = self._mask.mask(record.exc_text)
        return json.dumps(entry, ensure_ascii=False, default=str)


class MaskedTextFormatter(logging.Formatter):
    """The text format, with tracebacks masked as well as messages."""

    def __init__(self, mask: SecretMask) -> None:
        super().__init__(LOG_FORMAT)
        self._mask = mask

    def formatException(self, ei: object) -> str:  # noqa: N802 (logging's name)
        return self._mask.mask(super().formatException(ei))  # type: ignore[arg-type]


def setup_logging(level: str, secrets: Iterable[str] = (), fmt: str = "text",
                  token_paths: Iterable[str] = ()) -> None:
    """Log to stderr at ``level`` in ``fmt`` (``text`` or ``json``) with secrets masked."""
    handler = logging.StreamHandler(sys.stderr)
    mask = SecretMask(secrets, token_paths)
    handler.setFormatter(JsonFormatter(mask) if fmt == "json" else MaskedTextFormatter(mask))
    handler.addFilter(mask)
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(getattr(logging, level.upper(), logging.INFO))
    logging.getLogger("waitress.queue").setLevel(logging.ERROR)


def mask_more(secrets: Iterable[str], token_paths: Iterable[str] = ()) -> None:
    """Make the installed log masks hide these secrets and token paths too (after a reload)."""
    for handler in logging.getLogger().handlers:
        for item in handler.filters:
            if isinstance(item, SecretMask):
                item.extend(secrets, token_paths)


def set_level(level: str) -> None:
    """Log at ``level`` from now on (a reload changed logLevel)."""
    logging.getLogger().setLevel(getattr(logging, level.upper(), logging.INFO))
