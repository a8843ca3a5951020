"""The SSRF guard: allow lists, blocked ranges, IP spellings and target URL checks."""

from __future__ import annotations

import ipaddress
import socket

import pytest

from shared.errors import Invalid
from shared.targets import (
    AllowList,
    is_blocked_address,
    parse_allowlist,
    parse_host_ip,
    validate_target_url,
)

NOTHING = AllowList()

# Every spelling of an address in a blocked range that browsers or libc accept.
BLOCKED_HOSTS = [
    ("127.0.0.1", "127.0.0.1"),
    ("2130706433", "127.0.0.1"),
    ("0x7f000001", "127.0.0.1"),
    ("0x7f.0.0.1", "127.0.0.1"),
    ("0177.0.0.1", "127.0.0.1"),
    ("017700000001", "127.0.0.1"),
    ("127.1", "127.0.0.1"),
    ("127.0.0.1.", "127.0.0.1"),
    ("%31%32%37.0.0.1", "127.0.0.1"),
    ("[::1]", "::1"),
    ("[::ffff:127.0.0.1]", "::ffff:7f00:1"),
    ("[::ffff:7f00:1]", "::ffff:7f00:1"),
    ("[64:ff9b::7f00:1]", "64:ff9b::7f00:1"),
    ("[2002:7f00:1::]", "2002:7f00:1::"),
    ("10.0.0.1", "10.0.0.1"),
    ("10.1.1", "10.1.0.1"),
    ("172.16.0.1", "172.16.0.1"),
    ("192.168.1.1", "192.168.1.1"),
    ("169.254.169.254", "169.254.169.254"),
    ("100.64.0.1", "100.64.0.1"),
    ("100.100.100.200", "100.100.100.200"),
    ("224.0.0.1", "224.0.0.1"),
    ("0.0.0.0", "0.0.0.0"),
    ("0", "0.0.0.0"),
    ("[::]", "::"),
    ("[fd00:ec2::254]", "fd00:ec2::254"),
    ("[fe80::1]", "fe80::1"),
]


def loopback_hostname() -> str | None:
    """A name (other than localhost) that this machine resolves only to loopback."""
    candidates: list[str] = []
    try:
        with open("/etc/hosts", encoding="utf-8") as hosts:
            for line in hosts:
                fields = line.split("#", 1)[0].split()
                if len(fields) >= 2 and fields[0].startswith("127."):
                    candidates.extend(fields[1:])
    except OSError:
        pass
    candidates.append(socket.gethostname())
    for name in candidates:
        if name.lower().startswith("localhost") or name.lower().endswith(".localhost"):
            continue
        try:
            infos = socket.getaddrinfo(name, 80, type=socket.SOCK_STREAM)
        except OSError:
            continue
        if infos and all(ipaddress.ip_address(info[4][0]).is_loopback for info in infos):
            return name
    return None


# --- AllowList -------------------------------------------------------------------


@pytest.mark.parametrize("value", [None, "", "   ", ","])
def test_unset_or_empty_allowlist_allows_nothing(value: str | None) -> None:
    allow = parse_allowlist(value)
    assert allow == AllowList()
    assert not allow.allows(ipaddress.ip_address("127.0.0.1"))
    assert not allow.allows(ipaddress.ip_address("10.0.0.1"))


def test_star_allowlist_allows_everything() -> None:
    allow = parse_allowlist("*")
    assert allow.allows(ipaddress.ip_address("127.0.0.1"))
    assert allow.allows(ipaddress.ip_address("fd00::1"))


def test_cidr_allowlist_allows_only_its_ranges() -> None:
    allow = parse_allowlist(" 10.0.0.0/8 , fd00::/8,192.168.1.7 ")
    assert allow.allows(ipaddress.ip_address("10.20.30.40"))
    assert allow.allows(ipaddress.ip_address("fd00::1"))
    assert allow.allows(ipaddress.ip_address("192.168.1.7"))
    assert not allow.allows(ipaddress.ip_address("192.168.1.8"))
    assert not allow.allows(ipaddress.ip_address("127.0.0.1"))
    assert not allow.allows(ipaddress.ip_address("fe80::1"))


def test_allowlist_matches_the_ipv4_inside_a_mapped_address() -> None:
    allow = parse_allowlist("127.0.0.0/8")
    assert allow.allows(ipaddress.ip_address("::ffff:127.0.0.1"))
    assert not allow.allows(ipaddress.ip_address("::ffff:10.0.0.1"))


