"""`inspect summary`: counts, kept / rejected per stage and reason, and distributions, from the
manifests and pack indexes only (no tar is opened), one shard at a time."""

from __future__ import annotations

import math
from collections import Counter
from typing import Any

import numpy as np

from curation.core.shardset import ShardSet

PAIR_SCORES = ("clip_similarity", "aesthetic_score", "nsfw_score", "watermark_score", "quality_score", "ocr_chars",
               "clip_pixel_similarity", "aesthetic_pixels", "nsfw_pixels", "faces")
_EDGES = {
    "caption_chars": [0, 10, 20, 40, 80, 160, 320, 640, 1280, math.inf],
    "image_side": [0, 64, 128, 256, 512, 1024, 2048, math.inf],
    "aspect_ratio": [0, 0.33, 0.5, 0.75, 0.95, 1.05, 1.33, 2.0, 3.0, math.inf],
}


def distribution(values: np.ndarray, edges: list[float] | None = None, bins: int = 10) -> dict[str, Any]:
    """count, min, mean, p50, p95, max and a histogram (fixed `edges`, else `bins` over the range)."""
    values = np.asarray(values, dtype=np.float64)
    values = values[np.isfinite(values)]
    if values.size == 0:
        return {"count": 0}
    if edges is None:
        lo, hi = float(values.min()), float(values.max())
        edges = list(np.linspace(lo, hi if hi > lo else lo + 1.0, bins + 1))
    counts, _ = np.histogram(np.clip(values, edges[0], np.nextafter(edges[-1], -np.inf)), bins=np.asarray(edges))
    return {
        "count": int(values.size), "min": float(values.min()), "mean": float(values.mean()),
        "p50": float(np.percentile(values, 50)), "p95": float(np.percentile(values, 95)), "max": float(values.max()),
        "hist": {"edges": [e if math.isfinite(e) else None for e in map(float, edges)], "counts": counts.tolist()},
    }


