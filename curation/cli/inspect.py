"""`curate inspect summary | show | validate | report FOLDER`: any pair, packed, preference or plan
shard folder, local or an fsspec URL."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def cmd_inspect(args: argparse.Namespace, beam_args: list[str]) -> int:
    """summary / show / validate / report over a pair or packed shard folder (local or fsspec URL)."""
    from rich.console import Console

    from curation.core.shardset import InspectError, ShardSet

    try:
        ss = ShardSet.open(args.folder)
        if args.verb == "summary":
            from curation.inspection.summary import render, summarize

            doc = summarize(ss)
            if args.json:
                print(json.dumps(doc, indent=1, sort_keys=True))
            else:
                render(doc, Console(width=110))
            return 0 if doc["accounting_ok"] else 1
        if args.verb == "show":
            from curation.inspection import show

            if ss.kind in ("pair", "preference"):
                found = show.find_pair(ss, uid=args.id, index=None if args.id else (args.index or 0))
                render = show.render_pair if ss.kind == "pair" else show.render_question
                print(render(found, args.save_images))
            elif ss.kind == "plan":
                from curation.plan.planner import iter_plan_packs

                pack = show.find_pack(ss, index=None if args.id else (args.index or 0), key=args.id, read=iter_plan_packs)
                print(json.dumps(pack.meta, indent=1, ensure_ascii=False))
            else:
                pack = show.find_pack(ss, index=None if args.id else (args.index or 0), key=args.id)
                print(show.render_pack(ss, pack, args.save_images))
            return 0
        if args.verb == "validate":
            from curation.inspection.validate import validate

            problems = validate(ss)
            for line in problems:
                print(f"INVALID {line}")
            print(f"{args.folder}: {'OK' if not problems else f'{len(problems)} problems'} "
                  f"({len(ss.shards)} shards, {ss.index['totals']['inputs']} rows)")
            return 0 if not problems else 1
        from curation.inspection.report import render_report

        out = Path(args.output or "report.html")
        out.write_text(render_report(ss), encoding="utf-8")
        print(f"wrote {out} ({out.stat().st_size:,} bytes)")
        return 0
    except InspectError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2


def add_inspect_command(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("inspect", help="look at a shard folder: summary, show, validate, report")
    p.add_argument("verb", choices=["summary", "show", "validate", "report"])
    p.add_argument("folder", help="an ingest, dedup or pack output folder (local path or fsspec URL)")
    p.add_argument("--json", action="store_true", help="summary: machine-readable")
    p.add_argument("--id", help="show: a sample uid (pairs), a pack key or a packed sample's uid (packs)")
    p.add_argument("--index", type=int, help="show: the N-th kept sample or pack (0-based)")
    p.add_argument("--save-images", metavar="DIR", help="show: write the sample's images into DIR")
    p.add_argument("-o", "--output", help="report: the HTML file to write (default report.html)")
    p.set_defaults(func=cmd_inspect)
