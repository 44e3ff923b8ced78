"""A local HTTP image server for the demo, tests and benchmarks, with the failures crawlers meet.

Routes (GET):
  /img/NAME            the image, with its content type          /status/CODE      that status
  /slow/NAME           waits `slow_s` before answering           /stall/NAME       half the body, then stalls
  /html/NAME           an HTML page                              /json/NAME        a JSON document
  /truncated/NAME      the first 60% of the image                /corrupt/NAME     random bytes as image/jpeg
  /optout/NAME         image + `X-Robots-Tag: noai`              /optout-other/NAME `otherbot: noai` (allowed)
  /redirect/NAME       302 to /img/NAME                          /loop/a, /loop/b  302 to each other
  /big                 a body larger than any sane cap           /empty            200 with no body
  /reset               the connection is dropped mid-request     /retry-once/NAME  503, then the image
  /trickle/NAME        the image at one byte a second            /retry-after/NAME 429 + Retry-After: 1, then the image
  /tdm/NAME            image + `tdm-reservation: 1`              /robots.txt       the `robots` text given, else 404
  /private/NAME        the image (for robots.txt Disallow rules)
Binds 127.0.0.1 only. Every sleep is bounded, so the server always stops.
"""

from __future__ import annotations

import hashlib
import json
import socket
import struct
import threading
import time
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Iterator

