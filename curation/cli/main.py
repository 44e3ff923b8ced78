"""The `curate` command line: one module per command group (stages, inspect, model, demo).
Everything after `--` is a Beam pipeline option, passed untouched.

  curate ingest --config configs/laion.yaml --input 'meta/*.parquet' --output out/laion -- --runner DirectRunner
  curate dedup --config configs/dedup.yaml --input out/laion --input out/coyo --output out/dedup -- --runner DirectRunner
  curate pack --config configs/pack.yaml --input 'convs/*.jsonl' --output out/packed -- --runner DirectRunner
  curate plan --config configs/plan.yaml --input 'meta/*.parquet' --output out/plan   (metadata-only dry run)
  curate inspect summary|show|validate|report FOLDER ...                               (curation/cli/inspect.py)
  curate check out/packed ; curate train --data out/packed ; curate generate --prompt ... (curation/cli/model.py)
  curate demo --output demo-out                                                        (curation/cli/demo.py)
  curate export internvl --input out/annotated --output out/internvl                   (curation/cli/export.py)
"""

from __future__ import annotations

import argparse
import logging
import sys

from curation.cli.common import split_beam_args
from curation.cli.demo import add_demo_command
from curation.cli.export import add_export_command
from curation.cli.inspect import add_inspect_command
from curation.cli.model import add_model_commands
from curation.cli.stages import add_stage_commands
from curation.core.config import ConfigError


def main(argv: list[str] | None = None) -> int:
    ours, beam_args = split_beam_args(list(sys.argv[1:] if argv is None else argv))
    parser = argparse.ArgumentParser(prog="curate", description="Multimodal training-data curation on Apache Beam.")
    parser.add_argument("--log-level", default="WARNING")
    sub = parser.add_subparsers(dest="command", required=True)

    add_stage_commands(sub)
    add_inspect_command(sub)
    add_model_commands(sub)
    add_demo_command(sub)
    add_export_command(sub)

    args = parser.parse_args(ours)
    logging.basicConfig(level=args.log_level.upper(), format="%(levelname)s %(name)s: %(message)s")
    # Beam warns at import about optional GCP client libraries we do not use locally.
    logging.getLogger().addFilter(lambda record: "apitools not found" not in record.getMessage())
    logging.getLogger("curate.progress").setLevel(logging.INFO)  # heartbeat lines show at every --log-level
    try:
        return args.func(args, beam_args)
    except ConfigError as err:
        print(f"config error: {err}", file=sys.stderr)
        return 2
    except FileNotFoundError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except (RuntimeError, ValueError) as err:
        if type(err).__name__ not in ("OutputConflict", "TokenizerUnavailable", "TrainError", "PackError", "InspectError",
                                      "ShardFormatError"):
            raise
        print(f"error: {err}", file=sys.stderr)
        return 2
