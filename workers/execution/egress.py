"""The one guard for outbound HTTP a worker makes on a tenant's behalf.

A tenant (an API-key holder) writes the URLs an agent's ``http_request`` tool fetches; the operator
owns the machines the request leaves from. So before a request is sent, ``check`` resolves its host
and refuses it when any address the host resolves to is not a public unicast address: loopback,
private (RFC 1918, ``fc00::/7``, site-local ``fec0::/10``), link-local (``169.254.0.0/16``,
``fe80::/10``), shared/CGNAT (``100.64.0.0/10``), multicast, unspecified (``0.0.0.0/8``, ``::``),
reserved, any other non-global range, an IPv6 address that embeds one of those IPv4 addresses
(IPv4-mapped ``::ffff:a.b.c.d``, IPv4-compatible, NAT64 ``64:ff9b::/96``, 6to4), and the cloud
metadata services (``169.254.169.254``, ``169.254.170.2``, ``100.100.100.200``, ``fd00:ec2::254``
and the host names ``metadata.google.internal`` and ``metadata``). The scheme must be http or https.

The operator may open holes with ``MISSIONS_EGRESS_ALLOW`` (``settings.egress_allow``): a host
name, a ``host:port`` (``[v6]:port`` for IPv6), or a CIDR block. A listed host (or host and port)
may resolve to anything except a metadata address; a CIDR block (an IP entry is a one-address
block) allows the addresses it covers. A metadata address is allowed only when listed exactly: the
address itself (``169.254.169.254``, ``169.254.169.254:80``, ``169.254.169.254/32``), or the
metadata host name the URL names; a wider block such as ``169.254.0.0/16`` does not open it.

DNS rebinding: checking a name and then letting the HTTP library resolve it again would let a
hostile name server answer a public address to the check and ``127.0.0.1`` to the connection. So
the host is resolved exactly once, by ``check``, and the connection goes to the addresses that were
checked: ``GuardedHTTPConnection``/``GuardedHTTPSConnection`` are ``http.client`` connections whose
``connect`` opens the socket to a vetted IP while ``self.host`` stays the URL's host name, so the
``Host`` header, TLS SNI and the certificate's host name check are those of the name, not of the IP
(pinning the IP into the URL instead would break all three for HTTPS). ``opener`` builds a urllib
opener from them in which *every* request, redirects included, is checked again (a redirect is a
new request through the same handlers); it has no proxy handler (an ``http_proxy`` variable would
otherwise send the request to the proxy, past the check) and no ``file:``/``ftp:``/``data:``
handlers. Only the standard library is used (``ipaddress``, ``socket``, ``http.client``,
``urllib.request``).
"""

from __future__ import annotations

import errno
import http.client
import ipaddress
import socket
import ssl
import urllib.request
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
# socket.getaddrinfo's shape: (host, port, family, type) -> [(family, type, proto, canonname, sockaddr)]
Resolver = Callable[[str, int, int, int], Sequence[tuple[Any, ...]]]

