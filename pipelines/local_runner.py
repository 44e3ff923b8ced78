"""The local runner's data plane, set so it keeps every row.

Beam's FnApiRunner (behind DirectRunner) feeds SDK workers over gRPC in `multi_processing` and
`multi_threading` modes through a `TimeBasedBufferingClosableOutputStream`: a background thread
flushes the buffer every `DATA_BUFFER_TIME_LIMIT_MS` (1000 ms) with `get()` then `_clear()`, while
the runner's `_send_input_to_worker` keeps calling `write()` without the flush lock. A chunk written
between the two is erased: whole chunks of a materialised stage input (a multi-input Flatten,
a CoGroupByKey) vanish without an error once sending one worker's input takes over a second
(about 15% of 10^6 1-KB elements here; none at 10^5). `bench/runner_loss.py` reproduces it with
Beam transforms only. A limit of 0 selects the size-based stream, which has no flush thread.
"""

from __future__ import annotations

#: the value that selects Beam's size-based data stream (no periodic flush thread, no race)
NO_TIME_FLUSH = 0


def keep_rows() -> None:
    """Switch the local runner's runner-to-worker data streams to size-based flushing. Read when a
    pipeline's gRPC server is built, so call it before `Pipeline.run`; other runners ignore it."""
    from apache_beam.runners.portability.fn_api_runner import worker_handlers

    worker_handlers.DATA_BUFFER_TIME_LIMIT_MS = NO_TIME_FLUSH


def pipeline_options(beam_args: list[str] | None):
    """The pass-through Beam options of a `curate` command, DirectRunner when no `--runner` is
    given, with the local runner's data plane set to keep every row (`keep_rows`)."""
    from apache_beam.options.pipeline_options import PipelineOptions, StandardOptions

    options = PipelineOptions(beam_args or [])
    if not any(a.startswith("--runner") for a in beam_args or []):
        options.view_as(StandardOptions).runner = "DirectRunner"
    keep_rows()
    return options
