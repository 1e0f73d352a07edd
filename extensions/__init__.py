"""Custom converters bundled with rest-gateway, loaded by name from a mapping's converter config."""
