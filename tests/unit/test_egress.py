"""The egress guard: a tenant's URL is refused when its host resolves to any address a tenant must
not reach (loopback, private, link-local, CGNAT, multicast, unspecified, reserved, IPv4 embedded in
IPv6, metadata) unless the operator allows it; the connection goes to the address that was checked
(no DNS rebinding); every redirect hop is checked again; proxies from the environment are ignored.

Resolvers are stubs: nothing here resolves a name or sends a packet, except to loopback servers
started by the tests themselves."""

from __future__ import annotations

import http.server
import ipaddress
import socket
import ssl
import threading
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from workers.execution import egress
from workers.execution.egress import Allowance, EgressRefused, Unresolvable, check

PUBLIC_V4 = "93.184.215.14"
PUBLIC_V6 = "2606:2800:21f:cb07:6820:80da:af6b:8b2c"


def answers(*addresses: str) -> Callable[..., list[tuple[Any, ...]]]:
    """A resolver that answers ``addresses`` for every name (and records the names asked)."""

    def resolve(host: str, port: int, family: int = 0, type: int = 0) -> list[tuple[Any, ...]]:
        resolve.asked.append(host)  # type: ignore[attr-defined]
        out = []
        for address in addresses:
            if ":" in address:
                out.append((socket.AF_INET6, socket.SOCK_STREAM, 6, "", (address, port, 0, 0)))
            else:
                out.append((socket.AF_INET, socket.SOCK_STREAM, 6, "", (address, port)))
        return out

    resolve.asked = []  # type: ignore[attr-defined]
    return resolve


def by_name(table: dict[str, str]) -> Callable[..., list[tuple[Any, ...]]]:
    def resolve(host: str, port: int, family: int = 0, type: int = 0) -> list[tuple[Any, ...]]:
        if host not in table:
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        return answers(table[host])(host, port)

    return resolve


def never(host: str, port: int, family: int = 0, type: int = 0) -> list[tuple[Any, ...]]:
    raise AssertionError(f"the guard resolved {host!r}; it should have refused first")


REFUSED = [
    ("127.0.0.1", "a loopback address"),
    ("127.8.9.10", "a loopback address"),
    ("::1", "a loopback address"),
    ("10.1.2.3", "a private address"),
    ("172.16.5.4", "a private address"),
    ("192.168.1.1", "a private address"),
    ("fd12:3456::1", "a private address"),
    ("fec0::1", "a private address"),
    ("169.254.1.1", "a link-local address"),
    ("fe80::1", "a link-local address"),
    ("100.64.1.1", "a shared (CGNAT) address"),
    ("224.0.0.1", "a multicast address"),
    ("ff02::1", "a multicast address"),
    ("0.0.0.0", "an unspecified address"),
    ("0.1.2.3", "an unspecified address"),
    ("::", "an unspecified address"),
    ("240.0.0.1", "a reserved address"),
    ("255.255.255.255", "a reserved address"),
    ("192.0.2.10", "a non-public address"),
    ("::ffff:127.0.0.1", "a loopback address (embedded in IPv6)"),
    ("::ffff:10.0.0.1", "a private address (embedded in IPv6)"),
    ("64:ff9b::a01:203", "a private address (embedded in IPv6)"),
    ("2002:a00:1::1", "a private address (embedded in IPv6)"),
    ("169.254.169.254", "a metadata address"),
    ("169.254.170.2", "a metadata address"),
    ("100.100.100.200", "a metadata address"),
    ("fd00:ec2::254", "a metadata address"),
    ("::ffff:169.254.169.254", "a metadata address (embedded in IPv6)"),
]


@pytest.mark.parametrize(("address", "kind"), REFUSED)
def test_a_host_resolving_to_a_non_public_address_is_refused(address: str, kind: str) -> None:
    with pytest.raises(EgressRefused) as refused:
        check("https://api.internal/v1", (), answers(address))
    assert refused.value.reason == f"api.internal resolves to {kind} ({ipaddress.ip_address(address)})"


@pytest.mark.parametrize(("address", "kind"), REFUSED)
def test_an_ip_literal_is_refused_without_resolving(address: str, kind: str) -> None:
    host = f"[{address}]" if ":" in address else address
    with pytest.raises(EgressRefused) as refused:
        check(f"http://{host}:8080/x", (), never)
    assert refused.value.reason == f"{ipaddress.ip_address(address)} is {kind}"


def test_public_addresses_pass_and_are_the_addresses_to_connect_to() -> None:
    vetted = check("https://Example.COM./a?b", (), answers(PUBLIC_V4, PUBLIC_V6, PUBLIC_V4))
    assert (vetted.scheme, vetted.host, vetted.port) == ("https", "example.com", 443)
    assert vetted.addresses == (PUBLIC_V4, PUBLIC_V6)
    assert check("http://example.com:8080/", (), answers(PUBLIC_V4)).port == 8080


