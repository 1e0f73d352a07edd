"""rest-gateway test suite."""
