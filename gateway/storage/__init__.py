"""Durable event storage between the connectors and the MQTT sender (sqlite by default, or memory)."""