_TYPES = {"jpg": "image/jpeg", "jpeg": "image/jpeg", "png": "image/png", "gif": "image/gif",
          "webp": "image/webp", "tif": "image/tiff", "tiff": "image/tiff", "bmp": "image/bmp",
          "mp4": "video/mp4", "webm": "video/webm", "mkv": "video/x-matroska", "avi": "video/x-msvideo",
          "flv": "video/x-flv"}


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 1024
    allow_reuse_address = True

    def __init__(self, addr, images: dict[str, bytes], slow_s: float, big_bytes: int, robots: str | None = None,
                 stats: dict | None = None) -> None:
        super().__init__(addr, _Handler)
        self.stats = stats if stats is not None else {}
        self.robots = robots
        self.robots_hits = 0
        self.images = images
        self.slow_s = slow_s
        self.big_bytes = big_bytes
        self.retry_seen: set[str] = set()
        self.lock = threading.Lock()
        self.hits = 0

    def handle_error(self, request, client_address) -> None:
        """Clients that hang up (timeouts, size caps) are expected here, not errors."""
        import sys

        if not isinstance(sys.exc_info()[1], (ConnectionError, TimeoutError)):
            super().handle_error(request, client_address)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server

    def log_message(self, *args) -> None:  # quiet
        pass

    def _send(self, status: int, body: bytes, ctype: str, headers: dict[str, str] | None = None) -> None:
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(body)

    def _image(self, name: str) -> tuple[bytes, str] | None:
        data = self.server.images.get(name)
        if data is None:
            return None
        return data, _TYPES.get(name.rsplit(".", 1)[-1].lower(), "application/octet-stream")

    def do_GET(self) -> None:
        """Count the request against its Host (requests in flight, their peak, robots.txt fetches)
        while it is answered."""
        host = (self.headers.get("Host") or "").rsplit(":", 1)[0]
        stats = self.server.stats
        with self.server.lock:
            self.server.hits += 1
            active = stats.setdefault("active", {})
            active[host] = active.get(host, 0) + 1
            peak = stats.setdefault("peak", {})
            peak[host] = max(peak.get(host, 0), active[host])
            if self.path.startswith("/robots.txt"):
                robots = stats.setdefault("robots", {})
                robots[host] = robots.get(host, 0) + 1
        try:
            self._route()
        finally:
            with self.server.lock:
                active[host] -= 1

    def _route(self) -> None:  # noqa: C901 - a routing table
        parts = self.path.split("?", 1)[0].strip("/").split("/", 1)
        route, arg = parts[0], (parts[1] if len(parts) > 1 else "")
        found = self._image(arg) if arg else None
        if route == "img" and found:
            return self._send(200, found[0], found[1])
        if route == "status" and arg.isdigit():
            return self._send(int(arg), b"error page", "text/plain")
        if route == "slow" and found:
            time.sleep(self.server.slow_s)
            return self._send(200, found[0], found[1])
        if route == "stall" and found:
            self.send_response(200)
            self.send_header("Content-Type", found[1])
            self.send_header("Content-Length", str(len(found[0])))
            self.end_headers()
            self.wfile.write(found[0][: len(found[0]) // 2])
            self.wfile.flush()
            time.sleep(self.server.slow_s)
            self.close_connection = True
            return None
        if route == "html":
            return self._send(200, b"<!doctype html><html><body><img src='x.jpg'></body></html>", "text/html; charset=utf-8")
        if route == "json":
            return self._send(200, json.dumps({"error": "not an image"}).encode(), "application/json")
        if route == "truncated" and found:
            return self._send(200, found[0][: int(len(found[0]) * 0.6)], found[1])
        if route == "corrupt":
            junk = hashlib.sha256(arg.encode()).digest() * 64
            return self._send(200, junk, "image/jpeg")
        if route == "optout" and found:
            return self._send(200, found[0], found[1], {"X-Robots-Tag": "noai, noimageai"})
        if route == "optout-other" and found:
            return self._send(200, found[0], found[1], {"X-Robots-Tag": "otherbot: noai"})
        if route == "redirect" and found:
            return self._send(302, b"", "text/plain", {"Location": f"/img/{arg}"})
        if route == "loop":
            return self._send(302, b"", "text/plain", {"Location": "/loop/b" if arg == "a" else "/loop/a"})
        if route == "big":
            self.send_response(200)
            self.send_header("Content-Type", "image/jpeg")
            self.send_header("Content-Length", str(self.server.big_bytes))
            self.end_headers()
            chunk = b"\xff" * 65536
            try:
                for _ in range(self.server.big_bytes // len(chunk)):
                    self.wfile.write(chunk)
            except (BrokenPipeError, ConnectionResetError):
                pass
            self.close_connection = True
            return None
        if route == "empty":
            return self._send(200, b"", "image/jpeg")
        if route == "reset":
            # SO_LINGER 0 makes close() send RST: the client sees a connection reset
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            self.close_connection = True
            self.connection.close()
            return None
        if route == "robots.txt":
            with self.server.lock:
                self.server.robots_hits += 1
            if self.server.robots is None:
                return self._send(404, b"not found", "text/plain")
            return self._send(200, self.server.robots.encode(), "text/plain")
        if route == "private" and found:
            return self._send(200, found[0], found[1])
        if route == "tdm" and found:
            return self._send(200, found[0], found[1], {"tdm-reservation": "1"})
        if route == "trickle" and found:
            self.send_response(200)
            self.send_header("Content-Type", found[1])
            self.send_header("Content-Length", str(len(found[0])))
            self.end_headers()
            try:
                for i in range(min(len(found[0]), 60)):  # at most a minute, whatever the client does
                    self.wfile.write(found[0][i:i + 1])
                    self.wfile.flush()
                    time.sleep(1.0)
            except (BrokenPipeError, ConnectionResetError):
                pass
            self.close_connection = True
            return None
        if route == "retry-after" and found:
            with self.server.lock:
                first = f"ra:{arg}" not in self.server.retry_seen
                self.server.retry_seen.add(f"ra:{arg}")
            if first:
                return self._send(429, b"slow down", "text/plain", {"Retry-After": "1"})
            return self._send(200, found[0], found[1])
        if route == "retry-once" and found:
            with self.server.lock:
                first = arg not in self.server.retry_seen
                self.server.retry_seen.add(arg)
            if first:
                return self._send(503, b"try again", "text/plain")
            return self._send(200, found[0], found[1])
        return self._send(404, b"not found", "text/plain")


@contextmanager
def serve(images: dict[str, bytes], port: int = 0, slow_s: float = 3.0, big_bytes: int = 2_000_000,
          robots: str | None = None, stats: dict | None = None) -> Iterator[str]:
    """Serve `images` on 127.0.0.1 in a background thread; yields the base URL. `stats`, if given,
    is filled per Host header: `peak` requests in flight at once, `robots` robots.txt fetches."""
    server = _Server(("127.0.0.1", port), images, slow_s, big_bytes, robots, stats)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)
