"""The outbound HTTP policy: every request the server makes on its own goes through one guarded session.

Integrators and admins choose URLs the server fetches (API channel callback_url, outgoing desk
webhooks, flow HTTP steps, api_base_url overrides) and platforms hand it media URLs. Without a policy
any of those reaches the server's own network: its admin ports, cloud metadata (169.254.169.254),
Redis. So:

- only http and https;
- every address a host name resolves to must be public (not loopback, private, link-local, multicast,
  unspecified or otherwise reserved), checked *after* DNS resolution by the resolver the connector
  uses, so the connection goes to exactly the address that was checked (a DNS answer that changes
  between a check and the connect, "DNS rebinding", cannot switch it);
- literal IP hosts and every redirect hop are checked by a client middleware (aiohttp runs it for
  each hop; the connector skips the resolver for literal IPs);
- `security.outbound_allow` (CIDRs or host names) opens exactly the private destinations a
  deployment needs, e.g. a callback receiver on the office network. Empty by default.
"""

from __future__ import annotations

import ipaddress
import logging
import socket
from collections.abc import Iterable
from typing import Any

import aiohttp
from aiohttp.abc import AbstractResolver, ResolveResult
from aiohttp.resolver import DefaultResolver
from yarl import URL

from channels.base import OutboundRefused

log = logging.getLogger("scrm.outbound")

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
SCHEMES = frozenset({"http", "https"})


class OutboundPolicy:
    """Which destinations server-side requests may reach (public addresses plus `allow`)."""

    def __init__(self, allow: Iterable[str] = ()) -> None:
        self.networks: list[IPNetwork] = []
        self.hosts: set[str] = set()
        self.suffixes: list[str] = []
        self._allowed: set[tuple[str, str | None]] = set()  # (scheme, host) that passed check_url
        for entry in allow:
            entry = entry.strip().lower()
            if not entry:
                continue
            try:
                self.networks.append(ipaddress.ip_network(entry, strict=False))
                continue
            except ValueError:
                pass
            if entry.startswith("*."):  # *.corp.example: every name under it
                self.suffixes.append(entry[1:])
            else:
                self.hosts.add(entry.rstrip("."))

    def host_allowed(self, host: str) -> bool:
        """A host name the admin allowed by name (its addresses are then not checked)."""
        name = host.lower().rstrip(".")
        return name in self.hosts or any(name.endswith(s) for s in self.suffixes)

    def address_problem(self, address: str) -> str | None:
        """Why `address` may not be reached, or None when it may."""
        try:
            ip: IPAddress = ipaddress.ip_address(address.split("%", 1)[0])
        except ValueError:
            return "not an IP address"
        if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
            ip = ip.ipv4_mapped  # ::ffff:127.0.0.1 is 127.0.0.1
        if any(ip in net for net in self.networks):
            return None
        if ip.is_loopback:
            return "loopback address"
        if ip.is_unspecified:
            return "unspecified address"
        if ip.is_link_local:
            return "link-local address"
        if ip.is_multicast:
            return "multicast address"
        if ip.is_private or not ip.is_global:
            return "private or reserved address"
        return None

    def check_url(self, url: Any) -> None:
        """Scheme and (for a literal IP host) address of one request or redirect hop."""
        u = url if isinstance(url, URL) else URL(str(url))
        key = (u.scheme, u.raw_host)
        if key in self._allowed:  # the same callback host, request after request: checked once
            return
        self._check(u)
        if len(self._allowed) >= 1024:
            self._allowed.clear()
        self._allowed.add(key)

    def _check(self, u: URL) -> None:
        host = u.raw_host or ""
        if u.scheme not in SCHEMES:
            raise OutboundRefused(host or str(u.scheme), f"scheme {u.scheme!r} is not http or https")
        if not host:
            raise OutboundRefused("(none)", "URL without a host")
        if self.host_allowed(host):
            return
        try:
            ipaddress.ip_address(host.split("%", 1)[0])
        except ValueError:
            return  # a name: the resolver checks what it resolves to
        problem = self.address_problem(host)
        if problem:
            raise OutboundRefused(host, problem)


class GuardedResolver(AbstractResolver):
    """Resolves once, refuses the host unless every address is allowed; the connector then connects
    to exactly these addresses (no second lookup an attacker's DNS could answer differently)."""

    def __init__(self, policy: OutboundPolicy, inner: AbstractResolver | None = None) -> None:
        self.policy = policy
        self.inner = inner or DefaultResolver()

    async def resolve(self, host: str, port: int = 0,
                      family: socket.AddressFamily = socket.AF_INET) -> list[ResolveResult]:
        results = await self.inner.resolve(host, port, family)
        if self.policy.host_allowed(host):
            return results
        for result in results:
            problem = self.policy.address_problem(result["host"])
            if problem:
                log.warning("outbound request to %s refused: it resolves to a %s", host, problem)
                raise OutboundRefused(host, f"resolves to a {problem}")
        return results

    async def close(self) -> None:
        await self.inner.close()


def guard_middleware(policy: OutboundPolicy) -> Any:
    """A client middleware checking every request and every redirect hop before it is sent."""

    async def guard(request: aiohttp.ClientRequest, handler: Any) -> aiohttp.ClientResponse:
        try:
            policy.check_url(request.url)
        except OutboundRefused as exc:
            log.warning("%s", exc)
            raise
        response: aiohttp.ClientResponse = await handler(request)
        return response

    return guard


def guarded_session(policy: OutboundPolicy, *, timeout: float = 30.0,
                    resolver: AbstractResolver | None = None) -> aiohttp.ClientSession:
    """The one HTTP client session for server-side requests (create it inside a running loop)."""
    connector = aiohttp.TCPConnector(resolver=GuardedResolver(policy, resolver), use_dns_cache=False)
    return aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=timeout),
                                 middlewares=(guard_middleware(policy),))
