"""Public, stable surface for plugin authors: the converter base class and the converted-data model."""
from converters.base import CONVERTER_API_VERSION, ConversionError, Converter
from converters.model import ConvertedData, SkippedValue, TelemetryEntry

__all__ = ["CONVERTER_API_VERSION", "ConversionError", "Converter", "ConvertedData", "SkippedValue", "TelemetryEntry"]
