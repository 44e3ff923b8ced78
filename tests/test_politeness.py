"""Downloading as a good citizen, against the real local server: dual-stack fallback, a hard
deadline against a trickling server, Retry-After, per-host limits and the circuit breaker,
robots.txt and TDM-Rep, source hash verification, and a per-row catch-all. Each behaviour ends
with its reason code (or its image)."""

from __future__ import annotations

import hashlib
import io
import socket
import threading
import time

import pytest
from PIL import Image

from curation.core.heartbeat import Heartbeat
from curation.core.records import Pair, Rejection, Sample
from curation.ingest.addresses import happy_eyeballs_order
from curation.ingest.config import DownloadConfig, ImageConfig, SourceConfig
from curation.ingest.download import Downloader
from curation.ingest.fetch import Fetcher
from curation.ingest.politeness import HostGate, RobotsCache, retry_after_s, rules_from_response
from curation.samples.image_server import serve
from tests.conftest import LOCAL_DOWNLOAD

NAME = "0000.jpg"
ROBOTS = "User-agent: otherbot\nDisallow: /\n\nUser-agent: curate\nDisallow: /private/\n\nUser-agent: *\nAllow: /\n"


def fetcher(**kw) -> Fetcher:
    return Fetcher(DownloadConfig(**{**LOCAL_DOWNLOAD, **kw}))


@pytest.fixture(scope="module")
def polite_server(images):
    with serve(images, slow_s=3.0, robots=ROBOTS) as base_url:
        yield base_url


def _port(base_url: str) -> int:
    return int(base_url.rsplit(":", 1)[1])


def test_happy_eyeballs_order_interleaves_families_and_prefers_what_answered():
    addrs = ["2001:db8::1", "2001:db8::2", "192.0.2.1", "192.0.2.2"]
    assert happy_eyeballs_order(addrs) == ["2001:db8::1", "192.0.2.1", "2001:db8::2", "192.0.2.2"]
    assert happy_eyeballs_order(addrs, prefer_ipv6=False) == ["192.0.2.1", "2001:db8::1", "192.0.2.2", "2001:db8::2"]
    assert happy_eyeballs_order(addrs, first="192.0.2.2")[0] == "192.0.2.2"
    assert happy_eyeballs_order(["192.0.2.1"]) == ["192.0.2.1"]


def test_an_unreachable_ipv6_address_falls_back_to_ipv4(image_server, images):
    """A dual-stack host whose IPv6 address cannot be reached (100::1 is the discard-only prefix,
    ::1 has no listener on the port): the fetch goes on to IPv4, and the next request starts there."""
    port = _port(image_server)
    answers = {"dual.test": ["100::1", "::1", "127.0.0.1"]}

    def resolver(host, p, type=0):  # noqa: A002 - getaddrinfo's own keyword
        return [(socket.AF_INET6 if ":" in a else socket.AF_INET, socket.SOCK_STREAM, 6, "", (a, p)) for a in answers[host]]

    f = Fetcher(DownloadConfig(**{**LOCAL_DOWNLOAD, "connect_attempt_s": 0.5}), resolver=resolver)
    started = time.monotonic()
    result = f.fetch(f"http://dual.test:{port}/img/{NAME}")
    assert result.data == images[NAME], result
    assert time.monotonic() - started < 2.5  # two short attempts, not two full timeouts
    assert f.connections.resolve("dual.test", port)[0] == "127.0.0.1"  # what answered is tried first next time
    # the SSRF rules apply to every address, not only the one that would be tried first
    strict = Fetcher(DownloadConfig(**{**LOCAL_DOWNLOAD, "allow_private_addresses": False}), resolver=resolver)
    assert strict.fetch(f"http://dual.test:{port}/img/{NAME}").reason == "private_address"


def test_a_trickling_server_ends_as_timeout_within_the_deadline(image_server):
    f = fetcher(timeout_s=2.0, deadline_s=3.0, retries=2)
    started = time.monotonic()
    result = f.fetch(f"{image_server}/trickle/{NAME}")
    elapsed = time.monotonic() - started
    assert result.reason == "timeout", result
    assert elapsed <= 3.0 + 1.0, elapsed


def test_retry_after_is_honoured_up_to_its_cap(image_server, images):
    f = fetcher(retries=1, backoff_s=0.0)
    started = time.monotonic()
    result = f.fetch(f"{image_server}/retry-after/{NAME}")  # 429 + Retry-After: 1, then 200
    assert result.data == images[NAME] and time.monotonic() - started >= 0.9
    capped = fetcher(retries=3, retry_after_max_s=0.5).fetch(f"{image_server}/retry-after/0001.jpg")
    assert capped.reason == "http_429" and "Retry-After" in capped.detail
    assert retry_after_s("120") == 120.0 and retry_after_s("Wed, 21 Oct 2015 07:28:00 GMT") == 0.0
    assert retry_after_s("soon") is None


