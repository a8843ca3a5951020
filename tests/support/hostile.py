"""Hostile receivers: raw loopback TCP servers that answer however a test scripts them."""

from __future__ import annotations

import socket
import threading
import time
import zlib
from collections.abc import Callable

Script = Callable[[socket.socket, "HostileReceiver"], None]


class HostileReceiver:
    """A loopback server running ``script(conn, server)`` for each connection."""

    def __init__(self, script: Script) -> None:
        self.script = script
        self.listener = socket.create_server(("127.0.0.1", 0), backlog=64)
        self.listener.settimeout(0.05)
        self.port = self.listener.getsockname()[1]
        self.url = self.address()
        self.requests: list[bytes] = []
        self.connections = 0
        self.stopped = threading.Event()
        self._lock = threading.Lock()
        threading.Thread(target=self._serve, daemon=True).start()

    def address(self, path: str = "/hook", scheme: str = "http") -> str:
        """The URL of this server with another path or scheme."""
        return f"{scheme}://127.0.0.1:{self.port}{path}"

    def _serve(self) -> None:
        while not self.stopped.is_set():
            try:
                conn, _ = self.listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            with self._lock:
                self.connections += 1
            threading.Thread(target=self._handle, args=(conn,), daemon=True).start()

    def _handle(self, conn: socket.socket) -> None:
        conn.settimeout(30)
        try:
            self.script(conn, self)
        except OSError:
            pass  # the client hung up on us, which is what a deadline does
        finally:
            conn.close()

    def read_request(self, conn: socket.socket) -> bytes | None:
        """One request (head and Content-Length body), recorded; None at EOF."""
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = conn.recv(65536)
            if not chunk:
                return None
            data += chunk
        head, _, body = data.partition(b"\r\n\r\n")
        length = 0
        for line in head.split(b"\r\n")[1:]:
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length":
                length = int(value)
        while len(body) < length:
            chunk = conn.recv(65536)
            if not chunk:
                break
            body += chunk
        with self._lock:
            self.requests.append(head + b"\r\n\r\n" + body)
        return head + b"\r\n\r\n" + body

    def close(self) -> None:
        self.stopped.set()
        self.listener.close()


def trickle_body(conn: socket.socket, server: HostileReceiver) -> None:
    """200 OK promising 100 bytes, then one byte a second: never done before any deadline."""
    server.read_request(conn)
    conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n")
    while not server.stopped.is_set():
        conn.sendall(b"x")
        time.sleep(1)


def trickle_headers(conn: socket.socket, server: HostileReceiver) -> None:
    """A status line and then one header byte a second: the answer never starts."""
    server.read_request(conn)
    conn.sendall(b"HTTP/1.1 200 OK\r\n")
    while not server.stopped.is_set():
        conn.sendall(b"X")
        time.sleep(1)


def hang(conn: socket.socket, server: HostileReceiver) -> None:
    """Read the request and never answer."""
    server.read_request(conn)
    server.stopped.wait(60)


def huge_body(conn: socket.socket, server: HostileReceiver) -> None:
    """200 OK with a 10 MB body, sent as fast as the client reads it."""
    server.read_request(conn)
    size = 10 * 1024 * 1024
    conn.sendall(f"HTTP/1.1 200 OK\r\nContent-Length: {size}\r\n\r\n".encode())
    block = b"A" * 65536
    for _ in range(size // len(block)):
        conn.sendall(block)


def gzip_bomb(conn: socket.socket, server: HostileReceiver) -> None:
    """200 OK with ~1 MB of gzip that inflates to 1 GB."""
    server.read_request(conn)
    body = gzip_bomb_body()
    conn.sendall(
        b"HTTP/1.1 200 OK\r\nContent-Encoding: gzip\r\n"
        + f"Content-Length: {len(body)}\r\n\r\n".encode()
        + body
    )
    server.stopped.wait(5)


_BOMB: list[bytes] = []


def gzip_bomb_body() -> bytes:
    """1 GiB of "a" as gzip (about 1 MB), built once."""
    if not _BOMB:
        zeros = b"a" * (1024 * 1024)
        compressor = zlib.compressobj(9, zlib.DEFLATED, 31)  # wbits 31: gzip framing
        _BOMB.append(b"".join(compressor.compress(zeros) for _ in range(1024)) + compressor.flush())
    return _BOMB[0]


def redirect(status: str, location: str) -> Script:
    """Answer every request with a redirect to location."""

    def script(conn: socket.socket, server: HostileReceiver) -> None:
        while server.read_request(conn) is not None:
            conn.sendall(
                f"HTTP/1.1 {status}\r\nLocation: {location}\r\nContent-Length: 0\r\n\r\n".encode()
            )

    return script
