"""The delivery HTTP client: one POST per attempt, safe against hostile receivers.

Every attempt has a total deadline (DNS, connect, TLS, request, headers and body),
keeps at most `max_body` decoded bytes of the answer, never follows a redirect, and
connects only to addresses the SSRF guard (`shared.targets`) lets through, checked
on the address actually dialled so DNS rebinding cannot pass.
"""

from __future__ import annotations

import codecs
import contextlib
import contextvars
import email.utils
import heapq
import http.client
import ipaddress
import itertools
import os
import re
import socket
import ssl
import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime

import urllib3
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool
from urllib3.exceptions import (
    ConnectTimeoutError,
    DecodeError,
    IncompleteRead,
    LocationParseError,
    ProtocolError,
    ReadTimeoutError,
    SSLError,
    URLSchemeUnknown,
)
from urllib3.exceptions import HTTPError as Urllib3Error
from urllib3.util import Timeout

from shared.targets import (
    AllowList,
    IPAddress,
    is_blocked_address,
    is_localhost_name,
    parse_host_ip,
    resolve_host,
)

# Hosts whose idle connections are kept; beyond this the least recently used
# host's pool is closed. Sized for many endpoints per worker process.
_NUM_POOLS = 256

_RETRY_AFTER_SECONDS = re.compile(r"-?[0-9]+(\.[0-9]+)?")


@dataclass
class AttemptResult:
    """What one delivery attempt got: a status and body, or an error text, or both."""

    status_code: int | None
    response_body: str | None
    error: str | None
    duration_ms: int
    retry_after: float | None = None

    @property
    def ok(self) -> bool:
        """A 2xx answer and no error (a body cut at the size cap still counts)."""
        return (
            self.error is None and self.status_code is not None and (200 <= self.status_code < 300)
        )


class _AttemptFailed(Exception):
    """A failure with its final, human-readable text (raised inside urllib3 untouched)."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class _DeadlineExceeded(Exception):
    """The attempt's total deadline passed before a step could start or finish."""


class _Attempt:
    """One post's deadline, and the sockets the watchdog cuts when it passes."""

    def __init__(self, *, allow: AllowList, timeout: float) -> None:
        self.allow = allow
        self.timeout = timeout
        self.deadline = time.monotonic() + timeout
        self.phase = "connecting"
        self.expired = False
        self.finished = False
        self._lock = threading.Lock()
        self._handles: list[socket.socket] = []

    def remaining(self) -> float:
        """Seconds left before the deadline (negative once it has passed)."""
        return self.deadline - time.monotonic()

    def watch(self, sock: socket.socket) -> None:
        """Let the watchdog shut sock down if the deadline passes during this attempt."""
        # A duplicate descriptor, because TLS wrapping detaches the original socket
        # object, and shutdown() on any descriptor ends the one TCP connection.
        handle = socket.fromfd(sock.fileno(), sock.family, sock.type)
        with self._lock:
            if not self.finished and not self.expired:
                self._handles.append(handle)
                return
            cut = self.expired and not self.finished
        if cut:
            _shutdown(handle)
        handle.close()

    def expire(self) -> None:
        """Called by the watchdog at the deadline: cut every socket still in use."""
        with self._lock:
            # Once finished, the connection may already serve another attempt.
            if self.finished:
                return
            self.expired = True
            for handle in self._handles:
                _shutdown(handle)

    def finish(self) -> bool:
        """Stop watching (before the connection returns to the pool); True if it expired."""
        with self._lock:
            self.finished = True
            handles, self._handles = self._handles, []
        for handle in handles:
            handle.close()
        return self.expired

    def timeout_message(self) -> str:
        """The error text of an attempt cut by its deadline."""
        return f"timeout after {float(self.timeout)}s ({self.phase})"


def _shutdown(sock: socket.socket) -> None:
    """Shut a socket down both ways, waking any thread blocked on it."""
    # OSError: already closed by the peer or by us.
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_RDWR)