def summarize(ss: ShardSet) -> dict[str, Any]:
    """The summary document (what `--json` prints)."""
    status: Counter[str] = Counter()
    by_stage: dict[str, Counter[str]] = {}
    columns: dict[str, list[np.ndarray]] = {}
    rows = 0

    def add(name: str, array) -> None:
        columns.setdefault(name, []).append(np.asarray(array, dtype=np.float64))

    wanted = ["status", "stage", "reason", "caption", "width", "height", *PAIR_SCORES, "truncated", "pairs", "samples",
              "correct"]
    for _, table in ss.manifests(wanted):
        rows += table.num_rows
        st = table.column("status").to_numpy(zero_copy_only=False)
        status.update(st.tolist())
        rejected = st == "rejected"
        if rejected.any():
            stages = table.column("stage").to_numpy(zero_copy_only=False)[rejected]
            reasons = table.column("reason").to_numpy(zero_copy_only=False)[rejected]
            for stage, reason in zip(stages.tolist(), reasons.tolist()):
                by_stage.setdefault(stage or "?", Counter())[reason or "?"] += 1
        kept = ~rejected
        names = table.column_names
        if ss.kind == "pair":
            caps = table.column("caption").to_numpy(zero_copy_only=False)[kept]
            add("caption_chars", [len(c) if c else 0 for c in caps])
            w = table.column("width").to_numpy(zero_copy_only=False)[kept].astype(np.float64)
            h = table.column("height").to_numpy(zero_copy_only=False)[kept].astype(np.float64)
            add("image_width", w)
            add("image_height", h)
            with np.errstate(divide="ignore", invalid="ignore"):
                add("aspect_ratio", w / h)
            for score in PAIR_SCORES:
                if score in names:
                    add(score, table.column(score).to_numpy(zero_copy_only=False)[kept].astype(np.float64))
        elif ss.kind == "preference":
            for col in ("pairs", "samples", "correct"):
                if col in names:
                    add(f"{col}_per_question", table.column(col).to_numpy(zero_copy_only=False)[kept].astype(np.float64))
        else:
            if "truncated" in names:
                add("truncated", table.column("truncated").to_numpy(zero_copy_only=False)[kept].astype(np.float64))
    totals = ss.index["totals"]
    doc: dict[str, Any] = {
        "folder": ss.folder, "kind": ss.kind, "shards": len(ss.shards),
        "bytes": int(sum(e.get("tar_bytes", 0) for e in ss.shards)),
        "rows": rows, "kept": status.get("kept", 0), "rejected": status.get("rejected", 0),
        # the stage's own count when it ran (indexes before it carry none): rows read == rows written
        "rows_read": ss.index.get("rows", {}).get("rows_read"),
        "accounting_ok": rows == status.get("kept", 0) + status.get("rejected", 0) == totals["inputs"]
                         and status.get("kept", 0) == totals["kept"]
                         and ss.index.get("rows", {}).get("rows_read", totals["inputs"]) == totals["inputs"],
        "index_totals": totals,
        "rejected_by_stage": {s: dict(sorted(c.items(), key=lambda kv: (-kv[1], kv[0])))
                              for s, c in sorted(by_stage.items())},
        "distributions": {},
    }
    dist = doc["distributions"]
    merged = {k: np.concatenate(v) if v else np.empty(0) for k, v in columns.items()}
    if ss.kind == "pair":
        dist["caption_chars"] = distribution(merged.get("caption_chars", np.empty(0)), _EDGES["caption_chars"])
        dist["image_width"] = distribution(merged.get("image_width", np.empty(0)), _EDGES["image_side"])
        dist["image_height"] = distribution(merged.get("image_height", np.empty(0)), _EDGES["image_side"])
        dist["aspect_ratio"] = distribution(merged.get("aspect_ratio", np.empty(0)), _EDGES["aspect_ratio"])
        for score in PAIR_SCORES:
            if score in merged and np.isfinite(merged[score]).any():
                dist[score] = distribution(merged[score])
        doc["samples"] = doc["kept"]
        if ss.index.get("stats"):  # stage totals, e.g. annotate's conversations per task
            doc["stats"] = dict(ss.index["stats"])
        if ss.index.get("calibration"):  # annotate: the rater measured on the probe set, and its gates
            doc["calibration"] = ss.index["calibration"]
        gates = {name: ss.index[key] for name, key in PIXEL_GATES if ss.index.get(key)}
        if gates:  # ingest: the pixel models measured on their probes
            doc["pixel_gates"] = gates
    elif ss.kind == "preference":
        for name, values in sorted(merged.items()):
            dist[name] = distribution(values)
        doc["samples"] = doc["kept"]
        doc["stats"] = dict(ss.index.get("stats", {}))
    else:
        doc.update(_pack_stats(ss, dist))
        doc["truncated"] = int(merged.get("truncated", np.empty(0)).sum())
    return doc


def _pack_stats(ss: ShardSet, dist: dict[str, Any]) -> dict[str, Any]:
    l_max, t_max = ss.index.get("l_max"), ss.index.get("t_max")
    cols: dict[str, list[np.ndarray]] = {}
    for entry in ss.shards:
        table = ss.packs_table(entry)
        if table is None:
            continue
        for name in ("tokens", "tiles", "fill", "tile_fill", "units", "segments"):
            cols.setdefault(name, []).append(table.column(name).to_numpy(zero_copy_only=False).astype(np.float64))
    merged = {k: np.concatenate(v) for k, v in cols.items()}
    packs = int(merged["tokens"].size) if "tokens" in merged else 0
    if packs:
        dist["tokens_per_pack"] = distribution(merged["tokens"], list(np.linspace(0, l_max, 11)) if l_max else None)
        dist["tiles_per_pack"] = distribution(merged["tiles"], list(np.linspace(0, t_max, 11)) if t_max else None)
        dist["token_fill"] = distribution(merged["fill"], list(np.linspace(0, 1, 11)))
        dist["tile_fill"] = distribution(merged["tile_fill"], list(np.linspace(0, 1, 11)))
        dist["samples_per_pack"] = distribution(merged["units"], [0.5 + i for i in range(int(merged["units"].max()) + 1)])
    from packing.meta import datasets_from_stats

    stats = ss.index.get("stats") or {}
    extra = {"datasets": datasets_from_stats(stats), "text_tokens": stats.get("text_tokens"),
             "tokens": stats.get("tokens"), **({"ratio": ss.index["ratio"]} if ss.index.get("ratio") else {})}
    return {**extra, "packs": packs, "l_max": l_max, "t_max": t_max, "samples": ss.index["totals"]["kept"],
            "mean_token_fill": float(merged["fill"].mean()) if packs else None,
            "mean_tile_fill": float(merged["tile_fill"].mean()) if packs else None,
            "sequences_per_pack": float(merged["segments"].mean()) if packs else None}


