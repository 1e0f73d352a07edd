"""The gateway device's own statistics telemetry to ThingsBoard (``statistics`` in gateway.yaml)."""
