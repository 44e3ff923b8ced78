"""HTTP fetching against a real local server: every failure gets its reason; the SSRF guard
refuses internal addresses after DNS resolution; X-Robots-Tag scoping follows img2dataset."""

import ipaddress

import pytest

from curation.ingest.config import DownloadConfig
from curation.ingest.addresses import address_refusal
from curation.ingest.download import read_local
from curation.ingest.fetch import Fetcher
from curation.ingest.politeness import robots_disallows
from tests.conftest import LOCAL_DOWNLOAD

DIRECTIVES = frozenset({"noai", "noimageai", "noindex", "noimageindex"})


@pytest.fixture(scope="module")
def fetcher():
    f = Fetcher(DownloadConfig(**LOCAL_DOWNLOAD))
    yield f
    f.close()


@pytest.mark.parametrize("path,reason", [
    ("/status/404", "http_404"), ("/status/500", "http_500"), ("/status/403", "http_403"), ("/status/418", "http_4xx"),
    ("/slow/0000.jpg", "timeout"), ("/stall/0000.jpg", "timeout"), ("/html/x", "not_an_image"),
    ("/json/x", "not_an_image"), ("/optout/0000.jpg", "robots_noai"), ("/loop/a", "redirect_loop"),
    ("/big", "body_too_large"), ("/empty", "empty_body"), ("/reset", "connection_error"),
])
def test_failure_reasons(fetcher, image_server, path, reason):
    result = fetcher.fetch(image_server + path)
    assert result.data is None and result.reason == reason, result


@pytest.mark.parametrize("path", ["/img/0000.jpg", "/redirect/0000.jpg", "/optout-other/0000.jpg", "/retry-once/0001.jpg"])
def test_successes(fetcher, image_server, images, path):
    result = fetcher.fetch(image_server + path)
    name = path.rsplit("/", 1)[1]
    assert result.reason is None and result.data == images[name] and result.status == 200


@pytest.mark.parametrize("url,reason", [
    ("ftp://example.com/a.jpg", "unsupported_scheme"), ("file:///etc/passwd", "unsupported_scheme"),
    ("data:image/png;base64,AAAA", "unsupported_scheme"), ("http://", "invalid_url"),
    ("http://[::1", "invalid_url"), ("http://no-such-host.invalid/a.jpg", "dns_error"),
])
def test_bad_urls(fetcher, url, reason):
    assert fetcher.fetch(url).reason == reason


def test_ssrf_guard_refuses_after_resolution(image_server):
    strict = Fetcher(DownloadConfig(timeout_s=2.0, retries=0))
    port = image_server.rsplit(":", 1)[1]
    for host in ("127.0.0.1", "localhost", "[::ffff:127.0.0.1]", "169.254.169.254", "10.1.2.3", "192.168.0.1", "[::1]"):
        result = strict.fetch(f"http://{host}:{port}/img/0000.jpg")
        assert result.reason == "private_address", (host, result)
    # the redirect hop is vetted too: an allowed first hop cannot bounce us inside
    assert strict.fetch(f"{image_server}/redirect/0000.jpg").reason == "private_address"


@pytest.mark.parametrize("addr,refused", [
    ("127.0.0.1", True), ("10.0.0.1", True), ("172.16.5.4", True), ("192.168.1.1", True), ("169.254.169.254", True),
    ("100.100.100.200", True), ("0.0.0.0", True), ("::1", True), ("fd00:ec2::254", True), ("fe80::1", True),
    ("::ffff:10.0.0.1", True), ("8.8.8.8", False), ("2606:4700::1111", False),
    # 6to4, Teredo and NAT64 addresses that wrap a loopback, private or metadata IPv4
    ("2002:7f00:1::", True), ("2002:a9fe:a9fe::1", True), ("2002:c0a8:101::", True), ("2002:0808:0808::", False),
    ("2001:0:4136:e378:8000:63bf:80ff:fffe", True), ("2001:0:a9fe:a9fe::1", True), ("64:ff9b::7f00:1", True),
    ("64:ff9b::a9fe:a9fe", True),
    ("64:ff9b::808:808", True),  # NAT64 sits in ::/8, which Python's registry calls reserved: refused as such
])
def test_address_refusal(addr, refused):
    assert (address_refusal(ipaddress.ip_address(addr)) is not None) == refused


def test_wrapped_ipv4_refusals_name_the_address_inside():
    assert address_refusal(ipaddress.ip_address("2002:a9fe:a9fe::")) == \
        "6to4 address embedding 169.254.169.254: link-local (cloud metadata lives here)"
    assert address_refusal(ipaddress.ip_address("2001:0:4136:e378:8000:63bf:80ff:fffe")) == \
        "Teredo address embedding 127.0.0.1: loopback"


@pytest.mark.parametrize("values,blocked", [
    (["noai"], True), (["noindex, nofollow"], True), (["NoImageAI"], True), (["curate: noai"], True),
    (["otherbot: noai"], False), (["nofollow"], False), (["unavailable_after: 25 Jun 2010 15:00:00 PST"], False),
    (["otherbot: noindex", "curate: noimageindex"], True), (["googlebot: nofollow", "noai"], True),
])
def test_robots_scoping(values, blocked):
    assert robots_disallows(values, "curate", DIRECTIVES) == blocked


def test_local_paths_cannot_escape_root(tmp_path):
    root = tmp_path / "images"
    root.mkdir()
    (root / "a.jpg").write_bytes(b"jpegbytes")
    (tmp_path / "secret.txt").write_text("no")
    assert read_local("a.jpg", str(root), 100).data == b"jpegbytes"
    assert read_local("../secret.txt", str(root), 100).reason == "local_file_error"
    assert read_local(str(tmp_path / "secret.txt"), str(root), 100).reason == "local_file_error"
    assert read_local("missing.jpg", str(root), 100).reason == "local_file_error"
    assert read_local("a.jpg", str(root), 3).reason == "body_too_large"
    assert read_local("a.jpg", None, 100).reason == "local_file_error"
