"""The delivery HTTP client against real, hostile receivers on loopback."""

from __future__ import annotations

import email.utils
import socket
import struct
import threading
import time
import tracemalloc
import zlib
from collections.abc import Callable, Iterator

import pytest

from shared.errors import Invalid
from shared.http import AttemptResult, DeliveryClient, parse_retry_after
from shared.targets import AllowList, parse_allowlist, validate_target_url
from tests.shared.test_targets import loopback_hostname
from tests.support.hostile import HostileReceiver
from tests.support.hostile import Script as Handler

LOOPBACK = parse_allowlist("127.0.0.0/8")
PAYLOAD = b'{"type":"sandbox.started"}'
HEADERS = {"content-type": "application/json", "webhook-id": "msg_1"}

# The loopback servers these tests script; .address() builds their URLs.
Receiver = HostileReceiver


def response(status: str, headers: dict[str, str] | None = None, body: bytes = b"") -> bytes:
    head = [f"HTTP/1.1 {status}", f"Content-Length: {len(body)}"]
    head += [f"{name}: {value}" for name, value in (headers or {}).items()]
    return ("\r\n".join(head) + "\r\n\r\n").encode() + body


def answer(status: str, headers: dict[str, str] | None = None, body: bytes = b"") -> Handler:
    """A keep-alive handler answering every request the same way."""

    def handle(conn: socket.socket, receiver: Receiver) -> None:
        while receiver.read_request(conn) is not None:
            conn.sendall(response(status, headers, body))

    return handle


def stall(conn: socket.socket, receiver: Receiver) -> None:
    """Read the request and never answer."""
    receiver.read_request(conn)
    receiver.stopped.wait(30)


@pytest.fixture
def serve() -> Iterator[Callable[[Handler], Receiver]]:
    started: list[Receiver] = []

    def start(handler: Handler) -> Receiver:
        receiver = Receiver(handler)
        started.append(receiver)
        return receiver

    yield start
    for receiver in started:
        receiver.close()


@pytest.fixture
def client() -> Iterator[DeliveryClient]:
    delivery = DeliveryClient(allow=LOOPBACK, user_agent="sandbox-webhooks/test")
    yield delivery
    delivery.close()


def post(client: DeliveryClient, url: str, timeout: float = 5.0) -> AttemptResult:
    return client.post(url, PAYLOAD, dict(HEADERS), timeout=timeout)


# --- answers ---------------------------------------------------------------------


def test_200_records_status_body_and_sends_the_request(client, serve) -> None:
    receiver = serve(answer("200 OK", {"Content-Type": "text/plain"}, b"thanks"))
    result = post(client, receiver.address())
    assert result.ok
    assert (result.status_code, result.response_body, result.error) == (200, "thanks", None)
    assert 0 <= result.duration_ms < 1000
    assert result.retry_after is None
    request = receiver.requests[0]
    assert request.startswith(b"POST /hook HTTP/1.1\r\n")
    assert request.endswith(b"\r\n\r\n" + PAYLOAD)
    lowered = request.lower()
    assert b"\r\nuser-agent: sandbox-webhooks/test\r\n" in lowered
    assert b"\r\ncontent-type: application/json\r\n" in lowered
    assert b"\r\nwebhook-id: msg_1\r\n" in lowered
    assert f"\r\nhost: 127.0.0.1:{receiver.port}\r\n".encode() in lowered


@pytest.mark.parametrize("status", ["500 Internal Server Error", "410 Gone", "404 Not Found"])
def test_error_status_is_a_recorded_failed_answer(client, serve, status: str) -> None:
    receiver = serve(answer(status, body=b"nope"))
    result = post(client, receiver.address())
    assert not result.ok
    assert result.status_code == int(status.split()[0])
    assert result.response_body == "nope"
    assert result.error is None


def test_429_retry_after_seconds(client, serve) -> None:
    receiver = serve(answer("429 Too Many Requests", {"Retry-After": "120"}))
    result = post(client, receiver.address())
    assert (result.status_code, result.retry_after, result.ok) == (429, 120.0, False)


