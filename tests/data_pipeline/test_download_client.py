"""The HTTP client, URL safety, X-Robots-Tag parsing and per-domain limits, against a local server."""

from __future__ import annotations

import email.utils
import threading
import time

import pytest
from dpweb_helpers import LOOPBACK, LocalWebServer, Reply

from data_pipeline.download.client import ClientConfig, FetchError, HttpClient, parse_retry_after
from data_pipeline.download.limits import DomainLimiter
from data_pipeline.download.robots import disallowed_by_robots_tag
from data_pipeline.download.url_safety import AddressPolicy


@pytest.fixture(scope="module")
def server():
    with LocalWebServer() as s:
        yield s


def client(**kwargs) -> HttpClient:
    kwargs.setdefault("address_policy", AddressPolicy(allowed_networks=LOOPBACK))
    kwargs.setdefault("backoff", 0.05)
    return HttpClient(ClientConfig(**kwargs))


def reason_of(c: HttpClient, url: str) -> str:
    with pytest.raises(FetchError) as info:
        c.get(url)
    return info.value.reason


@pytest.mark.parametrize(
    "url",
    [
        "file:///etc/passwd",
        "ftp://example.com/a.jpg",
        "data:image/png;base64,AAAA",
        "javascript:alert(1)",
        "gopher://x/",
        "//no-scheme/a.jpg",
    ],
)
def test_non_http_schemes_are_never_fetched(url):
    assert reason_of(client(), url) == "bad_scheme"


@pytest.mark.parametrize(
    "url",
    [
        "http://10.1.2.3/a.jpg",
        "http://169.254.169.254/latest/meta-data/",
        "http://192.168.0.1/",
        "http://localhost/",
        "http://[::1]/",
        "http://0.0.0.0/",
        "http://[::ffff:127.0.0.1]/",
        "http://100.64.0.1/",
        "http://[fe80::1]/",
        "http://[64:ff9b::a9fe:a9fe]/",
        "http://[2002:7f00:1::1]/",
    ],
)
def test_private_and_loopback_addresses_are_refused(url):
    c = HttpClient(ClientConfig(connect_timeout=0.5))
    assert reason_of(c, url) == "blocked_address"


def test_loopback_refused_by_default_and_never_contacted(server):
    url = server.add("/secret", Reply(200, b"internal"))
    assert reason_of(HttpClient(), url) == "blocked_address"
    assert server.hits["/secret"] == 0
    assert client().get(url).content == b"internal"
    allow_all = HttpClient(ClientConfig(address_policy=AddressPolicy(allow_private=True)))
    assert allow_all.get(url).content == b"internal"


def test_redirects_are_checked_hop_by_hop(server):
    port = server.port
    server.add("/to-file", Reply(302, headers={"Location": "file:///etc/passwd"}))
    server.add("/to-ftp", Reply(301, headers={"Location": "ftp://example.com/x"}))
    # 127.0.0.2 is loopback too, but outside the one address this client may reach.
    server.add("/to-other-host", Reply(302, headers={"Location": f"http://127.0.0.2:{port}/ok"}))
    server.add("/loop-a", Reply(302, headers={"Location": "/loop-b"}))
    server.add("/loop-b", Reply(307, headers={"Location": "/loop-a"}))
    for i in range(10):
        server.add(f"/chain{i}", Reply(302, headers={"Location": f"/chain{i + 1}"}))
    server.add("/chain10", Reply(200, b"end"))
    server.add("/relative", Reply(302, headers={"Location": "ok"}))
    server.add("/ok", Reply(200, b"fine"))
    c = client(address_policy=AddressPolicy(allowed_networks=("127.0.0.1/32",)), max_redirects=5)
    assert reason_of(c, server.url("/to-file")) == "bad_scheme"
    assert reason_of(c, server.url("/to-ftp")) == "bad_scheme"
    assert reason_of(c, server.url("/to-other-host")) == "blocked_address"
    assert reason_of(c, server.url("/loop-a")) == "redirect_loop"
    assert reason_of(c, server.url("/chain0")) == "too_many_redirects"
    result = c.get(server.url("/relative"))
    assert result.content == b"fine" and result.final_url.endswith("/ok")


