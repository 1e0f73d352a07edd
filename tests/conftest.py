"""Shared pytest setup: the repo on sys.path and the broker/daemon fixtures."""
import importlib.util
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

pytest_plugins = [name for name in ("tests.fixtures.leaks", "tests.fixtures.broker", "tests.fixtures.daemon")
                  if importlib.util.find_spec(name) is not None]