def test_503_retry_after_http_date(client, serve) -> None:
    when = email.utils.formatdate(time.time() + 60, usegmt=True)
    receiver = serve(answer("503 Service Unavailable", {"Retry-After": when}))
    result = post(client, receiver.address())
    assert result.status_code == 503
    assert result.retry_after is not None and 57 <= result.retry_after <= 61


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (None, None),
        ("", None),
        ("soon", None),
        ("0", 0.0),
        (" 30 ", 30.0),
        ("-5", 0.0),
        ("Wed, 21 Oct 2015 07:28:00 GMT", 0.0),
    ],
)
def test_parse_retry_after(value: str | None, expected: float | None) -> None:
    assert parse_retry_after(value) == expected


def test_nul_and_invalid_utf8_are_cleaned(client, serve) -> None:
    receiver = serve(answer("200 OK", body=b"ok\x00 \xff\xfe caf\xc3\xa9"))
    result = post(client, receiver.address())
    assert result.response_body == "ok \ufffd\ufffd caf\u00e9"


def test_body_cut_inside_a_character_drops_the_half(client, serve) -> None:
    body = ("a" + "\u00e9" * 3000).encode()  # byte 4096 is the first half of an é
    receiver = serve(answer("200 OK", body=body))
    result = post(client, receiver.address())
    assert result.ok
    assert result.response_body == "a" + "\u00e9" * 2047


# --- redirects -------------------------------------------------------------------


@pytest.mark.parametrize("status", ["301 Moved Permanently", "307 Temporary Redirect"])
def test_redirect_is_recorded_and_not_followed(client, serve, status: str) -> None:
    target = serve(answer("200 OK", body=b"followed"))
    receiver = serve(answer(status, {"Location": target.address("/elsewhere")}, b"moved"))
    result = post(client, receiver.address())
    assert result.status_code == int(status.split()[0])
    assert not result.ok
    assert result.response_body == "moved"
    time.sleep(0.1)
    assert target.connections == 0 and target.requests == []


# --- deadline --------------------------------------------------------------------


def test_trickling_body_is_cut_at_the_deadline(client, serve) -> None:
    def trickle(conn: socket.socket, receiver: Receiver) -> None:
        receiver.read_request(conn)
        conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n")
        while not receiver.stopped.is_set():
            conn.sendall(b"x")
            time.sleep(1)

    receiver = serve(trickle)
    result = post(client, receiver.address(), timeout=2.0)
    assert result.error == "timeout after 2.0s (reading the response body)"
    assert result.status_code == 200
    assert not result.ok
    assert 1900 <= result.duration_ms < 3000