def test_retries_honour_retry_after(server):
    server.add("/busy", Reply(503, b"busy", {"Retry-After": "1"}), Reply(200, b"ok"))
    c = client(retries=2)
    started = time.monotonic()
    assert c.get(server.url("/busy")).content == b"ok"
    assert time.monotonic() - started >= 0.95
    times = server.request_times["/busy"]
    assert len(times) == 2 and times[1] - times[0] >= 0.95


def test_retry_after_too_long_gives_up_at_once(server):
    server.add("/slow-down", Reply(429, b"", {"Retry-After": "3600"}))
    c = client(retries=3, max_retry_after=5)
    started = time.monotonic()
    assert reason_of(c, server.url("/slow-down")) == "http_429"
    assert time.monotonic() - started < 3 and server.hits["/slow-down"] == 1


def test_server_errors_retried_with_backoff_then_counted(server):
    server.add("/broken", Reply(500, b"<html>oops</html>", {"Content-Type": "text/html"}))
    server.add("/gone", Reply(404))
    c = client(retries=2)
    assert reason_of(c, server.url("/broken")) == "http_500"
    assert server.hits["/broken"] == 3
    assert reason_of(c, server.url("/gone")) == "http_404"
    assert server.hits["/gone"] == 1  # a 404 is not retried


def test_parse_retry_after_forms():
    assert parse_retry_after("120") == 120
    now = time.time()
    date = email.utils.formatdate(now + 30, usegmt=True)
    assert 28 <= parse_retry_after(date, now=now) <= 31
    assert parse_retry_after("soon") is None and parse_retry_after(None) is None


def test_hung_and_dripping_servers_time_out(server):
    server.add("/hang", Reply(200, b"x" * 100, hang=True))
    server.add("/stall", Reply(200, b"", delay=30))
    server.add("/drip", Reply(200, b"y" * 400, drip=0.02))
    c = client(read_timeout=0.5, total_timeout=1.0, retries=0)
    for path in ("/hang", "/stall", "/drip"):
        started = time.monotonic()
        assert reason_of(c, server.url(path)) == "timeout"
        assert time.monotonic() - started < 4, path  # not the 30-60 s the server would take


def test_size_cap_declared_and_streamed(server):
    server.add("/big-declared", Reply(200, b"z" * 5000))
    server.add("/big-undeclared", Reply(200, b"z" * 5000, no_length=True))
    server.add("/small-undeclared", Reply(200, b"z" * 100, no_length=True))
    c = client(max_bytes=4000)
    assert reason_of(c, server.url("/big-declared")) == "too_large"
    assert reason_of(c, server.url("/big-undeclared")) == "too_large"
    assert c.get(server.url("/small-undeclared")).content == b"z" * 100


def test_truncated_body_is_an_error(server):
    server.add("/cut", Reply(200, b"a" * 100, declared_length=1000))
    assert reason_of(client(retries=0), server.url("/cut")) == "incomplete_body"


def test_user_agent_and_unmerged_robots_headers(server):
    server.add("/tagged", Reply(200, b"img", {"X-Robots-Tag": ["googlebot: noindex", "noai, noimageai"]}))
    result = client(user_agent="tester/1.0 (+mailto:a@b.c)").get(server.url("/tagged"))
    assert result.robots_tags == ["googlebot: noindex", "noai, noimageai"]
    assert server.user_agents[-1] == "tester/1.0 (+mailto:a@b.c)"


