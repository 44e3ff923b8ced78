"""The local runner's data plane, set so it keeps every row.

Beam's FnApiRunner (behind DirectRunner) feeds SDK workers over gRPC in `multi_processing` and
`multi_threading` modes through a `TimeBasedBufferingClosableOutputStream`: a background thread
flushes the buffer every `DATA_BUFFER_TIME_LIMIT_MS` (1000 ms) with `get()` then `_clear()`, while
the runner's `_send_input_to_worker` keeps calling `write()` without the flush lock. A chunk written
between the two is erased: whole chunks of a materialised stage input (a multi-input Flatten,
a CoGroupByKey) vanish without an error once sending one worker's input takes over a second
(about 15% of 10^6 1-KB elements here; none at 10^5). `bench/runner_loss.py` reproduces it with
Beam transforms only. A limit of 0 selects the size-based stream, which has no flush thread.

Which local runner: Beam 2.77's DirectRunner first tries every pipeline on Prism (downloading its
binary when online) and falls back to the FnApiRunner only if that fails, so a laptop with internet
ran our pipelines on a runner no test covers, ignoring `--direct_running_mode`. `pipeline` pins
DirectRunner (the default) to the FnApiRunner, the runner our tests run; `--runner PrismRunner
--prism_location PATH` still reaches Prism, untested by us.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import apache_beam as beam
    from apache_beam.options.pipeline_options import PipelineOptions

#: the value that selects Beam's size-based data stream (no periodic flush thread, no race)
NO_TIME_FLUSH = 0


def keep_rows() -> None:
    """Switch the local runner's runner-to-worker data streams to size-based flushing. Read when a
    pipeline's gRPC server is built, so call it before `Pipeline.run`; other runners ignore it."""
    from apache_beam.runners.portability.fn_api_runner import worker_handlers

    worker_handlers.DATA_BUFFER_TIME_LIMIT_MS = NO_TIME_FLUSH


def pipeline_options(beam_args: list[str] | None) -> PipelineOptions:
    """The pass-through Beam options of a `curate` command, DirectRunner when no `--runner` is
    given, the S3 endpoint from `AWS_ENDPOINT_URL` when `--s3_endpoint_url` is not given (an
    S3-compatible store: MinIO, SeaweedFS, R2), and the local runner's data plane set to keep every
    row (`keep_rows`). Also hands them to Beam's FileSystems, so the launcher's own reads and
    writes (inputs listed, the job state, the index) reach the same stores as the workers."""
    import os

    from apache_beam.io.filesystems import FileSystems
    from apache_beam.options.pipeline_options import PipelineOptions, S3Options, StandardOptions

    options = PipelineOptions(beam_args or [])
    if not any(a.startswith("--runner") for a in beam_args or []):
        options.view_as(StandardOptions).runner = "DirectRunner"
    s3 = options.view_as(S3Options)
    if not s3.s3_endpoint_url and os.environ.get("AWS_ENDPOINT_URL"):
        s3.s3_endpoint_url = os.environ["AWS_ENDPOINT_URL"]
    FileSystems.set_options(options)
    keep_rows()
    return options


DIRECT_NAMES = ("directrunner", "direct", "switchingdirectrunner")


def tested_runner(options: PipelineOptions):
    """The runner to hand `beam.Pipeline`: for DirectRunner, Beam's FnApiRunner itself (what
    DirectRunner picks after Prism, built the same way, so `--direct_running_mode` and
    `--direct_num_workers` hold); None for any other `--runner`, which Beam resolves."""
    from apache_beam.options.pipeline_options import StandardOptions

    name = options.view_as(StandardOptions).runner
    if name is not None and (not isinstance(name, str) or name.lower() not in DIRECT_NAMES):
        return None
    from apache_beam.portability.api import beam_provision_api_pb2
    from apache_beam.runners.portability.fn_api_runner import fn_runner
    from apache_beam.runners.portability.portable_runner import JobServiceHandle

    encoded = JobServiceHandle.encode_pipeline_options(options.get_all_options())
    return fn_runner.FnApiRunner(provision_info=fn_runner.ExtendedProvisionInfo(
        beam_provision_api_pb2.ProvisionInfo(pipeline_options=encoded)))


def pipeline(options: PipelineOptions) -> beam.Pipeline:
    """A `curate` command's pipeline over its options (`pipeline_options`), on the tested local
    runner unless another `--runner` is named (`tested_runner`)."""
    import apache_beam as beam

    return beam.Pipeline(runner=tested_runner(options), options=options)
