"""The ceiling of our stack: a bare Flask app on waitress that reads the body and answers 200."""
from __future__ import annotations

import argparse

from flask import Flask, Response, request
from waitress.server import create_server


def create_app() -> Flask:
    """One catch-all POST route with the gateway's request shape: read the whole body, answer 200."""
    app = Flask("ceiling")

    @app.route("/", defaults={"path": ""}, methods=["POST", "GET"])
    @app.route("/<path:path>", methods=["POST", "GET"])
    def accept(path: str) -> Response:
        request.get_data(cache=False)
        return Response(b'{"stored":1}', status=200, mimetype="application/json")

    return app


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--threads", type=int, default=8)
    parser.add_argument("--connection-limit", type=int, default=1000)
    args = parser.parse_args()
    server = create_server(create_app(), host=args.host, port=args.port, threads=args.threads,
                           connection_limit=args.connection_limit, ident="ceiling")
    server.run()


if __name__ == "__main__":
    main()
