"""A real HTTP receiver on loopback that records every request it gets."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


@dataclass
class Received:
    """One request as the receiver saw it."""

    method: str
    path: str
    headers: dict[str, str]
    body: bytes
    at: float

    def json(self) -> object:
        return json.loads(self.body)


@dataclass
class Reply:
    """What the receiver answers: status, body, headers, and an optional delay."""

    status: int = 200
    body: bytes = b"ok"
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0


class Receiver:
    """A ThreadingHTTPServer on 127.0.0.1 with a programmable answer."""

    def __init__(self) -> None:
        self.requests: list[Received] = []
        self._lock = threading.Lock()
        self._cond = threading.Condition(self._lock)
        self.responder: Callable[[Received], Reply] = lambda _r: Reply()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *_args) -> None:
                pass

            def do_POST(self) -> None:  # noqa: N802 - http.server's naming
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length)
                got = Received(
                    "POST",
                    self.path,
                    {k.lower(): v for k, v in self.headers.items()},
                    body,
                    time.time(),
                )
                with receiver._cond:
                    receiver.requests.append(got)
                    receiver._cond.notify_all()
                reply = receiver.responder(got)
                if reply.delay:
                    time.sleep(reply.delay)
                try:
                    self.send_response(reply.status)
                    for key, value in reply.headers.items():
                        self.send_header(key, value)
                    self.send_header("Content-Length", str(len(reply.body)))
                    self.end_headers()
                    self.wfile.write(reply.body)
                except (BrokenPipeError, ConnectionResetError):
                    pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self._thread.start()

    def reply(self, status: int = 200, body: bytes = b"ok", **kwargs) -> None:
        """Answer every request the same way from now on."""
        fixed = Reply(status=status, body=body, **kwargs)
        self.responder = lambda _r: fixed

    def wait_for(self, count: int, timeout: float = 20.0) -> list[Received]:
        """Block until ``count`` requests arrived (AssertionError on timeout)."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while len(self.requests) < count:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(
                        f"receiver got {len(self.requests)} requests, expected {count}"
                    )
                self._cond.wait(left)
            return list(self.requests)

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
