"""Converter golden-folder tests."""
