"""Webhook target checks: the SSRF guard shared by endpoint validation and delivery.

An endpoint URL is checked when it is saved (`validate_target_url`) and the address
actually connected to is checked again at delivery (`shared.http`), so a name that
later resolves somewhere private (DNS rebinding) is still refused.
"""

from __future__ import annotations

import ipaddress
import re
import socket
import threading
import unicodedata
import urllib.parse
from dataclasses import dataclass

from urllib3.exceptions import LocationParseError
from urllib3.util import parse_url

from shared.errors import Invalid

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

MAX_URL_LENGTH = 2048

# How long a save-time lookup may take before the name is accepted unchecked; the
# address is checked again at connect time, so giving up here opens nothing.
RESOLVE_TIMEOUT = 5.0

_V4 = ipaddress.IPv4Network
_V6 = ipaddress.IPv6Network

# IANA special-purpose registries (RFC 6890 and successors). Explicit rather than
# ipaddress.is_private / is_global, whose lists changed between Python patch releases.
_BLOCKED_V4: tuple[ipaddress.IPv4Network, ...] = (
    _V4("0.0.0.0/8"),  # "this network"; 0.0.0.0 reaches the local host on Linux
    _V4("10.0.0.0/8"),  # private
    _V4("100.64.0.0/10"),  # CGNAT; includes Alibaba's metadata 100.100.100.200
    _V4("127.0.0.0/8"),  # loopback
    _V4("169.254.0.0/16"),  # link-local; includes cloud metadata 169.254.169.254
    _V4("172.16.0.0/12"),  # private
    _V4("192.0.0.0/24"),  # IETF protocol assignments
    _V4("192.0.2.0/24"),  # documentation
    _V4("192.88.99.0/24"),  # deprecated 6to4 relay anycast
    _V4("192.168.0.0/16"),  # private
    _V4("198.18.0.0/15"),  # benchmarking
    _V4("198.51.100.0/24"),  # documentation
    _V4("203.0.113.0/24"),  # documentation
    _V4("224.0.0.0/4"),  # multicast
    _V4("240.0.0.0/4"),  # reserved, and 255.255.255.255 broadcast
)

_BLOCKED_V6: tuple[ipaddress.IPv6Network, ...] = (
    _V6("::/96"),  # unspecified, loopback and deprecated IPv4-compatible (::a.b.c.d)
    _V6("64:ff9b:1::/48"),  # local-use NAT64 (RFC 8215): private by definition
    _V6("100::/64"),  # discard-only
    _V6("2001::/32"),  # Teredo: tunnels to an address we cannot check
    _V6("2001:db8::/32"),  # documentation
    _V6("3fff::/20"),  # documentation (RFC 9637)
    _V6("fc00::/7"),  # unique local; includes AWS metadata fd00:ec2::254
    _V6("fe80::/10"),  # link-local
    _V6("fec0::/10"),  # deprecated site-local
    _V6("ff00::/8"),  # multicast
)

_NAT64 = _V6("64:ff9b::/96")  # well-known NAT64 prefix (RFC 6052): last 32 bits are IPv4
_SIIT = _V6("::ffff:0:0:0/96")  # IPv4-translated (RFC 2765): last 32 bits are IPv4
_6TO4 = _V6("2002::/16")  # 6to4 (RFC 3056): bits 16-47 are IPv4

_DECIMAL = re.compile(r"[0-9]+")
_HEX = re.compile(r"0[xX][0-9a-fA-F]*")
_OCTAL = re.compile(r"0[0-7]+")


@dataclass(frozen=True)
class AllowList:
    """Private ranges an operator opened with WEBHOOKS_ALLOW_PRIVATE_TARGETS."""

    networks: tuple[IPNetwork, ...] = ()
    allow_all: bool = False

    def allows(self, ip: IPAddress) -> bool:
        """Whether ip (or the IPv4 address it embeds) lies in an opened range."""
        if self.allow_all:
            return True
        candidates: list[IPAddress] = [ip]
        embedded = embedded_ipv4(ip) if isinstance(ip, ipaddress.IPv6Address) else None
        if embedded is not None:
            candidates.append(embedded)
        return any(
            candidate.version == network.version and candidate in network
            for candidate in candidates
            for network in self.networks
        )


