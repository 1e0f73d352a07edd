"""Public, stable surface for plugin authors: the converter base class and the converted-data model."""
from converters.base import CONVERTER_API_VERSION, Converter
from converters.model import ConvertedData, SkippedValue, TelemetryEntry

__all__ = ["CONVERTER_API_VERSION", "Converter", "ConvertedData", "SkippedValue", "TelemetryEntry"]