@pytest.mark.parametrize("bad", ["nope", "10.0.0.0/33", "300.1.2.3", "fd00::/129"])
def test_bad_cidr_is_a_value_error_naming_it(bad: str) -> None:
    with pytest.raises(ValueError, match=bad.replace(".", r"\.")):
        parse_allowlist(f"10.0.0.0/8,{bad}")


# --- is_blocked_address ----------------------------------------------------------


@pytest.mark.parametrize(
    "address",
    [
        "127.0.0.1",
        "127.255.255.254",
        "10.0.0.1",
        "172.16.0.1",
        "172.31.255.255",
        "192.168.1.1",
        "169.254.169.254",
        "169.254.0.1",
        "100.64.0.1",
        "100.127.255.255",
        "100.100.100.200",
        "224.0.0.1",
        "239.255.255.250",
        "0.0.0.0",
        "0.1.2.3",
        "240.0.0.1",
        "255.255.255.255",
        "198.18.0.1",
        "198.19.255.255",
        "192.0.2.1",
        "::",
        "::1",
        "fc00::1",
        "fd00:ec2::254",
        "fe80::1",
        "febf::1",
        "ff02::1",
        "::ffff:127.0.0.1",
        "::ffff:10.0.0.1",
        "::ffff:169.254.169.254",
        "::127.0.0.1",
        "::8.8.8.8",
        "::ffff:0:127.0.0.1",
        "2002:7f00:1::",
        "2002:a9fe:a9fe::1",
        "64:ff9b::127.0.0.1",
        "64:ff9b::a9fe:a9fe",
        "64:ff9b:1::a00:1",
        "64:ff9b:1::5db8:d822",
        "2001:db8::1",
        "2001:0:4136:e378:8000:63bf:3fff:fdd2",
    ],
)
def test_private_and_reserved_addresses_are_blocked(address: str) -> None:
    assert is_blocked_address(ipaddress.ip_address(address))


@pytest.mark.parametrize(
    "address",
    [
        "93.184.216.34",
        "8.8.8.8",
        "1.1.1.1",
        "100.63.255.255",
        "100.128.0.0",
        "172.32.0.1",
        "198.20.0.1",
        "2606:4700::1",
        "2a00:1450:4001:80b::200e",
        "::ffff:93.184.216.34",
        "64:ff9b::5db8:d822",
        "2002:5db8:d822::1",
    ],
)
def test_public_addresses_are_not_blocked(address: str) -> None:
    assert not is_blocked_address(ipaddress.ip_address(address))


# --- parse_host_ip ---------------------------------------------------------------


@pytest.mark.parametrize(("host", "expected"), BLOCKED_HOSTS + [("93.184.216.34", "93.184.216.34")])
def test_host_ip_is_recognised_in_every_spelling(host: str, expected: str) -> None:
    assert parse_host_ip(host) == ipaddress.ip_address(expected)


def test_host_ip_accepts_fullwidth_digits_as_browsers_do() -> None:
    assert parse_host_ip("\uff11\uff12\uff17\u3002\uff10\u3002\uff10\u3002\uff11") == (
        ipaddress.ip_address("127.0.0.1")
    )


@pytest.mark.parametrize("host", ["example.com", "localhost", "a.b.c.d", "1.2.3.com", "x1"])
def test_dns_names_are_not_ip_literals(host: str) -> None:
    assert parse_host_ip(host) is None


@pytest.mark.parametrize(
    "host", ["[fe80::1%eth0]", "fe80::1%25eth0", "1.2.3.4.5", "256.0.0.1", "1.2.3.09", "[1.2.3.4]"]
)
def test_zone_ids_and_malformed_numeric_hosts_are_refused(host: str) -> None:
    with pytest.raises(ValueError):
        parse_host_ip(host)


# --- validate_target_url ---------------------------------------------------------


@pytest.mark.parametrize(("host", "address"), BLOCKED_HOSTS)
def test_blocked_ip_literal_is_refused_in_every_spelling(host: str, address: str) -> None:
    with pytest.raises(Invalid) as caught:
        validate_target_url(f"http://{host}:8080/hook", NOTHING)
    assert caught.value.message == f"URL points to a private or reserved address ({address})"


