"""Outbound calls to URLs that outsiders chose: provider endpoints and consumer webhook callbacks.

Such a URL must not turn the platform into a server-side request forgery tool: a host that is,
or resolves to, a loopback, private, link-local (cloud metadata at 169.254.169.254), multicast,
reserved or unspecified address is refused, whatever way it is spelled (``127.1``,
``2130706433``, ``0x7f.1``, ``[::ffff:127.0.0.1]``, ``[64:ff9b::a00:1]``, ``localhost.``,
``metadata.google.internal``).

Two layers:

- `host_problem` classifies a host *without* resolving it (literal addresses, ``localhost`` and
  cloud metadata names). Submit-time validation uses it: resolving there would be slow, make the API depend on
  DNS, and prove nothing, since the name can point elsewhere by the time it is called.
- `client` is an httpx client whose connections are made by `EgressBackend`. For every TCP
  connection, the backend resolves the host once, refuses if *any* resolved address is
  forbidden, and then connects to exactly the addresses it checked. There is no second lookup
  between the check and the connect, so DNS rebinding (public answer for the check, private
  answer for the connect) has nothing to exploit. Only the socket's peer address changes: the
  URL, and thus the Host header, TLS SNI and certificate verification, keep the original host
  name, because httpcore starts TLS with the origin's host name after `connect_tcp` returns.

  This is done at the connection layer rather than by rewriting URLs to IP addresses (which
  would need the `sni_hostname` extension, a Host header override and per-hop bookkeeping)
  because every connection httpx makes goes through `connect_tcp`, including each hop of a
  redirect if a caller ever enables following them: each hop is checked like the first.

Redirects are not followed by `client` (``follow_redirects=False``); callers report the 3xx and
its Location instead. A refusal surfaces as `httpx.ConnectError` caused by `EgressRefused`;
`refusal(exc)` finds it.
"""

from __future__ import annotations

import functools
import ipaddress
import os
import re
import socket
import ssl
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import httpcore
import httpx

from core.settings import Environment, Settings

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

# Names that mean "this machine" without any lookup (RFC 6761 6.3, and the usual /etc/hosts aliases).
LOCAL_NAMES = frozenset({"localhost", "localhost.localdomain", "ip6-localhost", "ip6-loopback"})
# Names of cloud instance-metadata services (Google Cloud, AWS): inside those clouds they resolve to
# 169.254.169.254 or fd00:ec2::254, which the connect-time check refuses too; refusing the names
# themselves also answers at submit, where nothing is resolved.
METADATA_NAMES = frozenset(
    {"metadata.google.internal", "metadata.goog", "metadata", "instance-data", "instance-data.ec2.internal"}
)
# Shorthand IPv4 forms ("127.1", "0x7f.1", "017700000001", "2130706433") that `ipaddress` rejects
# but inet_aton, and therefore getaddrinfo and every HTTP client, accept.
_NUMERIC_HOST = re.compile(r"(0x[0-9a-f]*|[0-9]+)(\.(0x[0-9a-f]*|[0-9]+)){0,3}", re.IGNORECASE)
_NAT64 = (ipaddress.ip_network("64:ff9b::/96"), ipaddress.ip_network("64:ff9b:1::/48"))
_SIIT = ipaddress.ip_network("::ffff:0:0:0/96")  # IPv4-translated addresses (RFC 2765)
_COMPATIBLE = ipaddress.ip_network("::/96")  # deprecated IPv4-compatible addresses (::a.b.c.d)


class EgressRefused(httpcore.ConnectError):
    """The destination is not publicly routable. A ConnectError, so httpx maps it like one."""

    def __init__(self, host: str, reason: str) -> None:
        super().__init__(f"{host!r} {reason}")
        self.host = host
        self.reason = reason


@dataclass(frozen=True)
class EgressPolicy:
    """What outbound calls may reach. `allow_private` is for development and tests only."""

    allow_private: bool = False

    @classmethod
    def for_endpoints(cls, settings: Settings) -> EgressPolicy:
        """Provider endpoints: loopback/private only with allow_insecure_endpoints, never in production."""
        return cls(allow_private=settings.endpoint_tests.allow_insecure_endpoints and not settings.is_production)

    @classmethod
    def for_callbacks(cls, settings: Settings) -> EgressPolicy:
        """Consumer webhook callbacks: as endpoints, and also in development (local receivers), never in production."""
        local_ok = settings.environment is Environment.DEVELOPMENT or settings.endpoint_tests.allow_insecure_endpoints
        return cls(allow_private=local_ok and not settings.is_production)


