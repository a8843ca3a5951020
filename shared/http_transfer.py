"""One curl handle of the delivery client's pools (shared.http), and what a failed
transfer's libcurl code means in words.
"""

from __future__ import annotations

import errno
import ipaddress
import os
import socket
import ssl
from typing import Protocol

import pycurl
from urllib3.exceptions import LocationParseError
from urllib3.util import parse_url

from shared.targets import AllowList, is_blocked_address, parse_host_ip


class Limits(Protocol):
    """What a handle's callbacks read from its client: the SSRF guard and the body cap."""

    allow: AllowList
    max_body: int


# libcurl's codes for a failed TLS handshake or certificate check.
_TLS_ERRORS = {
    pycurl.E_SSL_CONNECT_ERROR,
    pycurl.E_PEER_FAILED_VERIFICATION,
    pycurl.E_SSL_CERTPROBLEM,
    pycurl.E_SSL_CIPHER,
    pycurl.E_SSL_CACERT_BADFILE,
    pycurl.E_SSL_ENGINE_NOTFOUND,
    pycurl.E_SSL_ENGINE_SETFAILED,
    pycurl.E_SSL_SHUTDOWN_FAILED,
    pycurl.E_SSL_CRL_BADFILE,
    pycurl.E_SSL_ISSUER_ERROR,
}


# An answer that is not HTTP, an oversized header block: curl's CURLE_WEIRD_SERVER_REPLY
# (pycurl still calls it E_FTP_WEIRD_SERVER_REPLY) and CURLE_TOO_LARGE (no pycurl name).
_PROTOCOL_ERRORS = {pycurl.E_UNSUPPORTED_PROTOCOL, pycurl.E_HTTP2, 8, 100}


class Transfer:
    """A curl handle of one host's pool, and what its callbacks saw of the current attempt.

    The callbacks are set on the handle once; each attempt only resets these fields.
    """

    def __init__(self, client: Limits, share: pycurl.CurlShare) -> None:
        self.client = client
        self.share = share
        self.chunks: list[bytes] = []
        self.size = 0
        self.truncated = False
        self.status = 0
        self.headers_done = False
        self.retry_after: str | None = None
        self.blocked: str | None = None
        self.opened = False
        curl = self.curl = pycurl.Curl()
        curl.setopt(pycurl.SHARE, share)
        curl.setopt(pycurl.NOSIGNAL, 1)  # threads: no SIGALRM for DNS timeouts
        curl.setopt(pycurl.PROTOCOLS, pycurl.PROTO_HTTP | pycurl.PROTO_HTTPS)
        curl.setopt(pycurl.FOLLOWLOCATION, 0)  # a 3xx is a failed attempt (docs/api.md §5)
        curl.setopt(pycurl.PROXY, "")  # never a proxy from the environment
        curl.setopt(pycurl.HTTP_VERSION, pycurl.CURL_HTTP_VERSION_1_1)
        # Any Content-Encoding the receiver sends is decoded (and the cap counts decoded
        # bytes); the request's own Accept-Encoding header asks for none.
        curl.setopt(pycurl.ACCEPT_ENCODING, "")
        curl.setopt(pycurl.MAXCONNECTS, 1)  # a handle serves one host (DeliveryClient)
        # libcurl's smallest buffers: 4 KiB of an answer is all we keep, and a worker holds
        # a handle per busy thread, and the default buffers (16 + 64 KiB) add up over them.
        curl.setopt(pycurl.BUFFERSIZE, 4096)
        curl.setopt(pycurl.UPLOAD_BUFFERSIZE, 16384)
        verify = ssl.get_default_verify_paths()
        if verify.cafile:
            curl.setopt(pycurl.CAINFO, verify.cafile)
        if verify.capath:
            curl.setopt(pycurl.CAPATH, verify.capath)
        curl.setopt(pycurl.OPENSOCKETFUNCTION, self._open_socket)
        curl.setopt(pycurl.WRITEFUNCTION, self._write)
        curl.setopt(pycurl.HEADERFUNCTION, self._header)

    def reset(self) -> None:
        self.chunks = []
        self.size = 0
        self.truncated = False
        self.status = 0
        self.headers_done = False
        self.retry_after = None
        self.blocked = None
        self.opened = False

    def _open_socket(self, purpose: int, address: tuple) -> object:
        """Dial only addresses the guard lets through; remember why one was refused."""
        family, socktype, protocol, sockaddr = address
        ip = ipaddress.ip_address(sockaddr[0])
        if is_blocked_address(ip) and not self.client.allow.allows(ip):
            self.blocked = self.blocked or f"blocked target: {ip} is a private or reserved address"
            return pycurl.SOCKET_BAD
        self.opened = True
        return socket.socket(family, socktype, protocol)

    def _write(self, data: bytes) -> int | None:
        room = self.client.max_body - self.size
        if len(data) <= room:
            self.chunks.append(data)
            self.size += len(data)
            return None
        # Past the cap: keep what fits and stop reading (curl then drops the connection,
        # whose unread rest would otherwise be taken for the next answer).
        self.chunks.append(data[:room])
        self.size += room
        self.truncated = True
        return 0

    def _header(self, line: bytes) -> None:
        if line.startswith(b"HTTP/"):
            # A new answer (after a 1xx, the final one): forget the previous one's headers.
            parts = line.split(None, 2)
            self.status = int(parts[1]) if len(parts) > 1 and parts[1].isdigit() else 0
            self.headers_done = False
            self.retry_after = None
        elif line in (b"\r\n", b"\n"):
            self.headers_done = not 100 <= self.status < 200
        elif line[:12].lower() == b"retry-after:":
            self.retry_after = line[12:].decode("latin-1").strip()

    def phase(self, *, https: bool, body_size: int) -> str:
        """Where an attempt that ran out of time was."""
        curl = self.curl
        if self.headers_done:
            return "reading the response body"
        connected = curl.getinfo(pycurl.CONNECT_TIME_T) > 0
        if https and connected and curl.getinfo(pycurl.APPCONNECT_TIME_T) == 0:
            return "TLS handshake"
        if curl.getinfo(pycurl.PRETRANSFER_TIME_T) > 0:
            if curl.getinfo(pycurl.SIZE_UPLOAD_T) < body_size:
                return "sending the request"
            return "waiting for the response"
        if connected:
            return "sending the request"
        if self.opened or curl.getinfo(pycurl.NAMELOOKUP_TIME_T) > 0:
            return "connecting"
        return "resolving the host"


