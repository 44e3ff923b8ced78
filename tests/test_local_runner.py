"""The local runner a `curate` command gets (pipelines/local_runner.py): DirectRunner is pinned to
Beam's FnApiRunner, the runner the suite covers, with no Prism attempt, its running mode honoured;
any other `--runner` passes through to Beam."""

import os
import subprocess
import sys
import textwrap
from pathlib import Path

from apache_beam.runners.portability.fn_api_runner.fn_runner import FnApiRunner

from pipelines import local_runner

ROOT = Path(__file__).resolve().parent.parent


def test_direct_runner_and_no_runner_are_the_fn_api_runner():
    for args in ([], ["--runner", "DirectRunner"], ["--runner=direct"], ["--direct_running_mode=multi_processing"]):
        assert isinstance(local_runner.pipeline(local_runner.pipeline_options(args)).runner, FnApiRunner), args


def test_another_runner_passes_through_to_beam():
    from apache_beam.runners.portability.prism_runner import PrismRunner

    p = local_runner.pipeline(local_runner.pipeline_options(["--runner=PrismRunner", "--prism_location=/nonexistent/prism"]))
    assert isinstance(p.runner, PrismRunner) and not isinstance(p.runner, FnApiRunner)


def test_a_pipeline_runs_in_the_named_mode_and_never_tries_prism(tmp_path):
    """A fresh interpreter (no module imported by other tests): two SDK worker processes do the
    work, and Beam's Prism runner module is never even imported."""
    script = textwrap.dedent(f"""
        import os, sys
        sys.path.insert(0, {str(ROOT)!r})
        import apache_beam as beam
        from pipelines import local_runner
        out = {str(tmp_path / "pids")!r}
        opts = local_runner.pipeline_options(["--direct_running_mode=multi_processing", "--direct_num_workers=2"])
        with local_runner.pipeline(opts) as p:
            (p | beam.Create(range(200)) | beam.Reshuffle() | beam.Map(lambda _: os.getpid())
               | beam.Distinct() | beam.combiners.ToList()
               | beam.Map(lambda pids: open(out, "w").write(" ".join(map(str, pids)))))
        print("prism imported:", "apache_beam.runners.portability.prism_runner" in sys.modules)
        print("launcher", os.getpid())
    """)
    run = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300,
                         env={**os.environ, "HF_HUB_OFFLINE": "1"})
    assert run.returncode == 0, run.stderr[-3000:]
    assert "prism imported: False" in run.stdout
    launcher = int(run.stdout.split("launcher")[1])
    pids = {int(x) for x in (tmp_path / "pids").read_text().split()}
    assert pids and launcher not in pids  # the work ran in SDK worker processes, as the mode says
    assert "PrismRunner" not in run.stderr
