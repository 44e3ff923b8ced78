"""`inspect report`: one self-contained HTML file - the summary tables, a PNG plot per distribution
(matplotlib, embedded as data URIs), a thumbnail grid of kept samples (or of packed images), and
examples of rejected rows per reason. Nothing is fetched when the page is opened."""

from __future__ import annotations

import base64
import html
import io
from typing import Any

from curation.core.shardset import ShardSet
from curation.inspection.summary import (CALIBRATION_COLUMNS, PIXEL_GATE_COLUMNS, calibration_rows, pixel_gate_rows,
                                         summarize)
from curation.core.shards import iter_tar_groups

THUMB = 160


def _png_uri(data: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(data).decode()


def _plot(name: str, d: dict[str, Any]) -> str:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    edges, counts = d["hist"]["edges"], d["hist"]["counts"]
    labels = [f"{edges[i]:.3g}–{'inf' if edges[i + 1] is None else format(edges[i + 1], '.3g')}" for i in range(len(counts))]
    fig, ax = plt.subplots(figsize=(5.5, 2.6), dpi=90)
    ax.bar(range(len(counts)), counts, color="#3b7dd8")
    ax.set_xticks(range(len(counts)), labels, rotation=35, ha="right", fontsize=7)
    ax.set_title(f"{name} (n={d['count']}, p50={d['p50']:.3g}, p95={d['p95']:.3g})", fontsize=9)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    plt.close(fig)
    return _png_uri(buf.getvalue())


def _thumb(data: bytes) -> str | None:
    from PIL import Image

    try:
        with Image.open(io.BytesIO(data)) as im:
            im.thumbnail((THUMB, THUMB))
            buf = io.BytesIO()
            im.convert("RGB").save(buf, "PNG")
        return _png_uri(buf.getvalue())
    except Exception:  # noqa: BLE001 - a broken image shows as missing, it does not stop the report
        return None


def _thumbnails(ss: ShardSet, limit: int) -> list[tuple[str, str, str]]:
    """(thumbnail uri, title, caption) for the first `limit` kept samples or packed images."""
    out: list[tuple[str, str, str]] = []
    for entry in ss.shards:
        with ss.open_tar(entry) as f:
            for key, group in iter_tar_groups(f):
                if ss.kind == "pair":
                    image = next((group[s] for s in ("jpg", "webp", "png") if s in group), None)
                    uri = _thumb(image) if image else None
                    if uri:
                        out.append((uri, key, group.get("txt", b"").decode("utf-8", "replace")))
                else:
                    for name in sorted(n for n in group if n.startswith("img")):
                        uri = _thumb(group[name])
                        if uri:
                            out.append((uri, f"{key}.{name}", ""))
                if len(out) >= limit:
                    return out[:limit]
    return out


def _frame_strips(ss: ShardSet, limit: int) -> list[tuple[str, str, list[tuple[str, float]]]]:
    """(key, caption, [(frame thumbnail uri, timestamp)]) for the first `limit` kept videos."""
    import json

    out = []
    for entry in ss.shards:
        with ss.open_tar(entry) as f:
            for key, group in iter_tar_groups(f):
                video = json.loads(group.get("json", b"{}")).get("video")
                if not isinstance(video, dict):
                    continue
                frames = sorted((n for n in group if n.startswith("frame")), key=lambda n: int(n[5:].split(".")[0] or 0))
                stamps = video.get("timestamps") or [0.0] * len(frames)
                thumbs = [(uri, float(t)) for name, t in zip(frames, stamps) if (uri := _thumb(group[name]))]
                out.append((key, group.get("txt", b"").decode("utf-8", "replace"), thumbs))
                if len(out) >= limit:
                    return out
    return out


def _rejected_examples(ss: ShardSet, per_reason: int) -> dict[str, list[dict[str, Any]]]:
    examples: dict[str, list[dict[str, Any]]] = {}
    for _, table in ss.manifests(["uid", "url", "caption", "status", "stage", "reason", "detail"]):
        for row in table.to_pylist():
            if row["status"] == "rejected":
                bucket = examples.setdefault(f"{row['stage']}/{row['reason']}", [])
                if len(bucket) < per_reason:
                    bucket.append(row)
    return dict(sorted(examples.items()))


def _unenforced_examples(ss: ShardSet, per_reason: int) -> dict[str, list[tuple[str, str, str]]]:
    """Kept annotate samples an open calibration gate stopped from being rejected: per reason, (uid,
    caption, detail), from the first few shards (a report samples, it does not scan a whole dataset)."""
    import json

    out: dict[str, list[tuple[str, str, str]]] = {}
    for entry in ss.shards[:4]:
        with ss.open_tar(entry) as f:
            for key, group in iter_tar_groups(f):
                quality = json.loads(group.get("json", b"{}")).get("quality") or {}
                for item in quality.get("unenforced", []):
                    reason, _, detail = item.partition(": ")
                    bucket = out.setdefault(reason, [])
                    if len(bucket) < per_reason:
                        bucket.append((key, group.get("txt", b"").decode("utf-8", "replace"), detail))
    return dict(sorted(out.items()))


def render_report(ss: ShardSet, thumbnails: int = 48, per_reason: int = 4) -> str:
    doc = summarize(ss)
    e = html.escape
    parts = [
        "<!doctype html><html><head><meta charset='utf-8'>",
        f"<title>{e(doc['folder'])} - curate inspect report</title>",
        "<style>body{font-family:sans-serif;margin:24px;color:#222}table{border-collapse:collapse;margin:8px 0}"
        "td,th{border:1px solid #ccc;padding:3px 8px;font-size:13px;text-align:left}"
        ".grid{display:flex;flex-wrap:wrap;gap:8px}.card{width:170px;font-size:11px;word-break:break-word}"
        ".card img{max-width:160px;max-height:160px;display:block}.plots img{margin:4px}"
        ".strip{margin:6px 0;font-size:11px}.strip figure{display:inline-block;margin:2px;text-align:center}"
        ".strip img{max-height:80px;display:block}</style></head><body>",
        f"<h1>{e(doc['folder'])}</h1><p>{e(doc['kind'])} shards</p>",
        "<h2>Summary</h2><table id='summary'>",
    ]
    rows = [("shards", doc["shards"]), ("bytes", f"{doc['bytes']:,}"), ("input rows", doc["rows"]),
            ("kept", doc["kept"]), ("rejected", doc["rejected"]),
            ("accounting", "OK" if doc["accounting_ok"] else "MISMATCH")]
    if doc["kind"] == "packed":
        rows += [("packs", doc["packs"]), ("mean token fill", f"{(doc['mean_token_fill'] or 0):.1%}"),
                 ("mean tile fill", f"{(doc['mean_tile_fill'] or 0):.1%}"),
                 ("sequences per pack", f"{(doc['sequences_per_pack'] or 0):.2f}"), ("truncated", doc["truncated"])]
    parts += [f"<tr><th>{e(str(k))}</th><td>{e(str(v))}</td></tr>" for k, v in rows]
    parts.append("</table><h2>Rejected per stage and reason</h2><table id='reasons'><tr><th>stage</th><th>reason</th><th>rows</th></tr>")
    for stage, reasons in doc["rejected_by_stage"].items():
        parts += [f"<tr><td>{e(stage)}</td><td>{e(r)}</td><td>{n}</td></tr>" for r, n in reasons.items()]
    if doc.get("calibration"):
        cal = doc["calibration"]
        parts.append(f"</table><h2>Rater calibration</h2><p>{e(str(cal.get('model')))} ({e(str(cal.get('backend')))}) "
                     f"on {cal.get('probes')} labelled probes: a score rejects only where its gate is enforced</p>"
                     "<table id='calibration'><tr>" + "".join(f"<th>{e(c)}</th>" for c in CALIBRATION_COLUMNS) + "</tr>")
        parts += ["<tr>" + "".join(f"<td>{e(v)}</td>" for v in row) + "</tr>" for row in calibration_rows(cal)]
        parts.append("</table><h3>Kept because a gate is not enforced (what the score alone would have rejected)</h3>"
                     "<table id='unenforced'><tr><th>would be</th><th>uid</th><th>caption</th><th>detail</th></tr>")
        for reason, rows_ in _unenforced_examples(ss, per_reason).items():
            parts += [f"<tr><td>{e(reason)}</td><td>{e(uid)}</td><td>{e(cap[:160])}</td><td>{e(detail[:200])}</td></tr>"
                      for uid, cap, detail in rows_]
    if doc.get("pixel_gates"):
        parts.append("</table><h2>Pixel models</h2><p>measured on their probes: a score rejects only where its gate is "
                     "enforced</p><table id='pixel-gates'><tr>" + "".join(f"<th>{e(c)}</th>" for c in PIXEL_GATE_COLUMNS)
                     + "</tr>")
        parts += ["<tr>" + "".join(f"<td>{e(v)}</td>" for v in row) + "</tr>" for row in pixel_gate_rows(doc["pixel_gates"])]
    parts.append("</table><h2>Distributions</h2><div class='plots'>")
    for name, d in doc["distributions"].items():
        if d.get("count"):
            parts.append(f"<img class='plot' alt='{e(name)}' src='{_plot(name, d)}'>")
    strips = _frame_strips(ss, thumbnails) if ss.kind == "pair" else []
    if strips:
        parts.append("</div><h2>Videos</h2><p>each kept video's sampled frames in time order</p><div id='videos'>")
        for key, caption, frames in strips:
            parts.append(f"<div class='strip'><b>{e(key)}</b> {e(caption[:160])}<br>"
                         + "".join(f"<figure><img alt='{e(key)} {t}s' src='{uri}'><figcaption>{t:g} s</figcaption></figure>"
                                   for uri, t in frames) + "</div>")
    parts.append("</div><h2>Kept samples</h2><div class='grid' id='kept'>")
    for uri, title, caption in _thumbnails(ss, thumbnails):
        parts.append(f"<div class='card'><img class='thumb' alt='{e(title)}' src='{uri}'><b>{e(title)}</b><br>{e(caption[:160])}</div>")
    parts.append("</div><h2>Rejected examples per reason</h2>")
    for reason, rows_ in _rejected_examples(ss, per_reason).items():
        parts.append(f"<h3>{e(reason)}</h3><div class='grid'>")
        for r in rows_:
            parts.append(f"<div class='card'><b>{e(r['uid'])}</b><br>{e(str(r.get('url') or '')[:120])}<br>"
                         f"{e(str(r.get('caption') or '')[:160])}<br><i>{e(str(r.get('detail') or '')[:200])}</i></div>")
        parts.append("</div>")
    parts.append("</body></html>")
    return "".join(parts)