def datasets_table(datasets: dict[str, dict[str, int]], ratio: dict[str, Any] | None = None):
    """Per meta dataset: rows (copies included), kept, tokens, tiles, and its share of the tokens;
    with a target ratio (`_index.json` `ratio`), the weight it gave each dataset and the ratios."""
    from rich.table import Table

    total = sum(d["tokens"] for d in datasets.values()) or 1
    title = "meta datasets"
    if ratio:
        a, b = ratio["target"]
        title += (f" (target text : multimodal {a:g} : {b:g} by {ratio.get('by', 'subsample')}; "
                  f"1 : {1 / ratio['before']:.2f} before the weights, 1 : {1 / ratio['expected']:.2f} expected)")
    table = Table(title=title)
    cols = ("dataset", "rows", "kept", "tokens", "tiles", "token share") + (("ratio weight",) if ratio else ())
    for col in cols:
        table.add_column(col, justify="left" if col == "dataset" else "right")
    for name, d in sorted(datasets.items()):
        weight = (f"{ratio['weights'].get(name, 1.0):.4g}",) if ratio else ()
        table.add_row(name, *(f"{d[k]:,}" for k in ("rows", "kept", "tokens", "tiles")), f"{d['tokens'] / total:.1%}",
                      *weight)
    return table


def calibration_rows(cal: dict[str, Any]) -> list[tuple[str, ...]]:
    """Per LLM score: threshold, ROC-AUC, clean-reject rate, gate state (enforced, or why not)."""
    rows = []
    for name, g in cal.get("gates", {}).items():
        auc = "-" if g.get("auc") is None else f"{g['auc']:.3f}"
        rej, caught = ("-" if g.get(k) is None else f"{g[k]:.1%}" for k in ("clean_reject", "degraded_reject"))
        state = "enforced" if g.get("enforced") else f"NOT enforced: {g.get('why', '')}"
        rows.append((name, f"{g.get('threshold'):g}", auc, rej, caught, f"{g.get('clean', 0)}/{g.get('degraded', 0)}",
                     state))
    return rows


PIXEL_GATES = (("nsfw", "nsfw_gate"), ("clip", "clip_gate"))  # (model step, its index key)
PIXEL_GATE_COLUMNS = ("step", "model", "threshold", "ROC-AUC", "clean reject", "probes", "gate")


def pixel_gate_rows(gates: dict[str, Any]) -> list[tuple[str, ...]]:
    """Per pixel model (ingest's `pixels:`): threshold, ROC-AUC and clean-reject rate on its
    probes, and its gate state (enforced, or why not)."""
    rows = []
    for step, g in gates.items():
        threshold = g.get("max_score", g.get("min_similarity"))
        auc = "-" if g.get("auc") is None else f"{g['auc']:.3f}"
        rej = "-" if g.get("clean_reject") is None else f"{g['clean_reject']:.1%}"
        probes = "/".join(str(g[k]) for k in ("safe", "unsafe", "matched", "mismatched") if k in g) or "-"
        state = "enforced" if g.get("enforced") else f"NOT enforced: {g.get('why', '')}"
        rows.append((step, str(g.get("model")), "-" if threshold is None else f"{threshold:g}", auc, rej, probes, state))
    return rows


