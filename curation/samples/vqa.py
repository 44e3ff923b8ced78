"""A small VQA question set for `curate mmpr` in the demo and tests: rendered sign images with
questions of every answer type (numbers, multiple choice, OCR words for ANLS), questions without a
ground truth (Dropout NTP), and rows that must be rejected (bad JSON, no question, a missing or
corrupt image). `expected` names each row's outcome class."""

from __future__ import annotations

import json
from pathlib import Path

from curation.samples.text_images import text_images

QUESTIONS = [
    # (question, answer_gt, answer_type, options)
    ("What is 12 + 7?", "19", "number", None),
    ("How many sides does a triangle have?", "3", "number", None),
    ("What is 3 times 4?", "12", "number", None),
    ("What color is the sky on a clear day? Options: (A) green (B) blue (C) red", "B", "multiple_choice",
     ["green", "blue", "red"]),
    ("What word is written on the sign?", None, "anls", None),  # answer_gt: the sign's word
    ("How many legs does a dog have?", "4", "number", None),
]
# InternVL-style questions (the placeholder first): Dropout NTP continues them without the image.
NO_GT = ["<image>\nDescribe this image in one sentence.", "<image>\nWhat could this place be used for?"]


def _rel(sign) -> str:
    ext = "jpg" if sign.data.startswith(b"\xff\xd8\xff") else "png"
    return f"images/{sign.name}.{ext}"


def write_vqa(out_dir: str | Path, seed: int = 0) -> dict[str, Path]:
    """Write `vqa.jsonl` with its images under `images/`; returns the paths (jsonl, expected)."""
    out = Path(out_dir)
    (out / "images").mkdir(parents=True, exist_ok=True)
    signs = text_images(len(QUESTIONS) + len(NO_GT), seed)
    rows, expected = [], {}
    for i, (question, gt, kind, options) in enumerate(QUESTIONS):
        sign = signs[i]
        rel = _rel(sign)
        (out / rel).write_bytes(sign.data)
        row = {"id": f"q{i}", "image": rel, "question": question, "answer_gt": gt or " ".join(sign.lines),
               "answer_type": kind}
        if options:
            row["options"] = options
        rows.append(row)
        expected[row["id"]] = "sampled"
    for j, question in enumerate(NO_GT):
        sign = signs[len(QUESTIONS) + j]
        rel = _rel(sign)
        (out / rel).write_bytes(sign.data)
        rows.append({"id": f"d{j}", "image": rel, "question": question})
        expected[f"d{j}"] = "sampled"
    (out / "images" / "corrupt.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    rows += [{"id": "bad_image", "image": "images/corrupt.jpg", "question": "What is shown?", "answer_gt": "x"},
             {"id": "missing_image", "image": "images/nowhere.png", "question": "What is shown?"},
             {"id": "no_question", "image": rows[0]["image"], "answer_gt": "1"},
             {"id": "escape", "image": "../../etc/passwd", "question": "What is shown?"}]
    expected.update({"bad_image": "decode_error", "missing_image": "local_file_error", "no_question": "malformed_row",
                     "escape": "local_file_error"})
    lines = [json.dumps(r, ensure_ascii=False) for r in rows]
    lines.insert(3, '{"id": "broken", "image": ')  # a torn line
    expected["row:3"] = "malformed_row"
    path = out / "vqa.jsonl"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    exp_path = out / "vqa-expected.json"
    exp_path.write_text(json.dumps(expected, indent=1, sort_keys=True))
    return {"questions": path, "expected": exp_path}


def check_mmpr(output: str | Path, expected_path: str | Path) -> list[str]:
    """Problems with an MMPR output against the sample's expectations: every row accounted for,
    the bad rows rejected with their reason, every pair well formed, each of its images readable
    where it names it (a member of its shard's tar, by byte range) and an image."""
    import pyarrow.parquet as pq

    import io

    from PIL import Image

    from curation.core.image_refs import read_image_bytes

    out = Path(output)
    expected = json.loads(Path(expected_path).read_text())
    index = json.loads((out / "_index.json").read_text())
    problems = []
    rows = [r for s in index["shards"] for r in pq.read_table(out / s["manifest"]).to_pylist()
            if r["source_file"] == "vqa.jsonl"]  # other inputs beside the sample are checked by their own fixture
    if len(rows) != len(expected):
        problems.append(f"{len(rows)} manifest rows for {len(expected)} input rows")
    by_id = {r["uid"]: r for r in rows}
    for key, outcome in expected.items():
        if key.startswith("row:"):
            row = next((r for r in rows if r["source_row"] == int(key[4:])), None)
        else:
            row = by_id.get(key)
        if row is None:
            problems.append(f"{key}: no manifest row")
        elif outcome != "sampled" and row["reason"] != outcome:
            problems.append(f"{key}: {row['status']} {row['reason']}, expected {outcome}")
        elif outcome == "sampled" and row["stage"] == "read":
            problems.append(f"{key}: rejected at read ({row['reason']}: {row['detail']})")
    pairs = [json.loads(line) for s in index["shards"] for line in (out / f"{s['name']}.jsonl").read_text().splitlines()]
    if len(pairs) != index.get("stats", {}).get("pairs", 0):
        problems.append(f"{len(pairs)} jsonl pairs, the index says {index.get('stats', {}).get('pairs', 0)}")
    for pair in pairs:
        images = pair["image"] if isinstance(pair["image"], list) else [pair["image"]]
        if not pair["chosen"].strip() or not pair["rejected"].strip() or pair["chosen"] == pair["rejected"]:
            problems.append(f"{pair['id']}: chosen / rejected empty or equal")
        for image in images:
            try:
                data = read_image_bytes(str(out / image), lambda path: open(path, "rb"))
            except OSError as err:
                problems.append(f"{pair['id']}: image {image} unreadable ({err})")
                continue
            try:
                Image.open(io.BytesIO(data)).verify()
            except Exception as err:  # noqa: BLE001 - any decoder complaint is the problem reported
                problems.append(f"{pair['id']}: image {image} holds no image ({type(err).__name__})")
    if not pairs:
        problems.append("no preference pairs at all")
    return problems