class _Watchdog:
    """One daemon thread that cuts the sockets of attempts whose deadline has passed.

    urllib3's timeouts are per socket operation, so a receiver trickling one byte at
    a time never trips them; shutting the socket down at the deadline does.
    """

    def __init__(self) -> None:
        self._reset()

    def _reset(self) -> None:
        # Also run in a forked child (Celery prefork), where the thread is gone.
        self._cond = threading.Condition()
        self._heap: list[tuple[float, int, _Attempt]] = []
        self._counter = itertools.count()
        self._thread: threading.Thread | None = None
        self._finished = 0

    def add(self, attempt: _Attempt) -> None:
        """Watch attempt until its deadline or until it finishes."""
        with self._cond:
            entry = (attempt.deadline, next(self._counter), attempt)
            heapq.heappush(self._heap, entry)
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(
                    target=self._run, name="delivery-watchdog", daemon=True
                )
                self._thread.start()
            if self._heap[0] is entry:
                self._cond.notify()

    def discard(self, attempt: _Attempt) -> None:
        """Note that attempt finished; compact the heap when most entries are done."""
        with self._cond:
            self._finished += 1
            # Finished entries wait for their deadline (up to minutes) unless dropped.
            if self._finished > 1024 and self._finished * 2 > len(self._heap):
                self._heap = [entry for entry in self._heap if not entry[2].finished]
                heapq.heapify(self._heap)
                self._finished = 0

    def _run(self) -> None:
        while True:
            with self._cond:
                while True:
                    while self._heap and self._heap[0][2].finished:
                        heapq.heappop(self._heap)
                        self._finished = max(self._finished - 1, 0)
                    if not self._heap:
                        self._cond.wait()
                        continue
                    delay = self._heap[0][0] - time.monotonic()
                    if delay <= 0:
                        break
                    self._cond.wait(delay)
                _, _, attempt = heapq.heappop(self._heap)
            attempt.expire()


_WATCHDOG = _Watchdog()
if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_WATCHDOG._reset)

# The attempt a thread (or greenlet) is making, for the connection classes below,
# which urllib3 builds and calls without a way to pass per-request arguments.
_CURRENT_ATTEMPT: contextvars.ContextVar[_Attempt | None] = contextvars.ContextVar(
    "delivery_attempt", default=None
)


def _current_attempt() -> _Attempt:
    attempt = _CURRENT_ATTEMPT.get()
    if attempt is None:
        raise RuntimeError("delivery connections are opened only by DeliveryClient.post")
    return attempt


def _target_addresses(host: str, port: int, attempt: _Attempt) -> list[IPAddress]:
    """Resolve host within the deadline and refuse it if any address is blocked."""
    attempt.phase = "resolving the host"
    try:
        literal = parse_host_ip(host)
    except ValueError:
        raise _AttemptFailed(f"invalid host {host}") from None
    if literal is not None:
        addresses: list[IPAddress] = [literal]
    elif is_localhost_name(host):
        # RFC 6761: never ask DNS about localhost names.
        addresses = [ipaddress.IPv4Address("127.0.0.1")]
    else:
        remaining = attempt.remaining()
        if remaining <= 0:
            raise _DeadlineExceeded()
        try:
            addresses = resolve_host(host, port, timeout=remaining)
        except TimeoutError:
            raise _DeadlineExceeded() from None
        except (OSError, UnicodeError):
            raise _AttemptFailed(f"DNS lookup failed for host {host}") from None
        if not addresses:
            raise _AttemptFailed(f"DNS lookup failed for host {host}")
    # Every address, not just the first: the name's owner chooses their order.
    for address in addresses:
        if is_blocked_address(address) and not attempt.allow.allows(address):
            suffix = "" if literal is not None else f" (host {host})"
            raise _AttemptFailed(
                f"blocked target: {address} is a private or reserved address{suffix}"
            )
    return addresses


def _connect(
    addresses: list[IPAddress],
    port: int,
    attempt: _Attempt,
    socket_options: list[tuple[int, int, int | bytes]] | None,
) -> socket.socket:
    """Connect to the first checked address that answers, within the deadline."""
    attempt.phase = "connecting"
    last_error: OSError | None = None
    for address in addresses:
        remaining = attempt.remaining()
        if remaining <= 0:
            raise _DeadlineExceeded()
        family = socket.AF_INET6 if address.version == 6 else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        try:
            for option in socket_options or ():
                sock.setsockopt(*option)
            sock.settimeout(remaining)
            sock.connect((str(address), port))
        except TimeoutError:
            sock.close()
            raise _DeadlineExceeded() from None
        except OSError as exc:
            sock.close()
            last_error = exc
            continue
        return sock
    if isinstance(last_error, ConnectionRefusedError):
        raise _AttemptFailed("connection refused")
    reason = (last_error.strerror if last_error else None) or str(last_error)
    raise _AttemptFailed(f"connection failed: {reason}")