def test_robots_txt_disallow_for_our_token_and_fetched_once(polite_server, images):
    f = fetcher(robots_txt=True)
    assert f.fetch(f"{polite_server}/private/{NAME}").reason == "robots_disallowed"
    assert f.fetch(f"{polite_server}/img/{NAME}").data == images[NAME]  # otherbot's Disallow: / does not bind us
    for i in range(3):
        f.fetch(f"{polite_server}/img/000{i}.jpg")
    assert f.robots.fetches == 1  # one robots.txt per host per worker
    assert fetcher(robots_txt=False).fetch(f"{polite_server}/private/{NAME}").data == images[NAME]


def test_robots_status_rules_follow_rfc_9309():
    assert rules_from_response(404, b"").allows("curate", "http://h/x")
    assert not rules_from_response(503, b"").allows("curate", "http://h/x")
    down = rules_from_response(None, None, "refused", "connection_error")
    assert not down.allows("curate", "http://h/x") and down.reason == "connection_error" and down.transient
    clock = [0.0]
    calls = []
    cache = RobotsCache(lambda origin: calls.append(origin) or down, retry_s=10, clock=lambda: clock[0])
    cache.rules("http://h")
    cache.rules("http://h")
    clock[0] = 11.0
    cache.rules("http://h")
    assert calls == ["http://h", "http://h"]  # a network failure is asked again after retry_s, not at once


def test_tdm_reservation_header_is_honoured(image_server):
    assert fetcher().fetch(f"{image_server}/tdm/{NAME}").reason == "tdm_reserved"


def test_circuit_breaker_fails_a_dead_host_fast():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        dead = s.getsockname()[1]  # closed when the block ends: nothing listens there
    f = fetcher(retries=0, host_failures=2)
    reasons = [f.fetch(f"http://127.0.0.1:{dead}/img/{i}.jpg").reason for i in range(4)]
    assert reasons == ["connection_error", "connection_error", "host_unreachable", "host_unreachable"]


