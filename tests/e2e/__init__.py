"""End-to-end tests: the daemon as a real process, a real broker and subscriber."""