@pytest.mark.parametrize(
    "headers, expected",
    [
        ([], None),
        (["noai"], "noai"),
        (["NoImageAI, nofollow"], "noimageai"),
        (["noindex"], "noindex"),
        (["noimageindex"], "noimageindex"),
        (["nofollow, noarchive"], None),
        (["googlebot: noindex"], None),  # addressed to another bot
        (["autocomics: noai"], "noai"),  # addressed to us
        (["AutoComics : noimageai"], "noimageai"),
        (["max-image-preview: large"], None),
        (["unavailable_after: 25 Jun 2030 15:00:00 PST", "otherbot: noai"], None),
    ],
)
def test_robots_tag_directives(headers, expected):
    assert disallowed_by_robots_tag(headers, "autocomics") == expected


def test_per_domain_rate_and_concurrency(server):
    server.add("/paced", Reply(200, b"p"))
    server.add("/slowish", Reply(200, b"s", delay=0.2))
    c = client(per_domain_rate=10.0)
    for _ in range(5):
        c.get(server.url("/paced"))
    times = server.request_times["/paced"]
    assert times[-1] - times[0] >= 0.35  # 5 starts at 10/s need >= 0.4 s (minus scheduling slack)

    c = client(per_domain_concurrency=2, pool_maxsize=8)
    threads = [threading.Thread(target=c.get, args=(server.url("/slowish"),)) for _ in range(6)]
    started = time.monotonic()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert server.max_active["/slowish"] <= 2
    assert time.monotonic() - started >= 0.55  # 6 requests of 0.2 s, two at a time


def test_limiter_defer_pauses_every_thread():
    limiter = DomainLimiter()
    limiter.defer("example.org", 0.3)
    started = time.monotonic()
    with limiter.slot("example.org"):
        pass
    assert time.monotonic() - started >= 0.28
    with limiter.slot("other.org"):
        pass
    assert time.monotonic() - started < 0.5


def test_refused_connection_is_not_a_timeout():
    import socket

    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    assert reason_of(client(retries=0), f"http://127.0.0.1:{port}/x") == "connection_error"


# IPv6 forms that carry an IPv4 address: the IPv4 address decides.
EMBEDDED_PRIVATE = [
    "64:ff9b::7f00:1",  # NAT64 well-known prefix -> 127.0.0.1
    "64:ff9b::a00:1",  # NAT64 -> 10.0.0.1
    "64:ff9b::a9fe:a9fe",  # NAT64 -> 169.254.169.254 (cloud metadata)
    "64:ff9b:1::808:808",  # local-use NAT64 prefix: the operator's own networks
    "2002:7f00:1::1",  # 6to4 -> 127.0.0.1
    "2002:c0a8:1::",  # 6to4 -> 192.168.0.1
    "::7f00:1",  # IPv4-compatible -> 127.0.0.1
    "::ffff:a00:1",  # IPv4-mapped -> 10.0.0.1
    "2001:0:7f00:1::f7f7:f7f7",  # Teredo, server 127.0.0.1 (client 8.8.8.8)
    "2001:0:808:808::f5ff:fffe",  # Teredo, client (obfuscated) 10.0.0.1
]
EMBEDDED_PUBLIC = ["64:ff9b::808:808", "2002:808:808::1", "::ffff:808:808", "2001:0:808:808::f7f7:f7f7"]


@pytest.mark.parametrize("address", EMBEDDED_PRIVATE)
def test_private_ipv4_inside_ipv6_is_refused(address):
    assert not AddressPolicy().allows(address)


@pytest.mark.parametrize("address", EMBEDDED_PUBLIC)
def test_public_ipv4_inside_ipv6_is_allowed(address):
    assert AddressPolicy().allows(address)


def test_allowed_networks_apply_to_the_embedded_ipv4():
    policy = AddressPolicy(allowed_networks=("10.0.0.0/8",))
    assert policy.allows("64:ff9b::a00:1") and policy.allows("2002:a00:1::")
    assert not policy.allows("64:ff9b::7f00:1")
