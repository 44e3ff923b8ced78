"""`curate export internvl --input FOLDER --output DIR`: an annotate or MMPR output in InternVL's
layout (jsonl + image files at relative paths), for training with InternVL's own code."""

from __future__ import annotations

import argparse


def cmd_export(args: argparse.Namespace, beam_args: list[str]) -> int:
    from curation.core.export import export_internvl

    totals = export_internvl(args.input, args.output)
    print(f"exported {totals['rows']} rows and {totals['images']} images "
          f"({totals['bytes'] / 1e6:.1f} MB) from {totals['shards']} shards to {args.output}: "
          f"InternVL reads {args.output}/{totals['jsonl']} with root {args.output}")
    return 0


def add_export_command(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("export", help="write an annotate or mmpr output in another tool's layout")
    p.add_argument("format", choices=["internvl"], help="internvl: jsonl + image files at relative paths")
    p.add_argument("--input", required=True, help="an annotate or mmpr output folder (local path or fsspec URL)")
    p.add_argument("--output", required=True, help="a local folder")
    p.set_defaults(func=cmd_export)