SCHEMES = ("http", "https")
MAX_REDIRECTS = 5
METADATA_HOSTS = frozenset({"metadata.google.internal", "metadata"})
METADATA_ADDRESSES = frozenset(
    ipaddress.ip_address(a)
    for a in (
        "169.254.169.254",  # AWS, GCP, Azure, OpenStack, DigitalOcean, ...
        "169.254.170.2",  # AWS ECS task metadata
        "100.100.100.200",  # Alibaba Cloud
        "fd00:ec2::254",  # AWS over IPv6
    )
)
_CGNAT = ipaddress.ip_network("100.64.0.0/10")
_THIS_NETWORK = ipaddress.ip_network("0.0.0.0/8")
_PRIVATE = tuple(
    ipaddress.ip_network(n) for n in ("10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "fc00::/7", "fec0::/10")
)
_NAT64 = (ipaddress.ip_network("64:ff9b::/96"), ipaddress.ip_network("64:ff9b:1::/48"))
_V4_COMPATIBLE = ipaddress.ip_network("::/96")


class EgressError(Exception):
    """A request that will not be sent; ``reason`` is short and safe to show the tenant."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class EgressRefused(EgressError):
    """The URL is not one a tenant may reach from this server."""


class Unresolvable(EgressError):
    """The URL's host does not resolve (nothing was sent)."""


@dataclass(frozen=True)
class Vetted:
    """A URL that passed the guard, with the addresses a connection to it may use (in order)."""

    url: str
    scheme: str
    host: str  # lower case, no brackets, no trailing dot
    port: int
    addresses: tuple[str, ...]


# --------------------------------------------------------------------------------------------
# Hosts and allow-list entries


def normal_host(host: str) -> str:
    """``host`` in lower case without brackets or a trailing dot; IP literals in canonical form."""
    host = host.strip().lower()
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    host = host.rstrip(".")
    try:
        return str(ipaddress.ip_address(host))
    except ValueError:
        return host


def split_entry(entry: str) -> tuple[str, int | None] | None:
    """An allow-list entry as (host, port or None): ``host``, ``host:port``, ``[v6]``, ``[v6]:port``
    or a bare IPv6 address (no port then). None when it is not one of those."""
    entry = entry.strip().lower()
    if not entry:
        return None
    port: str | None = None
    if entry.startswith("["):
        close = entry.find("]")
        if close < 0:
            return None
        host, rest = entry[1:close], entry[close + 1 :]
        if rest:
            if not rest.startswith(":"):
                return None
            port = rest[1:]
    elif entry.count(":") == 1:
        host, port = entry.split(":")
    else:
        host = entry  # a name, an IPv4 address or a bare IPv6 address
    if not host:
        return None
    if port is None:
        return normal_host(host), None
    if not port.isdigit() or not 0 < int(port) < 65536:
        return None
    return normal_host(host), int(port)


@dataclass(frozen=True)
class Allowance:
    """``settings.egress_allow`` parsed: hosts, (host, port) pairs and networks."""

    hosts: frozenset[str] = frozenset()
    host_ports: frozenset[tuple[str, int]] = frozenset()
    networks: tuple[IPNetwork, ...] = ()

    @classmethod
    def parse(cls, entries: Iterable[str]) -> Allowance:
        hosts: set[str] = set()
        host_ports: set[tuple[str, int]] = set()
        networks: list[IPNetwork] = []
        for entry in entries:
            if "/" in entry:
                try:
                    networks.append(ipaddress.ip_network(entry.strip(), strict=False))
                except ValueError:
                    continue  # not a block: it can match nothing
                continue
            parsed = split_entry(entry)
            if parsed is None:
                continue
            host, port = parsed
            if port is None:
                hosts.add(host)
            else:
                host_ports.add((host, port))
        return cls(frozenset(hosts), frozenset(host_ports), tuple(networks))

    def names(self, host: str, port: int) -> bool:
        """Whether the host itself (or the host and this port) is listed."""
        return host in self.hosts or (host, port) in self.host_ports

    def covers(self, address: IPAddress, port: int) -> bool:
        """Whether a listed block, IP or IP and port covers ``address``."""
        text = str(address)
        if self.names(text, port):
            return True
        return any(address.version == n.version and address in n for n in self.networks)

    def lists_exactly(self, address: IPAddress, port: int) -> bool:
        """Whether ``address`` is listed as itself (an IP, IP and port, or a one-address block)."""
        if self.names(str(address), port):
            return True
        return any(n.num_addresses == 1 and n.network_address == address for n in self.networks)


# --------------------------------------------------------------------------------------------
# Addresses


def embedded_ipv4(address: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    """The IPv4 address an IPv6 address stands for (mapped, compatible, NAT64, 6to4), if any."""
    if address.ipv4_mapped is not None:
        return address.ipv4_mapped
    if address.sixtofour is not None:
        return address.sixtofour
    if any(address in n for n in _NAT64) or (address in _V4_COMPATIBLE and int(address) > 1):
        return ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    return None


def classify(address: IPAddress) -> str | None:
    """What kind of non-public address ``address`` is ("a loopback address", ...), None if public."""
    address = unscoped(address)
    if address in METADATA_ADDRESSES:
        return "a metadata address"
    if isinstance(address, ipaddress.IPv6Address):
        inner = embedded_ipv4(address)
        if inner is not None:
            kind = classify(inner)
            return f"{kind} (embedded in IPv6)" if kind else None
    if address.is_loopback:
        return "a loopback address"
    if address.is_unspecified or address in _THIS_NETWORK:
        return "an unspecified address"
    if address.is_link_local:
        return "a link-local address"
    if address in _CGNAT:
        return "a shared (CGNAT) address"
    if any(address.version == n.version and address in n for n in _PRIVATE):
        return "a private address"
    if address.is_multicast:
        return "a multicast address"
    if address.is_reserved:
        return "a reserved address"
    if address.is_private or not address.is_global:
        return "a non-public address"
    return None


def unscoped(address: IPAddress) -> IPAddress:
    """``address`` without an IPv6 zone (``fe80::1%eth0`` -> ``fe80::1``)."""
    if isinstance(address, ipaddress.IPv6Address) and address.scope_id:
        return ipaddress.IPv6Address(str(address).split("%", 1)[0])
    return address


def _is_metadata(address: IPAddress) -> bool:
    address = unscoped(address)
    if address in METADATA_ADDRESSES:
        return True
    if isinstance(address, ipaddress.IPv6Address):
        inner = embedded_ipv4(address)
        return inner is not None and inner in METADATA_ADDRESSES
    return False


def _parse_address(raw: object) -> IPAddress | None:
    try:
        return ipaddress.ip_address(str(raw))
    except ValueError:
        return None


# --------------------------------------------------------------------------------------------
# The check


def check(url: str, allow: Sequence[str] | Allowance = (), resolve: Resolver = socket.getaddrinfo) -> Vetted:
    """Resolve ``url``'s host once and vet every address; ``EgressRefused`` when one may not be reached.

    Returns the URL's parts and the addresses a connection may use (``GuardedHTTPConnection``).
    ``Unresolvable`` when the host does not resolve.
    """
    allowance = allow if isinstance(allow, Allowance) else Allowance.parse(allow)
    try:
        parts = urlsplit(url)
    except ValueError:
        raise EgressRefused("the URL cannot be parsed") from None
    scheme = parts.scheme.lower()
    if scheme not in SCHEMES:
        raise EgressRefused(f"only http and https URLs may be requested, not {scheme or 'a relative URL'!r}")
    if not parts.hostname:
        raise EgressRefused("the URL has no host")
    host = normal_host(parts.hostname)
    try:
        port = parts.port or (443 if scheme == "https" else 80)
    except ValueError:
        raise EgressRefused("the URL's port is not a number from 1 to 65535") from None
    if host in METADATA_HOSTS and not allowance.names(host, port):
        raise EgressRefused(f"{host} is a metadata host name")
    literal = _parse_address(host)
    if literal is not None:
        addresses: list[IPAddress] = [literal]
    else:
        addresses = _resolve(host, port, resolve)
    for address in (unscoped(a) for a in addresses):
        kind = classify(address)
        if kind is None:
            continue
        if _is_metadata(address):
            allowed = allowance.lists_exactly(address, port) or (host in METADATA_HOSTS and allowance.names(host, port))
            if not allowed and isinstance(address, ipaddress.IPv6Address):
                inner = embedded_ipv4(address)
                allowed = inner is not None and allowance.lists_exactly(inner, port)
        else:
            allowed = allowance.names(host, port) or allowance.covers(address, port)
            if not allowed and isinstance(address, ipaddress.IPv6Address):
                inner = embedded_ipv4(address)
                allowed = inner is not None and allowance.covers(inner, port)
        if not allowed:
            if literal is not None:
                raise EgressRefused(f"{host} is {kind}")
            raise EgressRefused(f"{host} resolves to {kind} ({address})")
    return Vetted(url, scheme, host, port, tuple(str(a) for a in addresses))


def _resolve(host: str, port: int, resolve: Resolver) -> list[IPAddress]:
    try:
        answers = resolve(host, port, 0, socket.SOCK_STREAM)
    except (OSError, UnicodeError) as exc:  # socket.gaierror is an OSError
        raise Unresolvable(f"{host} does not resolve ({getattr(exc, 'strerror', None) or exc})") from None
    addresses: list[IPAddress] = []
    for answer in answers:
        sockaddr = answer[4] if len(answer) > 4 else None
        if not isinstance(sockaddr, tuple) or not sockaddr:
            continue
        address = _parse_address(sockaddr[0])
        if address is None:  # not an IP socket address: never connect to what we cannot vet
            raise EgressRefused(f"{host} resolves to something that is not an IP address")
        if address not in addresses:
            addresses.append(address)
    if not addresses:
        raise Unresolvable(f"{host} does not resolve")
    return addresses


# --------------------------------------------------------------------------------------------
# Connections pinned to vetted addresses


def _open_socket(
    addresses: Sequence[str], port: int, timeout: float | None, source: tuple[str, int] | None
) -> socket.socket:
    """A TCP connection to the first of ``addresses`` that answers (as ``socket.create_connection``)."""
    last: OSError | None = None
    for address in addresses:
        try:
            return socket.create_connection((address, port), timeout, source)
        except OSError as exc:
            last = exc
    raise last if last is not None else OSError("no address to connect to")


def _no_delay(sock: socket.socket) -> None:
    try:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    except OSError as exc:
        if exc.errno != errno.ENOPROTOOPT:
            raise


class GuardedHTTPConnection(http.client.HTTPConnection):
    """An HTTP connection to ``host`` that connects only to ``addresses`` (vetted by ``check``)."""

    def __init__(self, host: str, port: int | None = None, *, addresses: Sequence[str], **kwargs: Any) -> None:
        super().__init__(host, port, **kwargs)
        if not addresses:
            raise ValueError("a guarded connection needs the vetted addresses")
        self.addresses = tuple(addresses)
        self.source: tuple[str, int] | None = kwargs.get("source_address")

    def set_tunnel(self, host: str, port: int | None = None, headers: Any = None) -> None:
        raise EgressRefused("requests through a proxy tunnel are not supported")

    def connect(self) -> None:
        self.sock = _open_socket(self.addresses, self.port, self.timeout, self.source)
        _no_delay(self.sock)


class GuardedHTTPSConnection(http.client.HTTPSConnection):
    """An HTTPS connection to ``host`` that connects only to ``addresses``; SNI and the certificate
    check use ``host``."""

    def __init__(
        self,
        host: str,
        port: int | None = None,
        *,
        addresses: Sequence[str],
        context: ssl.SSLContext | None = None,
        **kwargs: Any,
    ) -> None:
        tls = context if context is not None else ssl.create_default_context()
        super().__init__(host, port, context=tls, **kwargs)
        if not addresses:
            raise ValueError("a guarded connection needs the vetted addresses")
        self.addresses = tuple(addresses)
        self.source: tuple[str, int] | None = kwargs.get("source_address")
        self.tls = tls

    def set_tunnel(self, host: str, port: int | None = None, headers: Any = None) -> None:
        raise EgressRefused("requests through a proxy tunnel are not supported")

    def connect(self) -> None:
        sock = _open_socket(self.addresses, self.port, self.timeout, self.source)
        try:
            _no_delay(sock)
            self.sock = self.tls.wrap_socket(sock, server_hostname=self.host)
        except BaseException:
            sock.close()
            raise


class _Connections:
    """A ``do_open`` connection factory bound to one vetted URL."""

    def __init__(self, cls: Callable[..., http.client.HTTPConnection], vetted: Vetted, **kwargs: Any) -> None:
        self.cls, self.vetted, self.kwargs = cls, vetted, kwargs

    def __call__(self, host: str, **kwargs: Any) -> http.client.HTTPConnection:
        return self.cls(host, addresses=self.vetted.addresses, **self.kwargs, **kwargs)


class GuardedHTTPHandler(urllib.request.HTTPHandler):
    """urllib's http handler, checking every request and connecting to its vetted addresses."""

    def __init__(self, guard: Callable[[str], Vetted]) -> None:
        super().__init__()
        self.guard = guard

    def http_open(self, req: urllib.request.Request) -> http.client.HTTPResponse:
        vetted = self.guard(req.full_url)
        return self.do_open(_Connections(GuardedHTTPConnection, vetted), req)


class GuardedHTTPSHandler(urllib.request.HTTPSHandler):
    """urllib's https handler, checking every request and connecting to its vetted addresses."""

    def __init__(self, guard: Callable[[str], Vetted], context: ssl.SSLContext | None = None) -> None:
        super().__init__()
        self.guard = guard
        self.tls = context

    def https_open(self, req: urllib.request.Request) -> http.client.HTTPResponse:
        vetted = self.guard(req.full_url)
        factory = _Connections(GuardedHTTPSConnection, vetted, context=self.tls)
        return self.do_open(factory, req)


class GuardedRedirectHandler(urllib.request.HTTPRedirectHandler):
    """Follows at most ``MAX_REDIRECTS`` redirects, each target checked before it is requested:
    first by ``also`` (e.g. the agent's ``allowedHosts``), then by the guard."""

    max_redirections = MAX_REDIRECTS

    def __init__(self, guard: Callable[[str], Vetted], also: Callable[[str], None] | None = None) -> None:
        super().__init__()
        self.guard, self.also = guard, also

    def redirect_request(
        self, req: urllib.request.Request, fp: Any, code: int, msg: str, headers: Any, newurl: str
    ) -> urllib.request.Request | None:
        if self.also is not None:
            self.also(newurl)
        self.guard(newurl)
        return super().redirect_request(req, fp, code, msg, headers, newurl)


def opener(
    allow: Sequence[str] | Allowance = (),
    *,
    resolve: Resolver = socket.getaddrinfo,
    check_redirect: Callable[[str], None] | None = None,
    context: ssl.SSLContext | None = None,
) -> urllib.request.OpenerDirector:
    """A urllib opener for tenant-driven requests: http(s) only, no proxies, every request and
    redirect hop through ``check`` (and redirect targets through ``check_redirect`` first). A
    refused hop raises ``EgressRefused`` (``Unresolvable``) out of ``open``; nothing is sent to it."""
    allowance = allow if isinstance(allow, Allowance) else Allowance.parse(allow)

    def guard(url: str) -> Vetted:
        return check(url, allowance, resolve)

    director = urllib.request.OpenerDirector()
    for handler in (
        urllib.request.UnknownHandler(),
        urllib.request.HTTPDefaultErrorHandler(),
        urllib.request.HTTPErrorProcessor(),
        GuardedRedirectHandler(guard, check_redirect),
        GuardedHTTPHandler(guard),
        GuardedHTTPSHandler(guard, context),
    ):
        director.add_handler(handler)
    return director
