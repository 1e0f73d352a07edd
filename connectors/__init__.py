"""Connectors: each package here bridges one device protocol to the gateway (see connectors/base.py)."""