# --- classification ----------------------------------------------------------------------------


def normalize_host(host: str) -> str:
    """Lower case, without IPv6 brackets and without the trailing dot of an absolute name."""
    host = host.strip().lower()
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    return host[:-1] if host.endswith(".") and not host.endswith("..") else host


def parse_ip_literal(host: str) -> IPAddress | None:
    """The address a host string denotes by itself, in any form a resolver accepts; None for a name."""
    host = normalize_host(host).replace("%25", "%")  # a URL's zone id is percent-encoded: [fe80::1%25eth0]
    try:
        return ipaddress.ip_address(host)
    except ValueError:
        pass
    if _NUMERIC_HOST.fullmatch(host):
        try:
            return ipaddress.IPv4Address(socket.inet_aton(host))
        except OSError:
            return None
    return None


def _embedded_ipv4(ip: ipaddress.IPv6Address) -> list[ipaddress.IPv4Address]:
    """IPv4 addresses an IPv6 address carries and that a stack or gateway may deliver to."""
    found = [v4 for v4 in (ip.ipv4_mapped, ip.sixtofour) if v4 is not None]
    if ip.teredo is not None:
        found.extend(ip.teredo)
    low32 = ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    if any(ip in net for net in _NAT64) or ip in _SIIT or (ip in _COMPATIBLE and int(ip) > 1):
        found.append(low32)
    return found


def address_problem(ip: IPAddress) -> str | None:
    """Why a connection to `ip` is refused ("a loopback address", ...); None if it is publicly routable."""
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.scope_id:
            return "a scoped (zone id) address"
        for inner in _embedded_ipv4(ip):
            problem = address_problem(inner)
            if problem is not None:
                return f"{problem} (embedded in {ip})"
    for label, flag in (
        ("an unspecified address", ip.is_unspecified),
        ("a loopback address", ip.is_loopback),
        ("a link-local address", ip.is_link_local),
        ("a multicast address", ip.is_multicast),
        ("a private address", ip.is_private),
        ("a reserved address", ip.is_reserved),
        ("a site-local address", isinstance(ip, ipaddress.IPv6Address) and ip.is_site_local),
    ):
        if flag:
            return label
    if not ip.is_global:  # shared (CGNAT 100.64/10), documentation and other special ranges
        return "not a publicly routable address"
    return None


def host_problem(host: str) -> str | None:
    """Why `host` is refused judging by its spelling alone (no DNS); None if only resolution can tell."""
    name = normalize_host(host)
    if name in LOCAL_NAMES or name.endswith(".localhost"):
        return "is a local host name"
    if name in METADATA_NAMES:
        return "is a cloud metadata host name"
    ip = parse_ip_literal(name)
    if ip is None:
        return None
    problem = address_problem(ip)
    return f"is {problem}" if problem else None


def url_problem(url: str, policy: EgressPolicy) -> str | None:
    """host_problem of a URL's host under `policy`; None when allowed or when only DNS can tell."""
    if policy.allow_private:
        return None
    try:
        host = httpx.URL(url).host
    except httpx.InvalidURL as exc:
        return f"is not a valid URL: {exc}"
    problem = host_problem(host) if host else "has no host"
    return f"host {host!r} {problem}" if problem else None


# --- resolution and connection -------------------------------------------------------------------

# The resolver, a seam for tests (which must never send DNS queries for public names).
_getaddrinfo = socket.getaddrinfo


def resolve(host: str, port: int) -> list[IPAddress]:
    """Every address `host` resolves to (literals without any lookup), in the resolver's order."""
    literal = parse_ip_literal(host)
    if literal is not None:
        return [literal]
    try:
        infos = _getaddrinfo(normalize_host(host), port, type=socket.SOCK_STREAM, proto=socket.IPPROTO_TCP)
    except (OSError, UnicodeError) as exc:
        raise httpcore.ConnectError(f"cannot resolve {host!r}: {exc}") from exc
    addresses: list[IPAddress] = []
    for _family, _type, _proto, _name, sockaddr in infos:
        ip = ipaddress.ip_address(str(sockaddr[0]))
        if ip not in addresses:
            addresses.append(ip)
    if not addresses:
        raise httpcore.ConnectError(f"cannot resolve {host!r}: no address")
    return addresses