def test_trickling_body_without_length_is_cut_at_the_deadline(client, serve) -> None:
    def trickle(conn: socket.socket, receiver: Receiver) -> None:
        receiver.read_request(conn)
        conn.sendall(b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n")
        while not receiver.stopped.is_set():
            conn.sendall(b"x")
            time.sleep(0.5)

    receiver = serve(trickle)
    result = post(client, receiver.address(), timeout=2.0)
    assert result.error is not None and result.error.startswith("timeout after 2.0s")
    assert not result.ok
    assert 1900 <= result.duration_ms < 3000


def test_trickling_headers_are_cut_at_the_deadline(client, serve) -> None:
    def trickle(conn: socket.socket, receiver: Receiver) -> None:
        receiver.read_request(conn)
        for byte in b"HTTP/1.1 200 OK\r\nX-Slow: " + b"y" * 100:
            if receiver.stopped.is_set():
                return
            conn.sendall(bytes([byte]))
            time.sleep(0.3)

    receiver = serve(trickle)
    result = post(client, receiver.address(), timeout=2.0)
    assert result.error == "timeout after 2.0s (waiting for the response)"
    assert result.status_code is None
    assert 1900 <= result.duration_ms < 3000


def test_trickling_tls_handshake_is_cut_at_the_deadline(client, serve) -> None:
    def slow_handshake(conn: socket.socket, receiver: Receiver) -> None:
        conn.recv(65536)  # the ClientHello
        conn.sendall(b"\x16\x03\x03\x00\x50")  # a handshake record of 80 bytes...
        for _ in range(80):  # ...sent one byte at a time
            if receiver.stopped.is_set():
                return
            conn.sendall(b"\x00")
            time.sleep(0.3)

    receiver = serve(slow_handshake)
    result = post(client, receiver.address(scheme="https"), timeout=2.0)
    assert result.error == "timeout after 2.0s (TLS handshake)"
    assert 1900 <= result.duration_ms < 3000


def test_receiver_that_never_answers_times_out(client, serve) -> None:
    receiver = serve(stall)
    result = post(client, receiver.address(), timeout=1.0)
    assert result.error == "timeout after 1.0s (waiting for the response)"
    assert result.status_code is None and result.response_body is None
    assert 900 <= result.duration_ms < 2000


def test_slow_but_complete_answer_within_the_deadline_succeeds(client, serve) -> None:
    def slow(conn: socket.socket, receiver: Receiver) -> None:
        receiver.read_request(conn)
        time.sleep(0.5)
        conn.sendall(response("200 OK", body=b"late"))

    receiver = serve(slow)
    result = post(client, receiver.address(), timeout=2.0)
    assert result.ok and result.response_body == "late"


def test_hanging_receivers_do_not_stall_other_posts(client, serve) -> None:
    hanging = serve(stall)
    fast = serve(answer("200 OK", body=b"fast"))
    results: dict[str, AttemptResult] = {}

    def run(name: str, url: str, timeout: float) -> None:
        results[name] = post(client, url, timeout=timeout)

    threads = [
        threading.Thread(target=run, args=(f"hang{i}", hanging.address(), 1.5)) for i in range(8)
    ]
    started = time.monotonic()
    for thread in threads:
        thread.start()
    run("fast", fast.address(), 5.0)
    fast_done = time.monotonic() - started
    for thread in threads:
        thread.join()
    assert results["fast"].ok and fast_done < 1.0
    assert all(results[f"hang{i}"].error.startswith("timeout after 1.5s") for i in range(8))
    assert time.monotonic() - started < 3.0


# --- size cap --------------------------------------------------------------------


def test_huge_body_keeps_4096_bytes_and_is_fast(client, serve) -> None:
    def huge(conn: socket.socket, receiver: Receiver) -> None:
        receiver.read_request(conn)
        conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 10485760\r\n\r\n")
        block = b"z" * 65536
        for _ in range(160):
            conn.sendall(block)

    receiver = serve(huge)
    result = post(client, receiver.address())
    assert result.ok
    assert result.response_body == "z" * 4096
    assert result.duration_ms < 1000


def test_connection_with_unread_body_is_not_reused(client, serve) -> None:
    def partial_then_rest(conn: socket.socket, receiver: Receiver) -> None:
        if receiver.read_request(conn) is None:
            return
        if len(receiver.requests) == 1:
            conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 100000\r\n\r\n" + b"b" * 5000)
            if receiver.read_request(conn) is None:
                return  # the client hung up on the unread body, as it should
            conn.sendall(b"b" * 95000)  # reused: the rest would be read as the next answer
        conn.sendall(response("200 OK", body=b"second"))

    receiver = serve(partial_then_rest)
    assert post(client, receiver.address()).response_body == "b" * 4096
    second = post(client, receiver.address())
    assert second.ok and second.response_body == "second", second.error
    assert receiver.connections == 2


def test_keep_alive_connection_is_reused(client, serve) -> None:
    receiver = serve(answer("200 OK", body=b"ok"))
    for _ in range(3):
        assert post(client, receiver.address()).ok
    assert receiver.connections == 1
    assert len(receiver.requests) == 3


@pytest.fixture(scope="module")
def gzip_bomb() -> bytes:
    """1 GiB of ASCII zeros, gzip-compressed in memory (about 4.5 MB)."""
    compressor = zlib.compressobj(1, zlib.DEFLATED, 31)
    block = b"0" * (1 << 20)
    parts = [compressor.compress(block) for _ in range(1024)]
    parts.append(compressor.flush())
    return b"".join(parts)


@pytest.mark.parametrize("encoding", ["gzip", "deflate"])
def test_compression_bomb_keeps_4096_chars_cheaply(client, serve, gzip_bomb, encoding) -> None:
    if encoding == "gzip":
        bomb = gzip_bomb
    else:
        compressor = zlib.compressobj(1, zlib.DEFLATED, 15)
        bomb = b"".join(compressor.compress(b"0" * (1 << 20)) for _ in range(128))
        bomb += compressor.flush()
    receiver = serve(answer("200 OK", {"Content-Encoding": encoding}, bomb))
    tracemalloc.start()
    try:
        result = post(client, receiver.address())
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert result.ok
    assert result.response_body == "0" * 4096
    assert result.duration_ms < 2000
    assert peak < 16 * 1024 * 1024


# --- transport failures ----------------------------------------------------------


def test_connection_refused(client) -> None:
    with socket.create_server(("127.0.0.1", 0)) as probe:
        port = probe.getsockname()[1]
    result = post(client, f"http://127.0.0.1:{port}/hook")
    assert result.error == "connection refused"
    assert result.status_code is None and not result.ok


def test_dns_failure(client) -> None:
    result = post(client, "http://no-such-host.invalid/hook")
    assert result.error == "DNS lookup failed for host no-such-host.invalid"
    assert result.status_code is None


def test_tls_failure(client, serve) -> None:
    def plain_http(conn: socket.socket, receiver: Receiver) -> None:
        conn.recv(65536)
        conn.sendall(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n")

    receiver = serve(plain_http)
    result = post(client, receiver.address(scheme="https"))
    assert result.error is not None and result.error.startswith("TLS error: ")
    assert result.status_code is None and not result.ok


def test_connection_reset(client, serve) -> None:
    def reset(conn: socket.socket, receiver: Receiver) -> None:
        receiver.read_request(conn)
        conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))

    receiver = serve(reset)
    result = post(client, receiver.address())
    assert result.error == "connection reset by the receiver"