def test_one_refused_address_among_public_ones_refuses_the_url() -> None:
    with pytest.raises(EgressRefused, match=r"resolves to a private address \(10\.0\.0\.7\)"):
        check("https://api.example.com/", (), answers(PUBLIC_V4, PUBLIC_V6, "10.0.0.7"))


@pytest.mark.parametrize("host", ["metadata.google.internal", "METADATA.google.internal.", "metadata"])
def test_metadata_host_names_are_refused_before_resolving(host: str) -> None:
    with pytest.raises(EgressRefused, match="is a metadata host name"):
        check(f"http://{host}/computeMetadata/v1/", (), never)


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("ftp://example.com/x", "only http and https URLs may be requested, not 'ftp'"),
        ("file:///etc/passwd", "only http and https URLs may be requested, not 'file'"),
        ("gopher://127.0.0.1:6379/_FLUSHALL", "only http and https URLs may be requested, not 'gopher'"),
        ("/relative/path", "only http and https URLs may be requested, not 'a relative URL'"),
        ("http:///no-host", "the URL has no host"),
        ("http://example.com:99999/", "the URL's port is not a number from 1 to 65535"),
    ],
)
def test_other_schemes_and_broken_urls_are_refused(url: str, reason: str) -> None:
    with pytest.raises(EgressRefused) as refused:
        check(url, (), never)
    assert refused.value.reason == reason


def test_numeric_host_spellings_are_judged_by_the_address_they_resolve_to() -> None:
    def numeric(host: str, port: int, family: int = 0, type: int = 0) -> list[tuple[Any, ...]]:
        # the system resolver, numeric forms only: never a DNS query
        return socket.getaddrinfo(host, port, family, type, 0, socket.AI_NUMERICHOST)

    for url in ("http://2130706433/", "http://0x7f.1/", "http://0177.0.0.1/", "http://127.1/"):
        with pytest.raises(EgressRefused, match=r"resolves to a loopback address \(127\.0\.0\.1\)"):
            check(url, (), numeric)


def test_a_host_that_does_not_resolve_is_unresolvable() -> None:
    with pytest.raises(Unresolvable, match="nowhere.invalid does not resolve"):
        check("https://nowhere.invalid/", (), by_name({}))
    with pytest.raises(Unresolvable):
        check("https://empty.example/", (), answers())


# -- the operator's allow list ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "address", "allow", "ok"),
    [
        ("http://api.internal/", "10.1.2.3", ["api.internal"], True),
        ("http://API.internal./", "10.1.2.3", ["api.internal"], True),
        ("http://other.internal/", "10.1.2.3", ["api.internal"], False),
        ("http://api.internal:8080/", "10.1.2.3", ["api.internal:8080"], True),
        ("http://api.internal:8081/", "10.1.2.3", ["api.internal:8080"], False),
        ("http://api.internal/", "10.1.2.3", ["api.internal:8080"], False),
        ("https://api.internal/", "10.1.2.3", ["api.internal:443"], True),
        ("http://api.internal/", "10.1.2.3", ["10.0.0.0/8"], True),
        ("http://api.internal/", "192.168.1.1", ["10.0.0.0/8"], False),
        ("http://api.internal/", "10.1.2.3", ["10.1.2.3"], True),
        ("http://api.internal:9000/", "10.1.2.3", ["10.1.2.3:9000"], True),
        ("http://api.internal:9001/", "10.1.2.3", ["10.1.2.3:9000"], False),
        ("http://127.0.0.1:5000/", "127.0.0.1", ["127.0.0.1"], True),
        ("http://localhost:5000/", "127.0.0.1", ["127.0.0.0/8"], True),
        ("http://[::1]:8080/", "::1", ["[::1]:8080"], True),
        ("http://[::1]:8081/", "::1", ["[::1]:8080"], False),
        ("http://[::1]/", "::1", ["::1"], True),
        ("http://[fd00::5]/", "fd00::5", ["fd00::/8"], True),
        ("http://v6.internal/", "::ffff:10.1.2.3", ["10.0.0.0/8"], True),
        ("http://api.internal/", "10.1.2.3", ["not a cidr/99", "[broken", ":"], False),
    ],
)
def test_the_operator_allow_list_opens_hosts_ports_and_blocks(
    url: str, address: str, allow: list[str], ok: bool
) -> None:
    if ok:
        assert check(url, allow, answers(address)).addresses == (str(ipaddress.ip_address(address)),)
    else:
        with pytest.raises(EgressRefused):
            check(url, allow, answers(address))


