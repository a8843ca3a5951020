"""The delivery HTTP client: one POST per attempt, safe against hostile receivers.

libcurl (through pycurl) makes the request: every attempt has one total deadline
(DNS, connect, TLS, request, headers and body, CURLOPT_TIMEOUT_MS), keeps at most
`max_body` decoded bytes of the answer, never follows a redirect, and connects only to
addresses the SSRF guard (`shared.targets`) lets through, checked on the address
actually dialled (CURLOPT_OPENSOCKETFUNCTION) so DNS rebinding cannot pass.

Why libcurl: urllib3 and http.client spend several times libcurl's CPU on each post (URL
parsing, header building, the email-module header parser, the response object), and
libcurl's total deadline needs no watchdog thread to cut a receiver that trickles its
answer.
"""

from __future__ import annotations

import codecs
import email.utils
import os
import re
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass
from datetime import UTC, datetime

import pycurl
from urllib3.exceptions import LocationParseError
from urllib3.util import parse_url

from shared.http_transfer import Transfer, describe_error, new_share
from shared.targets import AllowList

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


class DeliveryClient:
    """Posts webhook attempts; thread-safe, with connections pooled per host.

    libcurl handles may not be used by two threads at once, nor share a connection
    cache across threads, so each host has a pool of idle handles, each holding its
    keep-alive connection: a post takes one (or makes one) and gives it back.
    """

    def __init__(
        self,
        *,
        allow: AllowList,
        user_agent: str,
        max_body: int = 4096,
        pool_maxsize: int = 100,
        max_idle: int | None = None,
    ) -> None:
        self.allow = allow
        self.max_body = max_body
        self._pool_maxsize = pool_maxsize
        # Idle handles kept over all hosts (each holds its buffers and connection): a worker
        # posting to many hosts keeps the most recently used ones, not every host's peak.
        self._max_idle = max_idle if max_idle is not None else 2 * pool_maxsize
        self._idle = 0
        self._user_agent = f"User-Agent: {user_agent}"
        self._lock = threading.Lock()
        self._pid = os.getpid()
        self._share: pycurl.CurlShare | None = None
        self._pools: OrderedDict[str, list[Transfer]] = OrderedDict()
        self._forked: list[object] = []
        # When each thread's post in flight began (time.monotonic()), by thread ident.
        self._in_flight: dict[int, float] = {}

    def _take(self, key: str) -> Transfer:
        """An idle handle for the host key, or a new one."""
        with self._lock:
            if self._pid != os.getpid():
                # A forked child: the parent's handles hold the parent's connections, and
                # closing them here could end the parent's TLS sessions; keep them unused.
                self._forked.append((self._share, self._pools))
                self._pid, self._share, self._pools = os.getpid(), None, OrderedDict()
                self._idle = 0
            if self._share is None:
                self._share = new_share()
            idle = self._pools.get(key)
            if idle:
                self._pools.move_to_end(key)
                self._idle -= 1
                return idle.pop()
            share = self._share
        return Transfer(self, share)

    def _give_back(self, key: str, transfer: Transfer) -> None:
        """Keep the handle (and its connection) for the host's next post, within bounds."""
        closing: list[Transfer] = []
        with self._lock:
            if transfer.share is not self._share:
                closing.append(transfer)  # made before close() or a fork
            else:
                idle = self._pools.setdefault(key, [])
                self._pools.move_to_end(key)
                if len(idle) < self._pool_maxsize:
                    idle.append(transfer)
                    self._idle += 1
                else:
                    closing.append(transfer)
                while len(self._pools) > _NUM_POOLS:
                    evicted = self._pools.popitem(last=False)[1]
                    self._idle -= len(evicted)
                    closing.extend(evicted)
                while self._idle > self._max_idle:
                    # The least recently used host gives up its oldest idle handle.
                    oldest_key, oldest = next(iter(self._pools.items()))
                    if oldest:
                        closing.append(oldest.pop(0))
                        self._idle -= 1
                    if not oldest:
                        del self._pools[oldest_key]
        for extra in closing:
            extra.curl.close()

    def posts_waiting_longer_than(self, seconds: float) -> int:
        """How many posts have been in flight for more than ``seconds``.

        A worker's thread pool counts the threads that such posts hold as blocked
        (``webhooks_worker.thread_pool``).
        """
        cutoff = time.monotonic() - seconds
        return sum(1 for began in list(self._in_flight.values()) if began < cutoff)

    @property
    def idle_handles(self) -> dict[str, int]:
        """How many idle handles (each with its connection) are kept, per host."""
        with self._lock:
            return {key: len(idle) for key, idle in self._pools.items() if idle}

    def close(self) -> None:
        """Close every pooled connection."""
        with self._lock:
            pools, self._pools = self._pools, OrderedDict()
            self._share = None
            self._idle = 0
        for idle in pools.values():
            for transfer in idle:
                transfer.curl.close()

    def post(
        self, url: str, body: bytes, headers: dict[str, str], *, timeout: float
    ) -> AttemptResult:
        """POST body to url within a total deadline of timeout seconds; never raises for
        what the receiver does."""
        started = time.monotonic()
        lowered = url[:8].lower()
        https = lowered.startswith("https://")
        if not (https or lowered.startswith("http://")):
            return AttemptResult(None, None, "invalid URL: scheme must be http or https", 0)
        if not url.isascii():
            # IDNA host, percent-encoded path: as urllib3 sent such a URL before.
            try:
                url = parse_url(url).url
            except LocationParseError as exc:
                return AttemptResult(None, None, f"invalid URL: {exc}", 0)
        # libcurl drops a "Name:" line with no value; "Name;" is how it sends an empty one.
        request_headers = [
            f"{name}: {value}" if value else f"{name};" for name, value in headers.items()
        ]
        if not any(name.lower() == "user-agent" for name in headers):
            request_headers.append(self._user_agent)
        # No 100-continue round trip, no compressed answers asked for, no Accept: */*.
        request_headers += ("Expect:", "Accept-Encoding: identity", "Accept:")

        end = url.find("/", 8)
        key = (url if end < 0 else url[:end]).lower()  # scheme://host:port
        transfer = self._take(key)
        transfer.reset()
        curl = transfer.curl
        curl.setopt(pycurl.URL, url)
        curl.setopt(pycurl.POSTFIELDS, body)
        curl.setopt(pycurl.HTTPHEADER, request_headers)
        curl.setopt(pycurl.TIMEOUT_MS, max(int(timeout * 1000), 1))
        code, message = 0, ""
        thread = threading.get_ident()
        self._in_flight[thread] = started
        try:
            curl.perform()
        except pycurl.error as exc:
            code, message = exc.args[0], str(exc.args[1]) if len(exc.args) > 1 else ""
        finally:
            del self._in_flight[thread]
        duration_ms = int((time.monotonic() - started) * 1000)

        status = transfer.status if transfer.headers_done else None
        error: str | None = None
        text: str | None = None
        if code == 0 or (code == pycurl.E_WRITE_ERROR and transfer.truncated):
            text = _decode_body(b"".join(transfer.chunks), truncated=transfer.truncated)
        elif code == pycurl.E_OPERATION_TIMEDOUT:
            phase = transfer.phase(https=https, body_size=len(body))
            error = f"timeout after {float(timeout)}s ({phase})"
        else:
            error = describe_error(code, message, transfer, url)
        retry_after = parse_retry_after(transfer.retry_after) if status is not None else None
        transfer.chunks = []
        self._give_back(key, transfer)
        return AttemptResult(
            status_code=status,
            response_body=text,
            error=error,
            duration_ms=duration_ms,
            retry_after=retry_after,
        )
