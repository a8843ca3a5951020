"""A fast loopback webhook receiver for the benchmark, and a load client that measures it.

The receiver is a bare ``asyncio.Protocol`` HTTP/1.1 server (keep-alive, Content-Length
bodies) in its own process, so that it costs the service as little CPU as possible and
never becomes the bottleneck. It records, for every request, its arrival time
(``time.time()``), its ``webhook-id`` header, its path and the status it answered.

Paths say how to answer: ``/<tag>/<mode>/<index>``

- ``ok``: 200 at once.
- ``hang``: never answers; the connection is closed after HANG_SECONDS unless the
  sender gives up first (a receiver that hangs until the sender's timeout).
- ``flaky``: 500 until the fail-until time set for the tag, 200 afterwards.

Control routes (GET), answered as JSON:

- ``/_bench/count?tag=T``: ``{"count": n, "ok": n2xx}`` for paths under ``/T/``.
- ``/_bench/records?tag=T``: ``[[time, webhook_id, path, status], ...]``.
- ``/_bench/fail?tag=T&until=EPOCH``: ``flaky`` paths of T answer 500 until EPOCH.
- ``/_bench/reset?tag=T``: forget T's records.

Run: ``python -m tests.bench.receiver serve --port 9100`` (prints ``ready <port>``), and
``python -m tests.bench.receiver load --port 9100 --seconds 3`` to measure it.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import signal
import socket
import sys
import time
from urllib.parse import parse_qs

# A hung request is held at most this long; the service's deadline (5 s in the slow
# receivers scenario) cuts it long before.
HANG_SECONDS = 60.0

_OK = b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 2\r\n\r\nok"
_OK_CLOSE = (
    b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 2\r\n"
    b"Connection: close\r\n\r\nok"
)
_FAIL = (
    b"HTTP/1.1 500 Internal Server Error\r\nContent-Type: text/plain\r\n"
    b"Content-Length: 4\r\n\r\nfail"
)
_FAIL_CLOSE = (
    b"HTTP/1.1 500 Internal Server Error\r\nContent-Type: text/plain\r\n"
    b"Content-Length: 4\r\nConnection: close\r\n\r\nfail"
)
_BAD = b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"


class _State:
    """Everything the receiver remembers, shared by its connections (one event loop)."""

    def __init__(self) -> None:
        self.records: dict[bytes, list[tuple[float, bytes, bytes, int]]] = {}
        self.counts: dict[bytes, list[int]] = {}
        self.fail_until: dict[bytes, float] = {}
        self.connections = 0
        self.hung = 0

    def record(self, tag: bytes, at: float, webhook_id: bytes, path: bytes, status: int) -> None:
        rows = self.records.get(tag)
        if rows is None:
            rows = self.records[tag] = []
            self.counts[tag] = [0, 0]
        rows.append((at, webhook_id, path, status))
        counts = self.counts[tag]
        counts[0] += 1
        if 200 <= status < 300:
            counts[1] += 1

    def control(self, target: bytes) -> bytes:
        path, _, query = target.decode("latin-1").partition("?")
        args = {k: v[0] for k, v in parse_qs(query).items()}
        tag = args.get("tag", "").encode()
        if path == "/_bench/count":
            count, ok = self.counts.get(tag, (0, 0))
            body: object = {
                "count": count,
                "ok": ok,
                "connections": self.connections,
                "hung": self.hung,
            }
        elif path == "/_bench/records":
            body = [
                [at, wid.decode("latin-1"), p.decode("latin-1"), status]
                for at, wid, p, status in self.records.get(tag, ())
            ]
        elif path == "/_bench/fail":
            self.fail_until[tag] = float(args.get("until", "0"))
            body = {"tag": tag.decode(), "until": self.fail_until[tag]}
        elif path == "/_bench/reset":
            self.records.pop(tag, None)
            self.counts.pop(tag, None)
            body = {"reset": tag.decode()}
        else:
            return _BAD
        data = json.dumps(body, separators=(",", ":")).encode()
        return (
            b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: "
            + str(len(data)).encode()
            + b"\r\n\r\n"
            + data
        )


class _Connection(asyncio.Protocol):
    """One client connection: parse requests as they arrive and answer each at once."""

    def __init__(self, state: _State) -> None:
        self.state = state
        self.transport: asyncio.Transport | None = None
        self.buffer = b""
        self.hung = False
        self.hang_timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.state.connections += 1
        sock = transport.get_extra_info("socket")
        if sock is not None:
            # Answers are small and written whole: do not let Nagle hold them.
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def connection_lost(self, exc: Exception | None) -> None:
        self.state.connections -= 1
        if self.hang_timer is not None:
            self.hang_timer.cancel()
            self.state.hung -= 1

    def data_received(self, data: bytes) -> None:
        if self.hung:
            return
        buffer = self.buffer + data if self.buffer else data
        while True:
            end = buffer.find(b"\r\n\r\n")
            if end < 0:
                break
            lines = buffer[:end].split(b"\r\n")
            length = 0
            webhook_id = b""
            close = lines[0].endswith(b"HTTP/1.0")
            for line in lines[1:]:
                name, _, value = line.partition(b":")
                name = name.strip().lower()
                if name == b"content-length":
                    length = int(value)
                elif name == b"webhook-id":
                    webhook_id = value.strip()
                elif name == b"connection":
                    close = value.strip().lower() == b"close"
                elif name == b"transfer-encoding":
                    # Never sent by urllib3 or requests for a bytes body.
                    self.transport.write(_BAD)
                    self.transport.close()
                    return
            total = end + 4 + length
            if len(buffer) < total:
                break
            request_line = lines[0].split(b" ")
            target = request_line[1] if len(request_line) > 2 else b"/"
            buffer = buffer[total:]
            self._answer(target, webhook_id, close)
            if self.hung:
                buffer = b""
                break
        self.buffer = buffer

    def _answer(self, target: bytes, webhook_id: bytes, close: bool) -> None:
        state = self.state
        if target.startswith(b"/_bench/"):
            self.transport.write(state.control(target))
            return
        parts = target.split(b"/", 3)
        tag = parts[1] if len(parts) > 1 else b""
        mode = parts[2] if len(parts) > 2 else b"ok"
        now = time.time()
        if mode == b"hang":
            state.record(tag, now, webhook_id, target, 0)
            self.hung = True
            state.hung += 1
            self.hang_timer = asyncio.get_running_loop().call_later(
                HANG_SECONDS, self.transport.close
            )
            return
        if mode == b"flaky" and now < state.fail_until.get(tag, 0.0):
            state.record(tag, now, webhook_id, target, 500)
            self.transport.write(_FAIL_CLOSE if close else _FAIL)
        else:
            state.record(tag, now, webhook_id, target, 200)
            self.transport.write(_OK_CLOSE if close else _OK)
        if close:
            self.transport.close()


async def serve(host: str, port: int) -> None:
    """Run the receiver until SIGTERM or SIGINT."""
    loop = asyncio.get_running_loop()
    state = _State()
    server = await loop.create_server(
        lambda: _Connection(state), host, port, backlog=4096, reuse_address=True
    )
    stop = loop.create_future()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, lambda: stop.done() or stop.set_result(None))
    bound = server.sockets[0].getsockname()[1]
    print(f"ready {bound}", flush=True)
    async with server:
        await stop


# ---- the load client that measures the receiver's capacity ------------------------------

_BODY = json.dumps(
    {
        "id": "evt-0123456789abcdef",
        "type": "sandbox.created",
        "timestamp": "2025-12-19T10:30:00.000Z",
        "data": {"sandbox_id": "sandbox123", "organization_id": "org-x", "status": "running"},
    }
).encode()


def _request(host: str, port: int, tag: str, *, close: bool) -> bytes:
    headers = (
        f"POST /{tag}/ok/0 HTTP/1.1\r\nHost: {host}:{port}\r\n"
        "Content-Type: application/json\r\nwebhook-id: evt-load\r\n"
        f"Content-Length: {len(_BODY)}\r\n"
    )
    if close:
        headers += "Connection: close\r\n"
    return (headers + "\r\n").encode() + _BODY


class _LoadConnection(asyncio.Protocol):
    """Sends one request, waits for the whole answer, sends the next, until the end time."""

    def __init__(self, request: bytes, end: float, counter: list[int], done: asyncio.Future):
        self.request = request
        self.end = end
        self.counter = counter
        self.done = done
        self.pending = b""
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        transport.write(self.request)  # type: ignore[attr-defined]

    def data_received(self, data: bytes) -> None:
        self.pending += data
        # The receiver's answers to /ok/ are exactly _OK.
        while len(self.pending) >= len(_OK):
            self.pending = self.pending[len(_OK) :]
            self.counter[0] += 1
            if time.monotonic() >= self.end:
                self.transport.close()
                return
            self.transport.write(self.request)

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.done.done():
            self.done.set_result(None)


async def _load_keepalive(host: str, port: int, connections: int, seconds: float) -> int:
    loop = asyncio.get_running_loop()
    counter = [0]
    end = time.monotonic() + seconds
    request = _request(host, port, "cap", close=False)
    waits = []
    for _ in range(connections):
        done = loop.create_future()
        await loop.create_connection(
            lambda d=done: _LoadConnection(request, end, counter, d), host, port
        )
        waits.append(done)
    await asyncio.wait_for(asyncio.gather(*waits), seconds + 10)
    return counter[0]


async def _load_new_connections(host: str, port: int, connections: int, seconds: float) -> int:
    count = 0
    end = time.monotonic() + seconds
    request = _request(host, port, "cap", close=True)

    async def one_client() -> None:
        nonlocal count
        while time.monotonic() < end:
            reader, writer = await asyncio.open_connection(host, port)
            writer.write(request)
            await reader.read()  # until the receiver closes
            writer.close()
            count += 1

    await asyncio.gather(*(one_client() for _ in range(connections)))
    return count


def measure(host: str, port: int, *, connections: int, seconds: float, new_conn: bool) -> float:
    """Requests per second the receiver answered to this (single-process) client."""
    started = time.monotonic()
    if new_conn:
        count = asyncio.run(_load_new_connections(host, port, connections, seconds))
    else:
        count = asyncio.run(_load_keepalive(host, port, connections, seconds))
    return count / (time.monotonic() - started)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.bench.receiver")
    sub = parser.add_subparsers(dest="command", required=True)
    serve_cmd = sub.add_parser("serve", help="run the receiver")
    serve_cmd.add_argument("--host", default="127.0.0.1")
    serve_cmd.add_argument("--port", type=int, default=0)
    load_cmd = sub.add_parser("load", help="measure a running receiver's capacity")
    load_cmd.add_argument("--host", default="127.0.0.1")
    load_cmd.add_argument("--port", type=int, required=True)
    load_cmd.add_argument("--connections", type=int, default=64)
    load_cmd.add_argument("--seconds", type=float, default=3.0)
    load_cmd.add_argument("--new-conn", action="store_true", help="one connection per request")
    args = parser.parse_args(argv)
    if args.command == "serve":
        with contextlib.suppress(KeyboardInterrupt):
            asyncio.run(serve(args.host, args.port))
        return 0
    rate = measure(
        args.host,
        args.port,
        connections=args.connections,
        seconds=args.seconds,
        new_conn=args.new_conn,
    )
    print(json.dumps({"requests_per_second": rate, "pid": os.getpid()}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