@pytest.mark.parametrize(
    ("url", "address", "allow", "ok"),
    [
        ("http://169.254.169.254/latest/meta-data/", "169.254.169.254", ["169.254.0.0/16"], False),
        ("http://169.254.169.254/latest/meta-data/", "169.254.169.254", ["0.0.0.0/0"], False),
        ("http://169.254.169.254/latest/meta-data/", "169.254.169.254", ["169.254.169.254"], True),
        ("http://169.254.169.254/latest/meta-data/", "169.254.169.254", ["169.254.169.254/32"], True),
        ("http://169.254.169.254/latest/meta-data/", "169.254.169.254", ["169.254.169.254:80"], True),
        ("http://169.254.169.254:81/", "169.254.169.254", ["169.254.169.254:80"], False),
        ("http://sneaky.example/", "169.254.169.254", ["sneaky.example"], False),
        ("http://sneaky.example/", "169.254.169.254", ["169.254.169.254"], True),
        ("http://metadata.google.internal/", "169.254.169.254", ["metadata.google.internal"], True),
        ("http://metadata.google.internal/", "169.254.169.254", ["169.254.0.0/16"], False),
        ("http://[fd00:ec2::254]/", "fd00:ec2::254", ["fd00::/8"], False),
        ("http://[fd00:ec2::254]/", "fd00:ec2::254", ["fd00:ec2::254"], True),
        ("http://[::ffff:169.254.169.254]/", "::ffff:169.254.169.254", ["169.254.0.0/16"], False),
    ],
)
def test_metadata_addresses_open_only_when_listed_exactly(url: str, address: str, allow: list[str], ok: bool) -> None:
    if ok:
        check(url, allow, answers(address))
    else:
        with pytest.raises(EgressRefused, match="metadata"):
            check(url, allow, answers(address))


def test_allow_list_entries_are_parsed_once() -> None:
    allowance = Allowance.parse(["API.internal", "[::1]:8080", "10.0.0.0/8", "db:5432", "2001:db8::1", "junk/77"])
    assert allowance.hosts == {"api.internal", "2001:db8::1"}
    assert allowance.host_ports == {("::1", 8080), ("db", 5432)}
    assert [str(n) for n in allowance.networks] == ["10.0.0.0/8"]


# -- DNS rebinding: the connection goes to the address that was checked -----------------------


class Rebinding:
    """Answers ``first`` to the first question and ``then`` to every later one."""

    def __init__(self, first: str, then: str) -> None:
        self.first, self.then, self.calls = first, then, 0

    def __call__(self, host: str, port: int, family: int = 0, type: int = 0) -> list[tuple[Any, ...]]:
        self.calls += 1
        return answers(self.first if self.calls == 1 else self.then)(host, port)


def test_a_rebinding_name_is_pinned_to_the_public_address_that_was_checked(monkeypatch: pytest.MonkeyPatch) -> None:
    resolver = Rebinding(PUBLIC_V4, "127.0.0.1")
    vetted = check("http://rebind.example/", (), resolver)
    dialled: list[tuple[str, int]] = []

    def create_connection(address: tuple[str, int], *args: Any, **kwargs: Any) -> socket.socket:
        dialled.append(address)  # never really dial a public address from a test
        raise ConnectionRefusedError("test: not dialling")

    monkeypatch.setattr(egress.socket, "create_connection", create_connection)
    monkeypatch.setattr(socket, "getaddrinfo", never)  # nothing may resolve the name again
    connection = egress.GuardedHTTPConnection("rebind.example", 80, addresses=vetted.addresses, timeout=1)
    with pytest.raises(ConnectionRefusedError):
        connection.request("GET", "/")
    assert dialled == [(PUBLIC_V4, 80)] and resolver.calls == 1