class _GuardedConnectionMixin:
    """Resolve, check and connect ourselves, so the address dialled is the one checked.

    The connection keeps the original hostname, so the Host header, SNI and the
    certificate check all still use it.
    """

    _dns_host: str
    port: int
    sock: socket.socket | None
    socket_options: list[tuple[int, int, int | bytes]] | None
    _next_phase = "sending the request"

    def _new_conn(self) -> socket.socket:
        attempt = _current_attempt()
        addresses = _target_addresses(self._dns_host, self.port, attempt)
        sock = _connect(addresses, self.port, attempt, self.socket_options)
        attempt.watch(sock)
        attempt.phase = self._next_phase
        return sock

    def request(self, *args: object, **kwargs: object) -> None:
        attempt = _current_attempt()
        if self.sock is not None:
            attempt.watch(self.sock)  # a pooled keep-alive connection
        attempt.phase = "sending the request"
        super().request(*args, **kwargs)  # type: ignore[misc]
        attempt.phase = "waiting for the response"


class _GuardedHTTPConnection(_GuardedConnectionMixin, HTTPConnection):
    pass


class _GuardedHTTPSConnection(_GuardedConnectionMixin, HTTPSConnection):
    _next_phase = "TLS handshake"


class _GuardedHTTPConnectionPool(HTTPConnectionPool):
    ConnectionCls = _GuardedHTTPConnection


class _GuardedHTTPSConnectionPool(HTTPSConnectionPool):
    ConnectionCls = _GuardedHTTPSConnection


def parse_retry_after(value: str | None) -> float | None:
    """Seconds to wait from a Retry-After header (delta-seconds or HTTP-date), >= 0."""
    if value is None:
        return None
    value = value.strip()
    if not value:
        return None
    if _RETRY_AFTER_SECONDS.fullmatch(value):
        return max(float(value), 0.0)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)  # HTTP-dates are GMT
    return max((when - datetime.now(UTC)).total_seconds(), 0.0)


def _decode_body(raw: bytes, *, truncated: bool) -> str:
    """Body bytes as storable text: UTF-8 with bad bytes replaced, NULs removed."""
    decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
    # A body cut at the cap may end inside a character: drop that half, not replace it.
    text = decoder.decode(raw, final=not truncated)
    return text.replace("\x00", "")


def _causes(exc: BaseException) -> list[BaseException]:
    """exc and what it wraps (urllib3 keeps the original in args or __cause__)."""
    chain: list[BaseException] = []
    pending: list[BaseException] = [exc]
    while pending and len(chain) < 10:
        current = pending.pop(0)
        if current in chain:
            continue
        chain.append(current)
        pending.extend(arg for arg in current.args if isinstance(arg, BaseException))
        for linked in (current.__cause__, current.__context__):
            if linked is not None:
                pending.append(linked)
    return chain


def _describe_error(exc: BaseException) -> str:
    """A human-readable text for a transport or protocol failure."""
    chain = _causes(exc)

    def find(kind: type[BaseException] | tuple[type[BaseException], ...]) -> BaseException | None:
        return next((item for item in chain if isinstance(item, kind)), None)

    if find((ReadTimeoutError, ConnectTimeoutError, TimeoutError)) is not None:
        return "timeout"  # replaced with the full timeout text by the caller
    tls = find((ssl.SSLError, ssl.CertificateError))
    if tls is not None or isinstance(exc, SSLError):
        verify = getattr(tls, "verify_message", None)
        if verify:
            return f"TLS error: certificate verify failed: {verify}"
        detail = getattr(tls, "strerror", None) or str(tls or exc)
        # OpenSSL's source location ("(_ssl.c:1006)") means nothing to a reader.
        return "TLS error: " + re.sub(r"\s*\(_ssl\.c:\d+\)$", "", detail)
    if find(http.client.RemoteDisconnected) is not None:
        return "connection closed by the receiver without a response"
    if find(ConnectionResetError) is not None:
        return "connection reset by the receiver"
    if find((http.client.IncompleteRead, IncompleteRead)) is not None:
        return "connection closed before the response body was complete"
    if isinstance(exc, DecodeError):
        return "protocol error: response body could not be decoded (bad Content-Encoding)"
    if isinstance(exc, LocationParseError):
        return f"invalid URL: {exc}"
    if isinstance(exc, URLSchemeUnknown):
        return "invalid URL: scheme must be http or https"
    http_error = find(http.client.HTTPException)
    if http_error is not None:
        return f"protocol error: {type(http_error).__name__} {http_error}".rstrip()
    if isinstance(exc, ProtocolError):
        return f"protocol error: {exc.args[0] if exc.args else exc}"
    os_error = find(OSError)
    if os_error is not None:
        return f"connection error: {getattr(os_error, 'strerror', None) or os_error}"
    return f"request failed: {exc}"