def new_share() -> pycurl.CurlShare:
    """DNS answers and TLS sessions, shared by every handle of a client (thread-safe)."""
    share = pycurl.CurlShare()
    share.setopt(pycurl.SH_SHARE, pycurl.LOCK_DATA_DNS)
    share.setopt(pycurl.SH_SHARE, pycurl.LOCK_DATA_SSL_SESSION)
    return share


def host_of(url: str) -> str:
    try:
        return parse_url(url).host or ""
    except LocationParseError:
        return ""


def describe_error(code: int, message: str, transfer: Transfer, url: str) -> str:
    """A human-readable text for a transport or protocol failure (libcurl's code)."""
    os_errno = transfer.curl.getinfo(pycurl.OS_ERRNO)
    if code == pycurl.E_COULDNT_CONNECT:
        if transfer.blocked and not transfer.opened:
            host = host_of(url)
            try:
                literal = parse_host_ip(host) is not None
            except ValueError:
                literal = False
            return transfer.blocked if literal else f"{transfer.blocked} (host {host})"
        if os_errno == errno.ECONNREFUSED:
            return "connection refused"
        return f"connection failed: {os.strerror(os_errno) if os_errno else message}"
    if code == pycurl.E_COULDNT_RESOLVE_HOST:
        return f"DNS lookup failed for host {host_of(url)}"
    if code in _TLS_ERRORS:
        if code == pycurl.E_PEER_FAILED_VERIFICATION:
            return f"TLS error: certificate verify failed: {message}"
        return f"TLS error: {message}"
    if code == pycurl.E_GOT_NOTHING:
        return "connection closed by the receiver without a response"
    if code in (pycurl.E_RECV_ERROR, pycurl.E_SEND_ERROR):
        if os_errno in (errno.ECONNRESET, errno.EPIPE):
            return "connection reset by the receiver"
        return f"connection error: {os.strerror(os_errno) if os_errno else message}"
    if code == pycurl.E_PARTIAL_FILE:
        return "connection closed before the response body was complete"
    if code == pycurl.E_BAD_CONTENT_ENCODING:
        return "protocol error: response body could not be decoded (bad Content-Encoding)"
    if code == pycurl.E_URL_MALFORMAT:
        return f"invalid URL: {message}"
    if code in _PROTOCOL_ERRORS:
        return f"protocol error: {message}"
    return f"request failed: {message}"
