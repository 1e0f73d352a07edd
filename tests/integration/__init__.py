"""Integration tests: real broker, real threads, in-process components."""