CALIBRATION_COLUMNS = ("score", "threshold", "ROC-AUC", "clean reject", "degraded reject", "clean/degraded probes",
                       "gate")


def render(doc: dict[str, Any], console) -> None:
    """Terminal tables: overview, rejections per stage and reason, distributions with a bar per bin."""
    from rich.table import Table

    over = Table(title=f"{doc['folder']} ({doc['kind']} shards)", show_header=False)
    over.add_row("shards", str(doc["shards"]))
    over.add_row("bytes", f"{doc['bytes']:,}")
    over.add_row("input rows", str(doc["rows"]))
    if doc["rows_read"] is not None:
        over.add_row("rows the stage read", str(doc["rows_read"]))
    over.add_row("kept", str(doc["kept"]))
    over.add_row("rejected", str(doc["rejected"]))
    if doc["kind"] in ("packed", "plan"):
        over.add_row("packs", str(doc["packs"]))
        if doc["packs"]:
            over.add_row("mean token / tile fill", f"{doc['mean_token_fill']:.1%} / {doc['mean_tile_fill']:.1%}")
            over.add_row("sequences per pack", f"{doc['sequences_per_pack']:.2f}")
        over.add_row("truncated", str(doc["truncated"]))
        if doc.get("text_tokens") is not None and doc.get("tokens"):
            over.add_row("text-only : multimodal tokens", f"{doc['text_tokens']:,} : {doc['tokens'] - doc['text_tokens']:,}")
    for name, value in doc.get("stats", {}).items() if doc["kind"] in ("pair", "preference") else ():
        over.add_row(name.replace("_", " "), str(value))
    over.add_row("accounting", "OK (read == inputs == kept + rejected == index)" if doc["accounting_ok"] else "MISMATCH")
    console.print(over)
    if doc.get("datasets"):
        console.print(datasets_table(doc["datasets"], doc.get("ratio")))
    if doc.get("calibration"):
        cal = doc["calibration"]
        t = Table(title=f"rater calibration: {cal.get('model')} ({cal.get('backend')}) on {cal.get('probes')} probes")
        for col in CALIBRATION_COLUMNS:
            t.add_column(col)
        for row in calibration_rows(cal):
            t.add_row(*row)
        console.print(t)
    if doc.get("pixel_gates"):
        t = Table(title="pixel models: a score rejects only where its gate is enforced")
        for col in PIXEL_GATE_COLUMNS:
            t.add_column(col)
        for row in pixel_gate_rows(doc["pixel_gates"]):
            t.add_row(*row)
        console.print(t)
    if doc["rejected_by_stage"]:
        rej = Table(title="rejected per stage and reason")
        for col in ("stage", "reason", "rows"):
            rej.add_column(col, justify="right" if col == "rows" else "left")
        for stage, reasons in doc["rejected_by_stage"].items():
            for reason, n in reasons.items():
                rej.add_row(stage, reason, str(n))
        console.print(rej)
    for name, d in doc["distributions"].items():
        if not d.get("count"):
            continue
        t = Table(title=f"{name}: n={d['count']} min={d['min']:.4g} mean={d['mean']:.4g} p50={d['p50']:.4g} "
                        f"p95={d['p95']:.4g} max={d['max']:.4g}", show_header=False)
        edges, counts = d["hist"]["edges"], d["hist"]["counts"]
        top = max(counts) or 1
        for i, c in enumerate(counts):
            hi = "inf" if edges[i + 1] is None else f"{edges[i + 1]:.4g}"
            t.add_row(f"[{edges[i]:.4g}, {hi})", str(c), "#" * round(30 * c / top))
        console.print(t)
