"""Entry point for ``python -m gateway`` (same as the ``rest-gateway`` command)."""
import sys

from gateway.cli import main

sys.exit(main())
