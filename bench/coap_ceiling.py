"""The CoAP ceiling for bench/coap.py: bare aiocoap with one trivial resource that answers every POST 2.01.

``--lean`` runs it with the gateway's own aiocoap Context (no per-request task name), which is how
the gateway runs aiocoap; without it, aiocoap exactly as shipped.
"""
from __future__ import annotations

import argparse
import asyncio
import os
import sys

import aiocoap
from aiocoap import resource
from aiocoap.numbers.codes import Code

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


class Created(resource.Resource):
    """Every path, every POST: 2.01 with no payload."""

    async def render_post(self, request: aiocoap.Message) -> aiocoap.Message:
        return aiocoap.Message(code=Code.CREATED)


async def serve(host: str, port: int, lean: bool) -> None:
    context_class: type[aiocoap.Context] = aiocoap.Context
    if lean:
        from connectors.rest.device_api.coap.server import _Context

        context_class = _Context
    await context_class.create_server_context(Created(), bind=(host, port), transports=["udp6"])
    print("listening", flush=True)
    await asyncio.get_running_loop().create_future()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--lean", action="store_true")
    args = parser.parse_args()
    asyncio.run(serve(args.host, args.port, args.lean))


if __name__ == "__main__":
    main()