def parse_allowlist(value: str | None) -> AllowList:
    """Build an AllowList from WEBHOOKS_ALLOW_PRIVATE_TARGETS: empty, `*`, or CIDRs."""
    if value is None or not value.strip():
        return AllowList()
    networks: list[IPNetwork] = []
    for item in (part.strip() for part in value.split(",")):
        if not item:
            continue
        if item == "*":
            return AllowList(allow_all=True)
        try:
            # strict=False so "10.1.2.3/8" means 10.0.0.0/8 rather than an error.
            networks.append(ipaddress.ip_network(item, strict=False))
        except ValueError:
            raise ValueError(
                f"WEBHOOKS_ALLOW_PRIVATE_TARGETS: {item!r} is not a valid CIDR"
            ) from None
    return AllowList(networks=tuple(networks))


def embedded_ipv4(ip: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    """The IPv4 address an IPv6 address carries (mapped, translated, NAT64, 6to4), if any."""
    if ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    if ip in _SIIT or ip in _NAT64:
        return ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    if ip in _6TO4:
        return ip.sixtofour
    return None


def is_blocked_address(ip: IPAddress) -> bool:
    """Whether ip is loopback, private, link-local, multicast, reserved or metadata."""
    if isinstance(ip, ipaddress.IPv4Address):
        return any(ip in network for network in _BLOCKED_V4)
    embedded = embedded_ipv4(ip)
    if embedded is not None and is_blocked_address(embedded):
        return True
    # The attribute checks back the table up for anything it misses.
    return (
        any(ip in network for network in _BLOCKED_V6)
        or ip.is_loopback
        or ip.is_link_local
        or ip.is_multicast
        or ip.is_unspecified
        or ip.is_site_local
    )


def is_localhost_name(host: str) -> bool:
    """Whether host is `localhost` or a `*.localhost` name, loopback by RFC 6761."""
    name = host.rstrip(".").lower()
    return name == "localhost" or name.endswith(".localhost")


def parse_host_ip(host: str) -> IPAddress | None:
    """The IP address a URL host spells, in any browser/libc spelling; None for a DNS name.

    Raises ValueError for an IPv6 zone id or a host that looks numeric but is not a
    valid address (browsers refuse those too).
    """
    host = host.strip()
    if host.startswith("[") and host.endswith("]"):
        return _parse_ipv6(host[1:-1])
    if ":" in host:
        return _parse_ipv6(host)
    # Browsers percent-decode and apply IDNA mapping (fullwidth digits, ideographic
    # full stops) before deciding that a host is an IPv4 address.
    host = urllib.parse.unquote(host)
    host = unicodedata.normalize("NFKC", host).replace("\u3002", ".").lower()
    return _parse_ipv4(host)


def _parse_ipv6(text: str) -> ipaddress.IPv6Address:
    """An IPv6 literal without brackets; zone ids are refused."""
    if "%" in text:
        raise ValueError(f"IPv6 zone ids are not allowed: {text!r}")
    return ipaddress.IPv6Address(text)


def _parse_ipv4(host: str) -> ipaddress.IPv4Address | None:
    """WHATWG URL IPv4 parsing: 1-4 parts, each decimal, 0x-hex or 0-octal."""
    parts = host.split(".")
    if len(parts) > 1 and parts[-1] == "":
        parts.pop()  # a trailing dot ("127.0.0.1.") is still an address
    last = parts[-1] if parts else ""
    if not (_DECIMAL.fullmatch(last) or _HEX.fullmatch(last)):
        return None  # does not end in a number: a DNS name
    if len(parts) > 4:
        raise ValueError(f"not a valid IPv4 address: {host!r}")
    numbers = [_parse_ipv4_number(part, host) for part in parts]
    if any(number > 255 for number in numbers[:-1]):
        raise ValueError(f"not a valid IPv4 address: {host!r}")
    # The last part fills all the remaining bytes: 127.1 is 127.0.0.1, 2130706433 too.
    if numbers[-1] >= 256 ** (5 - len(numbers)):
        raise ValueError(f"not a valid IPv4 address: {host!r}")
    value = numbers[-1]
    for index, number in enumerate(numbers[:-1]):
        value += number << (8 * (3 - index))
    return ipaddress.IPv4Address(value)


def _parse_ipv4_number(part: str, host: str) -> int:
    """One dotted part: 0x-prefixed hex, 0-prefixed octal, or decimal (ASCII only)."""
    if _HEX.fullmatch(part):
        return int(part[2:] or "0", 16)
    if len(part) > 1 and part.startswith("0"):
        # A leading zero means octal, so "09" is an error, not nine (WHATWG and libc).
        if _OCTAL.fullmatch(part):
            return int(part, 8)
        raise ValueError(f"not a valid IPv4 address: {host!r}")
    if _DECIMAL.fullmatch(part):
        return int(part, 10)
    raise ValueError(f"not a valid IPv4 address: {host!r}")


def resolve_host(host: str, port: int, *, timeout: float) -> list[IPAddress]:
    """The addresses getaddrinfo gives for host, in its order; TimeoutError after timeout.

    Raises socket.gaierror (an OSError) when the name does not resolve.
    """
    outcome: list[object] = []
    done = threading.Event()

    def lookup() -> None:
        try:
            outcome.append(socket.getaddrinfo(host, port, type=socket.SOCK_STREAM))
        except BaseException as exc:  # handed over to the waiting caller
            outcome.append(exc)
        finally:
            done.set()

    # getaddrinfo has no timeout of its own; a helper thread lets the caller stop
    # waiting on a stuck resolver (the thread ends when the resolver gives up).
    threading.Thread(target=lookup, name="resolve-host", daemon=True).start()
    if not done.wait(max(timeout, 0.0)):
        raise TimeoutError(f"DNS lookup for {host} timed out")
    result = outcome[0]
    if isinstance(result, BaseException):
        raise result
    addresses: list[IPAddress] = []
    for _family, _type, _proto, _canonname, sockaddr in result:  # type: ignore[attr-defined]
        ip = ipaddress.ip_address(sockaddr[0])
        if ip not in addresses:
            addresses.append(ip)
    return addresses


def validate_target_url(url: str, allow: AllowList, *, resolve: bool = True) -> str:
    """Check a webhook target URL against the SSRF rules; return it stripped."""
    if not isinstance(url, str):
        raise Invalid("URL must be a string")
    url = url.strip()
    if not url:
        raise Invalid("URL must not be empty")
    if len(url) > MAX_URL_LENGTH:
        raise Invalid(f"URL must be at most {MAX_URL_LENGTH} characters")
    # Parsers disagree about backslashes and control characters ("http://a\@b"), and
    # such a disagreement is how a checked URL ends up going somewhere else.
    if any(ch.isspace() or ord(ch) < 0x20 or ord(ch) == 0x7F or ch == "\\" for ch in url):
        raise Invalid("URL must not contain spaces, control characters or backslashes")
    try:
        parts = urllib.parse.urlsplit(url)
    except ValueError as exc:
        raise Invalid(f"URL is not valid: {exc}") from None
    if parts.scheme.lower() not in ("http", "https"):
        raise Invalid("URL must use http or https")
    if "@" in parts.netloc:
        raise Invalid("URL must not contain credentials")
    try:
        # urllib3's reading of the host (the one the delivery client hands to libcurl for
        # a non-ASCII URL); the address libcurl dials is checked again at delivery.
        parsed = parse_url(url)
        port = parts.port
    except (LocationParseError, ValueError):
        raise Invalid("URL is not valid: bad host or port") from None
    if port == 0:
        # Nothing listens on port 0: every delivery would fail to connect.
        raise Invalid("URL is not valid: port must be between 1 and 65535")
    if parsed.auth is not None:
        raise Invalid("URL must not contain credentials")
    host = parsed.host or ""
    if not host or not parts.hostname:
        raise Invalid("URL must have a host")

    if host.startswith("[") and "%" in host:
        raise Invalid("URL must not contain an IPv6 zone id")
    try:
        ip = parse_host_ip(host)
    except ValueError:
        raise Invalid(f"URL host {host} is not a valid address") from None
    if ip is not None:
        if is_blocked_address(ip) and not allow.allows(ip):
            raise Invalid(f"URL points to a private or reserved address ({ip})")
        return url

    if is_localhost_name(host):
        loopback = ipaddress.IPv4Address("127.0.0.1")
        if not allow.allows(loopback):
            raise Invalid(f"URL points to a private or reserved address ({host})")
        return url

    if resolve:
        default_port = 443 if parts.scheme.lower() == "https" else 80
        try:
            addresses = resolve_host(host, port or default_port, timeout=RESOLVE_TIMEOUT)
        except (OSError, UnicodeError):
            # Unresolvable (or slow) now is accepted: it fails, recorded, at delivery.
            return url
        for address in addresses:
            if is_blocked_address(address) and not allow.allows(address):
                raise Invalid(
                    f"URL host {host} resolves to a private or reserved address ({address})"
                )
    return url
