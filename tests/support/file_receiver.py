"""A webhook receiver in a process of its own that writes one line per request to a file.

For receivers the test process cannot reach in memory (one in another network
namespace): each line is ``<arrival time> <sender address> <webhook-id>``, flushed at
once. Run: ``python -m tests.support.file_receiver <host> <port> <file> [<delay>]``; each
answer waits ``delay`` seconds, so that senders have posts in flight.
"""

from __future__ import annotations

import sys
import threading
import time
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path


def read_receipts(path: Path) -> list[tuple[float, str, str]]:
    """(time, sender address, webhook-id) of every complete line written so far."""
    if not path.exists():
        return []
    found = []
    for line in path.read_text().splitlines():
        parts = line.split()
        if len(parts) == 3:
            found.append((float(parts[0]), parts[1], parts[2]))
    return found


def count_by_id(path: Path) -> Counter:
    """How many times each webhook-id arrived."""
    return Counter(webhook_id for _at, _sender, webhook_id in read_receipts(path))


def serve(host: str, port: int, path: Path, delay: float = 0.0) -> None:
    """Answer 200 to every POST after ``delay`` seconds, recording it first."""
    out = path.open("a", buffering=1)
    lock = threading.Lock()

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *_args) -> None:
            pass

        def do_POST(self) -> None:  # noqa: N802 - http.server's naming
            self.rfile.read(int(self.headers.get("Content-Length") or 0))
            webhook_id = self.headers.get("webhook-id") or "-"
            with lock:
                out.write(f"{time.time():.3f} {self.client_address[0]} {webhook_id}\n")
            if delay:
                time.sleep(delay)
            self.send_response(200)
            self.send_header("Content-Length", "2")
            self.end_headers()
            self.wfile.write(b"ok")

    server = ThreadingHTTPServer((host, port), Handler)
    server.daemon_threads = True
    print(f"ready {host}:{port}", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    serve(
        sys.argv[1],
        int(sys.argv[2]),
        Path(sys.argv[3]),
        float(sys.argv[4]) if len(sys.argv) > 4 else 0.0,
    )
