"""The converter base class: the one interface a plugin author implements (API version 1).

A converter turns the data of one HTTP request into :class:`~converters.model.ConvertedData`.
It is created once, at startup, with the ``converter`` section of its ``mapping`` entry, and
``convert`` may be called from several server threads at once: keep per-request state local.
"""
from __future__ import annotations

import logging
from abc import ABC, abstractmethod
from typing import Any

from converters.model import ConvertedData

CONVERTER_API_VERSION = 1

RequestData = dict[str, Any] | bytes
ConvertResult = ConvertedData | list[ConvertedData] | dict[str, Any] | list[dict[str, Any]] | None


class ConversionError(ValueError):
    """Raised by a converter for a message it cannot convert; the device gets 400 with this text."""


class Converter(ABC):
    """Base class for uplink converters.

    Subclasses implement :meth:`convert`. Set ``raw_body = True`` on the class to always receive the
    request body as ``bytes`` instead of the parsed request data.
    """

    api_version: int = CONVERTER_API_VERSION
    raw_body: bool = False

    def __init__(self, config: dict[str, Any], logger: logging.Logger | None = None) -> None:
        self.config = config
        self.log = logger or logging.getLogger(f"converters.{type(self).__name__}")

    @abstractmethod
    def convert(self, config: dict[str, Any], data: RequestData) -> ConvertResult:
        """Convert one request's data.

        ``config`` is the mapping's ``converter`` section; ``data`` is a dict holding the JSON
        object body (or the form fields), with query-string parameters and path variables merged
        in (body keys win), or the raw body ``bytes`` when the body is neither JSON nor a form.

        Return a :class:`ConvertedData`, a list of them, ``None`` for nothing to send, or the
        ThingsBoard gateway's legacy dict (``deviceName``, ``deviceType``, ``attributes`` and
        ``telemetry`` lists), which is adapted. Raise :class:`ConversionError` to reject the
        message with a 400.
        """
