"""Where a webhook may be sent: http(s) only, and, unless the deployment allows private
targets (`webhooks_allow_private_targets`; dev and test do, prod does not), only to public
addresses.

The host is resolved and every address it resolves to must be global unicast (not private,
loopback, link-local, multicast, reserved, shared, unspecified, documentation; IPv4-mapped,
6to4 and NAT64 IPv6 addresses are judged by their IPv4 address). At send time the check runs
again and the request goes to the checked address itself (the URL's host kept in `Host` and
TLS SNI), so DNS rebinding between check and connect cannot redirect it. Redirects are never
followed."""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from dataclasses import dataclass
from urllib.parse import urlsplit, urlunsplit

IP = ipaddress.IPv4Address | ipaddress.IPv6Address


class UnsafeTarget(ValueError):
    """A URL the gateway refuses to send to."""


@dataclass(frozen=True)
class Target:
    """Where to connect: `url` (the address itself when pinned), plus the original host for
    `Host` and SNI."""

    url: str
    host_header: str
    sni_hostname: str
    pinned: bool


_NAT64 = ipaddress.ip_network("64:ff9b::/96")


def is_public(ip: IP) -> bool:
    if isinstance(ip, ipaddress.IPv6Address):
        # IPv6 forms that carry an IPv4 address are judged by that address.
        if ip.ipv4_mapped is not None:
            return is_public(ip.ipv4_mapped)
        if ip.sixtofour is not None and not is_public(ip.sixtofour):
            return False
        if ip in _NAT64:
            return is_public(ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF))
    return ip.is_global and not ip.is_multicast


def check_syntax(url: str) -> tuple[str, str, int]:
    """(scheme, host, port) of an acceptable URL, else UnsafeTarget."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as e:
        raise UnsafeTarget(f"not a valid URL: {e}") from None
    if parts.scheme not in ("http", "https"):
        raise UnsafeTarget("only http and https URLs are allowed")
    if not parts.hostname:
        raise UnsafeTarget("the URL has no host")
    if parts.username or parts.password:
        raise UnsafeTarget("credentials in the URL are not allowed")
    return parts.scheme, parts.hostname, port or (443 if parts.scheme == "https" else 80)


async def resolve(host: str, port: int) -> list[IP]:
    try:
        return [ipaddress.ip_address(host)]
    except ValueError:
        pass
    try:
        infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except OSError as e:
        raise UnsafeTarget(f"the host {host} does not resolve") from e
    addresses: list[IP] = []
    for info in infos:
        address = ipaddress.ip_address(str(info[4][0]).split("%")[0])
        if address not in addresses:
            addresses.append(address)
    if not addresses:
        raise UnsafeTarget(f"the host {host} does not resolve")
    return addresses


async def check(url: str, allow_private: bool) -> Target:
    """Refuse an unsafe URL (UnsafeTarget) or say where to connect."""
    scheme, host, port = check_syntax(url)
    if allow_private:
        return Target(url, "", host, pinned=False)
    addresses = await resolve(host, port)
    for address in addresses:
        if not is_public(address):
            raise UnsafeTarget(
                f"{host} resolves to {address}, a private, loopback, link-local, multicast "
                "or reserved address"
            )
    parts = urlsplit(url)
    first = addresses[0]
    literal = f"[{first}]" if first.version == 6 else str(first)
    netloc = literal if parts.port is None else f"{literal}:{parts.port}"
    pinned = urlunsplit((scheme, netloc, parts.path or "/", parts.query, ""))
    return Target(pinned, parts.netloc, host, pinned=True)
