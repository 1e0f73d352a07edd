"""rest-gateway daemon: CLI, config loading, lifecycle, ThingsBoard MQTT client and durable storage."""
__version__ = "0.1.0"
