"""Each stage's end-of-run report: the accounting table (kept, rejected per reason) plus what the
stage itself made (packs, pairs, conversations, duplicates)."""

from __future__ import annotations

import sys
from typing import Any

from curation.core.reasons import REASON_HINTS


def print_ingest_report(index: dict[str, Any], output: str, stream=None) -> None:
    """Kept/rejected per reason, the accounting check, and this run's Beam counters."""
    from rich.console import Console
    from rich.table import Table

    console = Console(file=stream or sys.stdout, width=100)
    totals = index["totals"]
    ok = totals["inputs"] == totals["kept"] + sum(index["reasons"].values())
    table = Table(title=f"{output}: {index['num_shards']} shards, {totals['inputs']} input rows")
    table.add_column("status / reason")
    table.add_column("rows", justify="right")
    table.add_row("kept", str(totals["kept"]))
    for reason, count in sorted(index["reasons"].items(), key=lambda kv: (-kv[1], kv[0])):
        table.add_row(f"rejected: {reason}", str(count))
    console.print(table)
    console.print(f"accounting: inputs {totals['inputs']} == kept {totals['kept']} + rejected "
                  f"{sum(index['reasons'].values())}: {'OK' if ok else 'MISMATCH'}")
    for reason in sorted(r for r in index["reasons"] if r in REASON_HINTS):
        console.print(f"hint: {reason}: {REASON_HINTS[reason]}", highlight=False)
    metrics = index.get("_metrics")
    if metrics:
        console.print("beam counters (this run): " + ", ".join(f"{k}={v}" for k, v in metrics.items()))


def print_pack_report(index: dict[str, Any], output: str, stream=None) -> None:
    """The accounting table plus packing quality: packs, fill, samples per pack, truncations."""
    from rich.console import Console

    print_ingest_report(index, output, stream)
    stats = index.get("stats") or {}
    packs = stats.get("packs", 0)
    if packs:
        console = Console(file=stream or sys.stdout, width=100)
        console.print(
            f"packs: {packs} (l_max {index['l_max']}, t_max {index['t_max']}): token fill "
            f"{stats['tokens'] / (packs * index['l_max']):.1%}, tile fill {stats['tiles'] / (packs * index['t_max']):.1%}, "
            f"{stats['segments'] / packs:.2f} sequences per pack, {stats.get('truncated', 0)} truncated")
        text = stats.get("text_tokens", 0)
        console.print(f"text-only : multimodal tokens = {text:,} : {stats['tokens'] - text:,}"
                      + (f" (1 : {(stats['tokens'] - text) / text:.2f})" if text else ""))
        print_datasets(index, console)


def print_datasets(index: dict[str, Any], console) -> None:
    """The meta datasets' table, when the pack read a meta file."""
    from curation.inspection.summary import datasets_table
    from packing.meta import datasets_from_stats

    datasets = datasets_from_stats(index.get("stats") or {})
    if datasets:
        console.print(datasets_table(datasets, index.get("ratio")))


def print_plan_report(index: dict[str, Any], output: str, stream=None) -> None:
    """The accounting table plus what a download + pack of the kept rows would give."""
    from rich.console import Console

    print_ingest_report(index, output, stream)
    stats = index.get("stats") or {}
    kept = index["totals"]["kept"]
    if kept:
        Console(file=stream or sys.stdout, width=100).print(
            f"planned: {kept} samples -> {stats.get('packs', 0)} packs (l_max {index['l_max']}, t_max {index['t_max']}), "
            f"{stats.get('tokens', 0):,} tokens, {stats.get('tiles', 0):,} tiles, {stats.get('tokens', 0) / kept:.0f} tokens "
            f"and {stats.get('tiles', 0) / kept:.2f} tiles per sample, {stats.get('truncated', 0)} truncated"
            + (f"; estimated: {stats['estimated_kept']} samples planned on an assumed size (missing_size)"
               if stats.get("estimated_kept") else ""))


def print_mmpr_report(index: dict[str, Any], output: str, stream=None) -> None:
    """The accounting table (one row per question) plus the pairs made, per method."""
    from rich.console import Console

    print_ingest_report(index, output, stream)
    stats = index.get("stats", {})
    methods = ", ".join(f"{k[6:]}={v}" for k, v in sorted(stats.items()) if k.startswith("pairs_")) or "none"
    responses = stats.get("responses", 0)
    Console(file=stream or sys.stdout, width=100).print(
        f"pairs: {stats.get('pairs', 0)} ({methods}) in {output}/*.jsonl; responses sampled {responses}, "
        f"right {stats.get('correct_responses', 0)} (policy {index.get('policy')}, continuation {index.get('continuation')})")


def print_annotate_report(index: dict[str, Any], output: str, stream=None) -> None:
    """The accounting table plus the conversations written, per task."""
    from rich.console import Console

    print_ingest_report(index, output, stream)
    stats = index.get("stats", {})
    tasks = ", ".join(f"{k[5:]}={v}" for k, v in sorted(stats.items()) if k.startswith("task_")) or "none"
    Console(file=stream or sys.stdout, width=100).print(
        f"conversations: {stats.get('conversations', 0)} ({tasks}) in {output}/*.conversations.jsonl")


def print_dedup_report(index: dict[str, Any], output: str, stream=None) -> None:
    """The accounting table plus what dedup itself found (counts per duplicate kind, hot buckets)."""
    from rich.console import Console

    print_ingest_report(index, output, stream)
    dups = {r: n for r, n in index["reasons"].items() if "dup_" in r and r != "dup_uid"}
    Console(file=stream or sys.stdout, width=100).print(
        "duplicates removed: " + (", ".join(f"{r}={n}" for r, n in sorted(dups.items())) or "none"))
