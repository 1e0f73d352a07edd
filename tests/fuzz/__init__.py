"""Fuzz tests: hypothesis-generated hostile input against the HTTP side, the MQTT side and the config loader."""