def test_https_dials_the_vetted_address_but_keeps_the_name_for_sni_and_the_certificate(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    dialled: list[tuple[str, int]] = []
    wrapped: list[str | None] = []

    class FakeSocket:
        def setsockopt(self, *args: Any) -> None:
            pass

        def close(self) -> None:
            pass

    class FakeContext(ssl.SSLContext):
        def wrap_socket(self, sock: Any, server_hostname: str | None = None) -> Any:
            wrapped.append(server_hostname)
            raise ConnectionAbortedError("test: no handshake")

    def create_connection(address: tuple[str, int], *args: Any, **kwargs: Any) -> Any:
        dialled.append(address)
        return FakeSocket()

    monkeypatch.setattr(egress.socket, "create_connection", create_connection)
    vetted = check("https://api.example.com:8443/", (), answers(PUBLIC_V4))
    connection = egress.GuardedHTTPSConnection(
        "api.example.com",
        8443,
        addresses=vetted.addresses,
        context=FakeContext(ssl.PROTOCOL_TLS_CLIENT),
        timeout=1,
    )
    with pytest.raises(ConnectionAbortedError):
        connection.connect()
    assert dialled == [(PUBLIC_V4, 8443)] and wrapped == ["api.example.com"]


def test_a_rebinding_answer_of_public_and_private_together_is_refused() -> None:
    with pytest.raises(EgressRefused, match="private"):
        check("http://rebind.example/", (), answers(PUBLIC_V4, "192.168.0.10"))


# -- through urllib: every hop, no proxies ----------------------------------------------------


class Counting(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        self.server.hits.append(self.path)  # type: ignore[attr-defined]
        self.server.hosts.append(self.headers.get("Host"))  # type: ignore[attr-defined]
        status, headers, body = self.server.routes.get(self.path, (200, {}, b"hello"))  # type: ignore[attr-defined]
        self.send_response(status)
        for name, value in headers.items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def server() -> Iterator[Callable[[], http.server.ThreadingHTTPServer]]:
    started: list[http.server.ThreadingHTTPServer] = []

    def start() -> http.server.ThreadingHTTPServer:
        httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Counting)
        httpd.hits, httpd.hosts, httpd.routes = [], [], {}  # type: ignore[attr-defined]
        threading.Thread(target=httpd.serve_forever, daemon=True).start()
        started.append(httpd)
        return httpd

    yield start
    for httpd in started:
        httpd.shutdown()
        httpd.server_close()


def test_the_opener_pins_each_hop_and_keeps_the_host_header(server: Callable[[], Any]) -> None:
    httpd = server()
    port = httpd.server_address[1]
    resolver = Rebinding("127.0.0.1", "10.9.9.9")  # the check sees loopback (allowed), later answers private
    opener = egress.opener(["service.test"], resolve=resolver)
    with opener.open(f"http://service.test:{port}/ok", timeout=5) as response:
        assert response.read() == b"hello"
    assert httpd.hits == ["/ok"] and httpd.hosts == [f"service.test:{port}"] and resolver.calls == 1


def test_a_redirect_to_a_private_address_is_refused_before_it_is_followed(server: Callable[[], Any]) -> None:
    httpd = server()
    port = httpd.server_address[1]
    httpd.routes["/go"] = (302, {"Location": "http://internal.example/secret"}, b"moved")
    opener = egress.opener([f"127.0.0.1:{port}"], resolve=by_name({"internal.example": "10.0.0.5"}))
    with pytest.raises(EgressRefused) as refused:
        opener.open(f"http://127.0.0.1:{port}/go", timeout=5)
    assert refused.value.reason == "internal.example resolves to a private address (10.0.0.5)"
    assert httpd.hits == ["/go"]


def test_a_redirect_to_another_loopback_port_is_refused_and_never_sent(server: Callable[[], Any]) -> None:
    first, second = server(), server()
    port, other = first.server_address[1], second.server_address[1]
    first.routes["/go"] = (307, {"Location": f"http://127.0.0.1:{other}/admin"}, b"")
    opener = egress.opener([f"127.0.0.1:{port}"])
    with pytest.raises(EgressRefused, match="127.0.0.1 is a loopback address"):
        opener.open(f"http://127.0.0.1:{port}/go", timeout=5)
    assert first.hits == ["/go"] and second.hits == []


def test_a_redirect_to_another_scheme_is_refused(server: Callable[[], Any]) -> None:
    httpd = server()
    port = httpd.server_address[1]
    httpd.routes["/go"] = (302, {"Location": "ftp://127.0.0.1/etc/passwd"}, b"")
    with pytest.raises(EgressRefused, match="not 'ftp'"):
        egress.opener(["127.0.0.1"]).open(f"http://127.0.0.1:{port}/go", timeout=5)


def test_proxy_variables_are_ignored(server: Callable[[], Any], monkeypatch: pytest.MonkeyPatch) -> None:
    target, proxy = server(), server()
    monkeypatch.setenv("http_proxy", f"http://127.0.0.1:{proxy.server_address[1]}")
    monkeypatch.setenv("HTTP_PROXY", f"http://127.0.0.1:{proxy.server_address[1]}")
    with egress.opener(["127.0.0.1"]).open(f"http://127.0.0.1:{target.server_address[1]}/x", timeout=5) as response:
        assert response.status == 200
    assert target.hits == ["/x"] and proxy.hits == []


def test_the_opener_refuses_loopback_by_default(server: Callable[[], Any]) -> None:
    httpd = server()
    with pytest.raises(EgressRefused, match="loopback"):
        egress.opener().open(f"http://127.0.0.1:{httpd.server_address[1]}/", timeout=5)
    with pytest.raises(EgressRefused, match="loopback"):
        egress.opener(resolve=by_name({"localhost": "127.0.0.1"})).open(
            f"http://localhost:{httpd.server_address[1]}/", timeout=5
        )
    assert httpd.hits == []