def test_per_host_concurrency_and_rate_limits():
    gate = HostGate(concurrency=2, rate=0, burst=1, max_failures=0)
    peak, now, lock = [0], [0], threading.Lock()

    def work():
        with gate.slot("h"):
            with lock:
                now[0] += 1
                peak[0] = max(peak[0], now[0])
            time.sleep(0.05)
            with lock:
                now[0] -= 1

    threads = [threading.Thread(target=work) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert peak[0] == 2
    clock, slept = [0.0], []

    def sleep(s):
        slept.append(s)
        clock[0] += s

    rated = HostGate(concurrency=0, rate=2.0, burst=1, max_failures=0, clock=lambda: clock[0], sleep=sleep)
    for _ in range(3):
        with rated.slot("h"):
            pass
    assert clock[0] == pytest.approx(1.0)  # 3 requests at 2/s with a burst of 1: two half-second waits


def _downloader(**download) -> Downloader:
    return Downloader(DownloadConfig(**{**LOCAL_DOWNLOAD, **download}), ImageConfig(image_size=256),
                      SourceConfig(name="t", columns={"url": "url"}))


def _pair(url: str, **kw) -> Pair:
    return Pair(uid="u1", url=url, caption="a caption", source="t", source_file="t.parquet", source_row=0, **kw)


def test_source_hashes_are_verified(image_server, images):
    url = f"{image_server}/img/{NAME}"
    d = _downloader(phash_tolerance=4)
    right = hashlib.sha256(images[NAME]).hexdigest()
    assert isinstance(d(_pair(url, source_hash=right)), Sample)
    wrong = d(_pair(url, source_hash="0" * 64))
    assert isinstance(wrong, Rejection) and wrong.reason == "hash_mismatch" and wrong.stage == "download"
    own = d(_pair(url))
    assert isinstance(own, Sample)
    assert isinstance(d(_pair(url, image_phash=own.image.phash)), Sample)
    flipped = f"{int(own.image.phash, 16) ^ 0xFFFF:016x}"  # 16 bits away
    far = d(_pair(url, image_phash=flipped))
    assert isinstance(far, Rejection) and far.reason == "phash_mismatch"
    assert isinstance(_downloader()(_pair(url, image_phash=flipped)), Sample)  # no tolerance set: not checked


def test_an_unexpected_exception_in_decode_is_that_rows_internal_error(image_server, monkeypatch):
    """A failure injected into the real decode path (the mode conversion after Pillow's decode)
    rejects the row with the exception's type; the next row downloads as usual."""
    from curation.ingest import images as decode

    real = decode.to_rgb
    calls = {"n": 0}

    def flaky(img):
        calls["n"] += 1
        if calls["n"] == 1:
            raise ZeroDivisionError("injected")
        return real(img)

    monkeypatch.setattr(decode, "to_rgb", flaky)
    d = _downloader()
    first = d(_pair(f"{image_server}/img/{NAME}"))
    assert isinstance(first, Rejection) and first.reason == "internal_error" and first.stage == "image"
    assert "ZeroDivisionError" in first.detail
    assert isinstance(d(_pair(f"{image_server}/img/0001.jpg")), Sample)


def test_heartbeat_reports_rows_rate_and_failures():
    lines: list[str] = []
    clock = [0.0]
    hb = Heartbeat("download", 0.05, emit=lines.append, clock=lambda: clock[0])
    for reason in (None, "timeout", "timeout", "http_404"):
        hb.started()
        clock[0] += 1.0
        hb.done(reason)
    hb.started()
    line = hb.line()
    assert "4 rows done (1.0 rows/s" in line and "1 in flight" in line and "timeout=2, http_404=1" in line
    hb.start()
    time.sleep(0.2)
    hb.stop()
    assert len(lines) >= 2 and lines[0] == lines[-1] == hb.line()


def _solid(color: str) -> bytes:
    """One colour with faint darker stripes (a uniform image is `blank_image` in the COYO recipe)."""
    from PIL import ImageDraw

    im = Image.new("RGB", (320, 240), color)
    draw = ImageDraw.Draw(im)
    shade = tuple(int(c * 0.7) for c in im.getpixel((0, 0)))
    for y in range(0, 240, 24):
        draw.line([(0, y), (319, y)], fill=shade, width=2)
    buf = io.BytesIO()
    im.save(buf, "JPEG", quality=95)
    return buf.getvalue()


@pytest.mark.slow
def test_ingest_keeps_each_rows_own_bytes_and_beats_without_a_terminal(tmp_path, caplog):
    """Two rows share a uid (COYO ids) but not their image: the staged files are per row, so the
    kept row (the first in source order) holds its own bytes, not the later row's. With no
    progress bar, the download step logs heartbeat lines (rows, rows/s, failures by reason)."""
    import logging

    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq
    import webdataset as wds

    from pipelines.ingest import run_ingest
    from tests.conftest import local_config

    served = {"red.jpg": _solid("red"), "blue.jpg": _solid("blue")}
    with serve(served, slow_s=3.0) as base:
        rows = [("7", f"{base}/img/red.jpg", "a red square"), ("7", f"{base}/img/blue.jpg", "a blue square"),
                ("8", f"{base}/trickle/red.jpg", "a slow red square")]
        table = pa.table({"id": [r[0] for r in rows], "url": [r[1] for r in rows], "text": [r[2] for r in rows],
                          "width": [320] * 3, "height": [240] * 3})
        meta = tmp_path / "coyo.parquet"
        pq.write_table(table, meta)
        cfg = local_config("coyo.yaml", download={"deadline_s": 2.0, "timeout_s": 2.0}, progress_every_s=0.3,
                           metadata_filters=[], dedup_urls=False)
        caplog.set_level(logging.INFO, logger="curate.progress")
        index = run_ingest(cfg, [str(meta)], str(tmp_path / "out"), ["--direct_running_mode=in_memory"])
    assert index["totals"] == {**index["totals"], "inputs": 3, "kept": 1}
    assert index["reasons"] == {"dup_uid": 1, "timeout": 1}
    (sample,) = list(wds.WebDataset(str(next((tmp_path / "out").glob("*.tar"))), shardshuffle=False))
    pixels = np.asarray(Image.open(io.BytesIO(sample["jpg"])).convert("RGB"), dtype=np.float64).mean(axis=(0, 1))
    assert pixels[0] > 200 and pixels[2] < 60, pixels  # red: the first row's own image
    beats = [r.getMessage() for r in caplog.records if r.name == "curate.progress"]
    assert len(beats) >= 2 and all(b.startswith("download: ") and "rows done" in b for b in beats)
    assert "3 rows done" in beats[-1] and "timeout=1" in beats[-1]  # the last line, at teardown


def test_host_state_stays_bounded_and_keeps_busy_hosts():
    gate = HostGate(concurrency=1, rate=0, burst=1, max_failures=2, max_hosts=3)
    with gate.slot("busy"):
        for i in range(10):
            gate.record(f"h{i}", connected=False)
        assert len(gate._hosts) <= 3 and "busy" in gate._hosts  # a host with a request in flight is never forgotten


def test_sites_are_registrable_domains_and_hot_ones_split_within_their_budget():
    from curation.ingest.hosts import HostBudget, gate_key, host_key

    assert host_key("http://cdn1.example.co.uk/a.jpg") == host_key("https://www.EXAMPLE.co.uk/b") == "example.co.uk"
    assert host_key("https://foo.s3.amazonaws.com/k") != host_key("https://bar.s3.amazonaws.com/k")  # private suffixes
    assert host_key("http://127.0.0.1:8080/x") == "127.0.0.1" and host_key("http://[::1]/z") == "::1"
    assert host_key("not a url") == ""
    budget = HostBudget(hot_host_rows=1000, max_subkeys=16, concurrency=8)
    assert [budget.subkeys(n) for n in (1, 1000, 1001, 5000, 10**7)] == [1, 1, 2, 5, 8]  # never past the slots
    keys = {gate_key("pinimg.com", f"http://i.pinimg.com/{i}.jpg", 4) for i in range(400)}
    assert keys == {(f"pinimg.com#{k}", 4) for k in range(4)} and gate_key("a.com", "http://a.com/x", 1) == ("a.com", 1)


def test_a_shared_key_gets_its_share_of_the_limits():
    gate = HostGate(concurrency=8, rate=4.0, burst=8, max_failures=0)
    with gate.slot("site#0", share=4):
        h = gate._host("site#0")
        assert h.slots is not None and h.slots._value == 1 and h.rate == 1.0 and h.burst == 2.0  # 8 / 4 slots
    assert gate._host("site#0").slots._value == 2 and gate._host("whole").rate == 4.0


@pytest.mark.slow
def test_per_host_limits_hold_for_the_whole_job_across_two_worker_processes(tmp_path):
    """Two SDK processes download 160 URLs of one host and 40 of another, each slow to answer. The
    server's own count of requests in flight per Host never passes per_host_concurrency (2), and
    robots.txt is fetched at most once per sub-key: the hot host is split in two, each half its
    budget."""
    import pyarrow as pa
    import pyarrow.parquet as pq
    import yaml

    from curation.core.config import deep_merge, load_config
    from curation.ingest.config import IngestConfig
    from pipelines.ingest import run_ingest
    from tests.conftest import CONFIGS

    buf = io.BytesIO()
    Image.new("RGB", (96, 96), (200, 30, 30)).save(buf, "PNG")
    images = {f"{i:04d}.png": buf.getvalue() for i in range(200)}
    stats: dict = {}
    with serve(images, slow_s=0.15, robots="User-agent: *\nAllow: /\n", stats=stats) as base:
        port = base.rsplit(":", 1)[1]
        urls = [f"http://127.0.0.1:{port}/slow/{i:04d}.png" for i in range(160)]
        urls += [f"http://localhost:{port}/slow/{i:04d}.png" for i in range(160, 200)]
        table = tmp_path / "urls.parquet"
        pq.write_table(pa.table({"url": urls, "caption": [f"red square number {i}" for i in range(200)]}), table)
        over = {"source": {"name": "polite", "columns": {"url": "url", "caption": "caption"}}, "metadata_filters": [],
                "pixel_filters": [], "progress": False, "shards": {"samples_per_shard": 50},
                "download": {**LOCAL_DOWNLOAD, "threads": 16, "per_host_concurrency": 2, "hot_host_rows": 50,
                             "max_host_subkeys": 4, "robots_txt": True}}
        recipe = tmp_path / "polite.yaml"
        recipe.write_text(yaml.safe_dump(deep_merge(yaml.safe_load((CONFIGS / "laion.yaml").read_text()), over)))
        index = run_ingest(load_config(recipe, IngestConfig), [str(table)], str(tmp_path / "out"),
                           ["--direct_running_mode=multi_processing", "--direct_num_workers=2"])
    assert index["totals"]["inputs"] == 200 and index["totals"]["kept"] == 200, index["reasons"]
    assert stats["peak"] == {"127.0.0.1": stats["peak"]["127.0.0.1"], "localhost": stats["peak"]["localhost"]}
    assert 1 <= stats["peak"]["127.0.0.1"] <= 2 and 1 <= stats["peak"]["localhost"] <= 2, stats["peak"]
    assert 1 <= stats["robots"]["127.0.0.1"] <= 2 and stats["robots"]["localhost"] == 1, stats["robots"]