def test_hang_up_without_answer(client, serve) -> None:
    def hang_up(conn: socket.socket, receiver: Receiver) -> None:
        receiver.read_request(conn)

    receiver = serve(hang_up)
    result = post(client, receiver.address())
    assert result.error == "connection closed by the receiver without a response"


def test_garbage_status_line_is_a_protocol_error(client, serve) -> None:
    def garbage(conn: socket.socket, receiver: Receiver) -> None:
        receiver.read_request(conn)
        conn.sendall(b"SMTP READY\r\n\r\n")

    receiver = serve(garbage)
    result = post(client, receiver.address())
    assert result.error is not None and result.error.startswith("protocol error")
    assert result.status_code is None


def test_body_shorter_than_its_length_is_a_failed_attempt(client, serve) -> None:
    def short(conn: socket.socket, receiver: Receiver) -> None:
        receiver.read_request(conn)
        conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 50\r\n\r\nonly this")

    receiver = serve(short)
    result = post(client, receiver.address())
    assert result.status_code == 200 and not result.ok
    assert result.error == "connection closed before the response body was complete"


def test_unsupported_scheme_is_an_error_not_an_exception(client) -> None:
    result = post(client, "ftp://127.0.0.1/hook")
    assert result.error is not None and result.status_code is None


# --- SSRF guard ------------------------------------------------------------------

BLOCKED_LOOPBACK = [
    "127.0.0.1",
    "2130706433",
    "0x7f000001",
    "0177.0.0.1",
    "127.1",
    "[::1]",
    "[::ffff:127.0.0.1]",
    "[64:ff9b::7f00:1]",
    "0.0.0.0",
    "localhost",
    "localhost.",
]
BLOCKED_ELSEWHERE = [
    "10.0.0.1",
    "172.16.0.1",
    "192.168.1.1",
    "169.254.169.254",
    "100.64.0.1",
    "224.0.0.1",
]


