"""The RPC benchmark's local HTTP target: answers every request at once with its body echoed back as JSON."""
from __future__ import annotations

import argparse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class EchoHandler(BaseHTTPRequestHandler):
    """Keep-alive HTTP/1.1; the whole answer goes out in one write (no Nagle/delayed-ACK stalls)."""

    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True

    def _answer(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length > 0 else b""
        if not body.strip():
            body = b'{"ok":true}'
        head = (f"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {len(body)}\r\n"
                "\r\n").encode("ascii")
        self.wfile.write(head + body)

    do_GET = do_POST = do_PUT = _answer

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - the base class's name
        """Silent: a log line per request would cost more than the answer."""


class EchoServer(ThreadingHTTPServer):
    """One thread per connection; a deep accept backlog for 100 clients connecting at once."""

    daemon_threads = True
    request_queue_size = 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    server = EchoServer((args.host, args.port), EchoHandler)
    try:
        server.serve_forever(poll_interval=0.5)
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()


if __name__ == "__main__":
    main()
