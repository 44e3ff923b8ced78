"""The embedded pack sample: conversation and MPO preference jsonl over generated images.

Covers what the pack stage meets: single-image SFT (with and without an `<image>` placeholder),
multi-image, multi-turn, text-only, InternVL 3.5 `pretrain` turns, preference pairs, an over-long
sample to truncate, and one row per failure with the reason we expect for it.
"""

from __future__ import annotations

import io
import json
import posixpath
from pathlib import Path

import pyarrow.parquet as pq

from curation.samples.data import render


def _save(img, path: Path, fmt: str) -> None:
    buf = io.BytesIO()
    img.save(buf, fmt, quality=90) if fmt == "JPEG" else img.save(buf, fmt)
    path.write_bytes(buf.getvalue())


def write_conversations(out_dir: str | Path, seed: int = 0, n_images: int = 12) -> dict[str, Path]:
    """Write images/, conversations.jsonl, preferences.jsonl and expected.json under out_dir."""
    out = Path(out_dir)
    (out / "images").mkdir(parents=True, exist_ok=True)
    captions = []
    for i in range(n_images):
        img, caption = render(seed, i)
        _save(img, out / "images" / f"im{i:03d}.jpg", "JPEG")
        captions.append(caption)
    img, _ = render(seed, n_images)
    _save(img, out / "images" / "plate.png", "PNG")
    (out / "images" / "corrupt.jpg").write_bytes(b"\xff\xd8\xff\xe0 this is not really a JPEG")
    rows: list[tuple[dict | str, str]] = []  # (row or raw line, expected outcome)
    for i in range(n_images):
        img = f"images/im{i:03d}.jpg"
        if i % 3 == 0:
            rows.append(({"id": f"cap{i}", "image": img, "conversations": [
                {"from": "human", "value": "<image>\nDescribe the image briefly."},
                {"from": "gpt", "value": captions[i]}]}, "kept"))
        elif i % 3 == 1:  # no placeholder: InternVL puts the image first in the first human turn
            rows.append(({"id": f"vqa{i}", "image": img, "conversations": [
                {"from": "human", "value": "What shape is in the picture?"},
                {"from": "gpt", "value": captions[i].split(" on ")[0]},
                {"from": "human", "value": "And the background?"},
                {"from": "gpt", "value": captions[i]}]}, "kept"))
        else:
            rows.append(({"id": f"pre{i}", "image": img, "conversations": [
                {"from": "pretrain", "value": f"<image>\n{captions[i]}"}]}, "kept"))
    rows += [
        ({"id": "multi0", "image": ["images/im000.jpg", "images/im001.jpg", "images/plate.png"], "conversations": [
            {"from": "human", "value": "Image-1: <image>\nImage-2: <image>\nImage-3: <image>\nWhich is brightest?"},
            {"from": "gpt", "value": "The second one."}]}, "kept"),
        ({"id": "text0", "conversations": [
            {"from": "human", "value": "Spell 'packing' backwards."}, {"from": "gpt", "value": "gnikcap"}]}, "kept"),
        ({"id": "long0", "image": "images/im002.jpg", "conversations": [
            {"from": "human", "value": "<image>\nTell me a long story."},
            {"from": "gpt", "value": " ".join(["once upon a time there was a tile"] * 1500)}]}, "kept"),
        ({"id": "dup0", "image": "images/im003.jpg", "conversations": [
            {"from": "human", "value": "<image>\nWhat is it?"}, {"from": "gpt", "value": captions[3]}]}, "kept"),
        ({"id": "dup0", "image": "images/im004.jpg", "conversations": [
            {"from": "human", "value": "<image>\nWhat is it?"}, {"from": "gpt", "value": captions[4]}]}, "dup_uid"),
        ('{"id": "broken", "conversations": [', "malformed_row"),
        ({"id": "noturns", "image": "images/im000.jpg", "conversations": []}, "malformed_row"),
        ({"id": "mismatch", "image": ["images/im000.jpg", "images/im001.jpg"], "conversations": [
            {"from": "human", "value": "<image>\nOnly one placeholder for two images."},
            {"from": "gpt", "value": "No."}]}, "placeholder_mismatch"),
        ({"id": "missing", "image": "images/nope.jpg", "conversations": [
            {"from": "human", "value": "<image>\nHi"}, {"from": "gpt", "value": "Hello."}]}, "local_file_error"),
        ({"id": "escape", "image": "../../etc/passwd", "conversations": [
            {"from": "human", "value": "<image>\nHi"}, {"from": "gpt", "value": "Hello."}]}, "local_file_error"),
        ({"id": "corrupt", "image": "images/corrupt.jpg", "conversations": [
            {"from": "human", "value": "<image>\nHi"}, {"from": "gpt", "value": "Hello."}]}, "decode_error"),
        ({"id": "question_only", "conversations": [{"from": "human", "value": "Anyone there?"}]}, "no_supervised_tokens"),
        ({"id": "tiles", "image": [f"images/im{i:03d}.jpg" for i in range(8)], "conversations": [
            {"from": "human", "value": "<image>" * 8 + "\nCount the images."},
            {"from": "gpt", "value": "Eight."}]}, "kept"),
    ]
    prefs = []
    for i in range(4):
        prefs.append(({"id": f"pref{i}", "image": f"images/im{i:03d}.jpg",
                       "question": "<image>\nWhat is shown? Answer with a short phrase.",
                       "chosen": f"Final Answer: {captions[i]}", "rejected": "Final Answer: a dog in a park",
                       "answer_gt": captions[i], "method": "correctness" if i % 2 == 0 else "dropout_ntp"}, "kept"))
    prefs.append(({"id": "pref_bad", "image": "images/im000.jpg", "question": "<image>\nWhat?", "chosen": 3}, "malformed_row"))
    paths = {"conversations": out / "conversations.jsonl", "preferences": out / "preferences.jsonl",
             "expected": out / "expected.json", "images": out / "images"}
    expected: dict[str, str] = {}
    for name, group in (("conversations", rows), ("preferences", prefs)):
        lines = []
        for k, (row, outcome) in enumerate(group):
            lines.append(row if isinstance(row, str) else json.dumps(row, ensure_ascii=False))
            expected[f"{paths[name].name}:{k}"] = outcome
        paths[name].write_text("\n".join(lines) + "\n", encoding="utf-8")
    paths["expected"].write_text(json.dumps(expected, indent=1, sort_keys=True))
    return paths


def check_pack_outcomes(output: str | Path, expected_path: str | Path) -> list[str]:
    """Compare every manifest row of a pack output with the sample's promise; one line per surprise."""
    expected = json.loads(Path(expected_path).read_text())
    problems, seen = [], set()
    for path in sorted(Path(output).glob("*.parquet")):
        if path.name.endswith(".packs.parquet"):
            continue
        for row in pq.read_table(path).to_pylist():
            # source_file is relative to the input root (a meta dataset's: {dataset}/{file}); the
            # sample's promises name files by their own name
            where = f"{posixpath.basename(row['source_file'])}:{row['source_row']}"
            seen.add(where)
            got = "kept" if row["status"] == "kept" else row["reason"]
            if expected.get(where) != got:
                problems.append(f"{where} ({row['uid']}): expected {expected.get(where)}, got {got} ({row['detail']})")
    for where in sorted(set(expected) - seen):
        problems.append(f"{where}: no manifest row")
    return problems