@pytest.mark.parametrize("host", BLOCKED_LOOPBACK + BLOCKED_ELSEWHERE)
def test_blocked_targets_are_refused_at_save_and_at_connect(serve, host: str) -> None:
    receiver = serve(answer("200 OK", body=b"reached"))
    url = f"http://{host}:{receiver.port}/hook"
    with pytest.raises(Invalid, match="private or reserved address"):
        validate_target_url(url, AllowList())
    guarded = DeliveryClient(allow=AllowList(), user_agent="sandbox-webhooks/test")
    try:
        result = post(guarded, url, timeout=2.0)
    finally:
        guarded.close()
    assert result.error is not None
    assert result.error.startswith("blocked target: ")
    assert "is a private or reserved address" in result.error
    assert result.status_code is None and not result.ok
    assert receiver.connections == 0


def test_name_resolving_to_loopback_is_refused_at_connect(serve) -> None:
    name = loopback_hostname()
    if name is None:
        pytest.skip("no host name resolving to loopback on this machine")
    receiver = serve(answer("200 OK"))
    url = f"http://{name}:{receiver.port}/hook"
    # Saved while it resolved elsewhere (DNS rebinding): the connect-time check holds.
    assert validate_target_url(url, AllowList(), resolve=False) == url
    guarded = DeliveryClient(allow=AllowList(), user_agent="sandbox-webhooks/test")
    try:
        result = post(guarded, url)
    finally:
        guarded.close()
    assert result.error == (
        f"blocked target: 127.0.0.1 is a private or reserved address (host {name})"
    )
    assert receiver.connections == 0


def test_allowed_names_connect_and_keep_the_host_header(client, serve) -> None:
    receiver = serve(answer("200 OK", body=b"ok"))
    names = ["localhost"] + [name for name in [loopback_hostname()] if name]
    for name in names:
        result = post(client, f"http://{name}:{receiver.port}/hook")
        assert result.ok, result.error
        assert f"\r\nhost: {name}:{receiver.port}\r\n".encode() in receiver.requests[-1].lower()


def test_public_literals_pass_validation_without_any_traffic() -> None:
    for url in ["http://93.184.216.34/hook", "https://[2606:4700::1]/hook"]:
        assert validate_target_url(url, AllowList()) == url


def answer_together(n: int) -> Handler:
    """Answers nothing until n requests have arrived (so n connections are open at once)."""
    arrived = [0]
    lock = threading.Lock()
    gathered = threading.Event()

    def handle(conn: socket.socket, receiver: Receiver) -> None:
        while receiver.read_request(conn) is not None:
            with lock:
                arrived[0] += 1
                if arrived[0] >= n:
                    gathered.set()
            gathered.wait(5)
            conn.sendall(response("200 OK", body=b"ok"))

    return handle


def test_idle_connections_are_capped_over_all_hosts(serve) -> None:
    receivers = [serve(answer_together(3)) for _ in range(4)]
    delivery = DeliveryClient(allow=LOOPBACK, user_agent="t", pool_maxsize=3, max_idle=4)
    try:
        for receiver in receivers:
            # Three posts at once: the host's pool grows to three handles.
            threads = [
                threading.Thread(target=post, args=(delivery, receiver.address())) for _ in range(3)
            ]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
            assert receiver.connections == 3 and len(receiver.requests) == 3
        idle = delivery.idle_handles
        # Four kept in all, the most recently used host's first; older hosts gave theirs up.
        assert sum(idle.values()) == 4
        newest = receivers[-1].address().rsplit("/", 1)[0].lower()
        assert idle[newest] == 3
        # A host whose handles were closed gets a new connection and is served as before.
        first = receivers[0]
        assert post(delivery, first.address()).ok
        assert first.connections == 4
    finally:
        delivery.close()
    assert delivery.idle_handles == {}