class DeliveryClient:
    """Posts webhook attempts; thread-safe, with connections pooled per host."""

    def __init__(
        self,
        *,
        allow: AllowList,
        user_agent: str,
        max_body: int = 4096,
        pool_maxsize: int = 100,
    ) -> None:
        self._allow = allow
        self._user_agent = user_agent
        self._max_body = max_body
        # block=False: a burst beyond pool_maxsize opens extra connections and
        # closes them afterwards rather than making attempts queue for a slot.
        self._pool = urllib3.PoolManager(
            num_pools=_NUM_POOLS, maxsize=pool_maxsize, block=False, retries=False
        )
        self._pool.pool_classes_by_scheme = {
            "http": _GuardedHTTPConnectionPool,
            "https": _GuardedHTTPSConnectionPool,
        }

    def close(self) -> None:
        """Close every pooled connection."""
        self._pool.clear()

    def post(
        self, url: str, body: bytes, headers: dict[str, str], *, timeout: float
    ) -> AttemptResult:
        """POST body to url within a total deadline of timeout seconds; never raises for
        what the receiver does."""
        started = time.monotonic()
        attempt = _Attempt(allow=self._allow, timeout=timeout)
        request_headers = dict(headers)
        if not any(name.lower() == "user-agent" for name in request_headers):
            request_headers["User-Agent"] = self._user_agent

        status: int | None = None
        text: str | None = None
        retry_after: float | None = None
        error: str | None = None
        response: urllib3.BaseHTTPResponse | None = None
        complete = False

        token = _CURRENT_ATTEMPT.set(attempt)
        _WATCHDOG.add(attempt)
        try:
            response = self._pool.urlopen(
                "POST",
                url,
                body=body,
                headers=request_headers,
                retries=False,
                redirect=False,
                timeout=Timeout(connect=timeout, read=timeout),
                preload_content=False,
                decode_content=True,
            )
            if attempt.expired:
                # Cut while the headers were still arriving: http.client takes the EOF for
                # their end, but no answer was received.
                raise _DeadlineExceeded()
            status = response.status
            retry_after = parse_retry_after(response.headers.get("Retry-After"))
            attempt.phase = "reading the response body"
            raw, complete = self._read_body(response)
            text = _decode_body(raw, truncated=not complete)
        except _DeadlineExceeded:
            error = attempt.timeout_message()
        except _AttemptFailed as exc:
            error = exc.message
        except (Urllib3Error, http.client.HTTPException, OSError) as exc:
            error = _describe_error(exc)
            if error == "timeout" or attempt.remaining() <= 0:
                error = attempt.timeout_message()
        finally:
            expired = attempt.finish()
            _WATCHDOG.discard(attempt)
            _CURRENT_ATTEMPT.reset(token)
            if response is not None:
                self._release(response, reuse=complete and error is None and not expired)

        if expired:
            # Whatever the read saw after the cut (EOF, reset), the cause is the deadline.
            error = attempt.timeout_message()
        return AttemptResult(
            status_code=status,
            response_body=text,
            error=error,
            duration_ms=int((time.monotonic() - started) * 1000),
            retry_after=retry_after,
        )

    def _read_body(self, response: urllib3.BaseHTTPResponse) -> tuple[bytes, bool]:
        """Up to max_body decoded bytes, and whether the body ended within them."""
        chunks: list[bytes] = []
        size = 0
        while size < self._max_body:
            # read1 returns what has arrived (decompressed at most to the amount
            # asked), so neither a trickle nor a compression bomb can hold us here.
            chunk = response.read1(self._max_body - size)
            if not chunk:
                return b"".join(chunks), True
            chunks.append(chunk)
            size += len(chunk)
        return b"".join(chunks), False

    @staticmethod
    def _release(response: urllib3.BaseHTTPResponse, *, reuse: bool) -> None:
        """Give the connection back: kept alive only if its body was read to the end."""
        if not reuse:
            # Unread body bytes would be read as the next response's status line.
            response.close()
        response.release_conn()