def vet(host: str, port: int, policy: EgressPolicy) -> list[IPAddress]:
    """Resolve `host` once; raise EgressRefused unless every address may be reached."""
    name_problem = None if policy.allow_private else host_problem(host)
    if name_problem is not None:
        raise EgressRefused(host, name_problem)
    addresses = resolve(host, port)
    if policy.allow_private:
        return addresses
    for ip in addresses:
        problem = address_problem(ip)
        if problem is not None:
            # One bad answer refuses the host: a resolver may rotate the order per lookup.
            raise EgressRefused(host, f"resolves to {ip}, {problem}")
    return addresses


class EgressBackend(httpcore.SyncBackend):
    """httpcore network backend that connects only to the addresses it has vetted."""

    def __init__(self, policy: EgressPolicy) -> None:
        self.policy = policy

    def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.NetworkStream:
        last: httpcore.ConnectError | httpcore.ConnectTimeout | None = None
        for ip in vet(host, port, self.policy):
            try:
                return self._open(ip, port, timeout, local_address, socket_options)
            except (httpcore.ConnectError, httpcore.ConnectTimeout) as exc:
                last = exc
        assert last is not None  # vet() returns at least one address or raises
        raise last

    def _open(
        self,
        ip: IPAddress,
        port: int,
        timeout: float | None,
        local_address: str | None,
        socket_options: Iterable[Any] | None,
    ) -> httpcore.NetworkStream:
        # A literal address: create_connection's own getaddrinfo does no lookup for it.
        return super().connect_tcp(str(ip), port, timeout, local_address, socket_options)


def transport(policy: EgressPolicy, ssl_context: ssl.SSLContext) -> httpx.HTTPTransport:
    """An httpx transport whose connection pool dials through EgressBackend, without retries or proxies."""
    checked = httpx.HTTPTransport(verify=ssl_context, trust_env=False, retries=0)
    # httpx 0.28 (pinned) has no public way to pass a network backend; its transport only
    # forwards requests to `_pool`, so the pool is replaced by one built with the same options.
    assert isinstance(checked._pool, httpcore.ConnectionPool)  # no proxy was configured
    checked._pool = httpcore.ConnectionPool(
        ssl_context=ssl_context, http1=True, http2=False, retries=0, network_backend=EgressBackend(policy)
    )
    return checked


def shared_ssl_context() -> ssl.SSLContext:
    """Loading the CA bundle costs ~35 ms, more than a whole check against a fast endpoint: one
    context per CA configuration, shared by every client (an SSLContext is safe across threads)."""
    return _ssl_context_for(os.environ.get("SSL_CERT_FILE"), os.environ.get("SSL_CERT_DIR"))


@functools.lru_cache(maxsize=4)
def _ssl_context_for(_cafile: str | None, _capath: str | None) -> ssl.SSLContext:
    return httpx.create_ssl_context(trust_env=True)  # reads the same two variables


def client(policy: EgressPolicy, **options: Any) -> httpx.Client:
    """An httpx.Client for untrusted URLs: vetted connections, no redirects, no proxies, no ~/.netrc.

    trust_env=False keeps proxy variables and ~/.netrc credentials away from an outsider's
    host; the CA bundle still honours SSL_CERT_FILE/SSL_CERT_DIR. `options` go to httpx.Client
    (timeout, headers, and follow_redirects, which every hop then passes through the same check).
    """
    ssl_context = shared_ssl_context()
    options.setdefault("follow_redirects", False)
    return httpx.Client(transport=transport(policy, ssl_context), trust_env=False, **options)


def refusal(exc: BaseException) -> EgressRefused | None:
    """The EgressRefused behind an httpx error (httpx raises its own type *from* httpcore's)."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        if isinstance(current, EgressRefused):
            return current
        seen.add(id(current))
        current = current.__cause__ or current.__context__
    return None