@pytest.mark.parametrize(
    "url", ["http://localhost/", "https://LocalHost.:8443/x", "http://api.localhost/hook"]
)
def test_localhost_names_are_refused_without_dns(url: str) -> None:
    with pytest.raises(Invalid, match="private or reserved address"):
        validate_target_url(url, NOTHING, resolve=False)


def test_name_resolving_to_loopback_is_refused() -> None:
    name = loopback_hostname()
    if name is None:
        pytest.skip("no host name resolving to loopback on this machine")
    with pytest.raises(Invalid) as caught:
        validate_target_url(f"http://{name}/hook", NOTHING)
    assert caught.value.message.startswith(f"URL host {name} resolves to a private")


def test_name_resolving_to_loopback_passes_when_allowed() -> None:
    name = loopback_hostname()
    if name is None:
        pytest.skip("no host name resolving to loopback on this machine")
    url = f"http://{name}/hook"
    assert validate_target_url(url, parse_allowlist("127.0.0.0/8")) == url


def test_unresolvable_name_is_accepted() -> None:
    url = "https://no-such-host.invalid/hook"
    assert validate_target_url(url, NOTHING) == url


@pytest.mark.parametrize(
    "url",
    [
        "http://93.184.216.34/hook",
        "https://93.184.216.34:8443/a?b=c",
        "http://[2606:4700::1]/hook",
        "https://[2606:4700::1]:443/",
        "http://[::ffff:93.184.216.34]/",
        "https://hooks.example.com/path?x=1#frag",
    ],
)
def test_public_targets_pass(url: str) -> None:
    assert validate_target_url(url, NOTHING, resolve=False) == url


def test_url_is_returned_stripped_but_not_rewritten() -> None:
    url = "  HTTPS://Hooks.Example.com/A%20b?q=1 \n"
    assert validate_target_url(url, NOTHING, resolve=False) == "HTTPS://Hooks.Example.com/A%20b?q=1"


def test_allowlist_opens_blocked_literals() -> None:
    allow = parse_allowlist("127.0.0.0/8,10.0.0.0/8")
    for url in ["http://127.0.0.1:9000/", "http://0x7f000001/", "http://[::ffff:127.0.0.1]/"]:
        assert validate_target_url(url, allow) == url
    assert validate_target_url("http://localhost:9000/", allow) == "http://localhost:9000/"
    with pytest.raises(Invalid):
        validate_target_url("http://192.168.1.1/", allow)
    assert validate_target_url("http://192.168.1.1/", parse_allowlist("*")) == "http://192.168.1.1/"


@pytest.mark.parametrize(
    ("url", "message"),
    [
        (None, "URL must be a string"),
        (123, "URL must be a string"),
        ("", "URL must not be empty"),
        ("   ", "URL must not be empty"),
        ("ftp://example.com/", "URL must use http or https"),
        ("javascript:alert(1)", "URL must use http or https"),
        ("file:///etc/passwd", "URL must use http or https"),
        ("example.com/hook", "URL must use http or https"),
        ("http:///hook", "URL must have a host"),
        ("http://", "URL must have a host"),
        ("http://:8080/", "URL must have a host"),
        ("http://user:pw@example.com/", "URL must not contain credentials"),
        ("http://user@example.com/", "URL must not contain credentials"),
        ("http://@example.com/", "URL must not contain credentials"),
        ("http://[fe80::1%25eth0]/", "URL must not contain an IPv6 zone id"),
        ("http://example.com:99999/", "URL is not valid: bad host or port"),
        ("http://example.com:0/", "URL is not valid: port must be between 1 and 65535"),
        ("http://exa mple.com/", "URL must not contain spaces, control characters or backslashes"),
        ("http://a\\@127.0.0.1/", "URL must not contain spaces, control characters or backslashes"),
        ("http://1.2.3.09/", "URL host 1.2.3.09 is not a valid address"),
    ],
)
def test_bad_urls_are_refused_with_a_clear_message(url: object, message: str) -> None:
    with pytest.raises(Invalid) as caught:
        validate_target_url(url, NOTHING, resolve=False)  # type: ignore[arg-type]
    assert caught.value.message == message


def test_too_long_url_is_refused() -> None:
    url = "https://example.com/" + "a" * 2100
    with pytest.raises(Invalid, match="at most 2048 characters"):
        validate_target_url(url, NOTHING, resolve=False)
    fits = "https://example.com/" + "a" * (2048 - len("https://example.com/"))
    assert validate_target_url(fits, NOTHING, resolve=False) == fits
