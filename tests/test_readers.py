"""Conversation files as users have them, read by `curate pack`: LLaVA-Instruct's JSON array (one
`.json` array of InternVL / LLaVA rows), LLaMA-Factory's `messages` + `images` rows, OpenAI content
parts (images as paths or data URIs) and Hugging Face parquet in LLaVA-OneVision-Data's layout
(`id`, `image` struct {bytes, path}, `conversations` list of {from, value}). Fixtures are written
here in those layouts; images are rendered PNGs."""

from __future__ import annotations

import base64
import io
import json
import subprocess
import sys
import tarfile

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from curation.core.conversations import Conversation, Turn, read_conversations
from curation.core.records import Rejection


def _png(color, size=(64, 48)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, color).save(buf, "PNG")
    return buf.getvalue()


def read(data: bytes, name: str):
    return list(read_conversations(io.BytesIO(data), name))


LLAVA = [
    {"id": "000000033471", "image": "coco/train2017/000000033471.jpg", "conversations": [
        {"from": "human", "value": "What are the colors of the bus in the image?\n<image>"},
        {"from": "gpt", "value": "The bus in the image is white and red."}]},
    {"id": "000000052846", "image": "coco/train2017/000000052846.jpg", "conversations": [
        {"from": "human", "value": "<image>\nWhat is the cat doing?"}, {"from": "gpt", "value": "Sleeping."}]},
    {"id": "text_only", "conversations": [{"from": "human", "value": "Hi"}, {"from": "gpt", "value": "Hello!"}]},
]


def test_json_array_rows_stream_like_jsonl():
    out = read(json.dumps(LLAVA, indent=2).encode(), "llava_instruct_150k.json")
    assert [type(r) for r in out] == [Conversation] * 3
    assert out[0].images == ["coco/train2017/000000033471.jpg"] and out[0].turns[0].value.endswith("<image>")
    assert out[2].images == [] and [r.source_row for r in out] == [0, 1, 2]
    # a .json file that is really jsonl still reads; a non-object element is that row's rejection
    lines = "\n".join(json.dumps(r) for r in LLAVA).encode()
    assert [r.uid for r in read(lines, "x.json")] == [r.uid for r in out]
    mixed = read(json.dumps([LLAVA[0], 7, LLAVA[1]]).encode(), "mixed.json")
    assert isinstance(mixed[1], Rejection) and mixed[1].reason == "malformed_row" and "int" in mixed[1].detail
    # a torn array: the rows before the tear, then one unreadable_file
    torn = read(json.dumps(LLAVA).encode()[:-40], "torn.json")
    assert [type(r) for r in torn[:2]] == [Conversation] * 2 and torn[-1].reason == "unreadable_file"


def test_messages_rows_and_content_parts():
    factory = {"messages": [{"role": "user", "content": "<image>Who are they?"},
                            {"role": "assistant", "content": "They're Kane and Gretzka from Bayern Munich."},
                            {"role": "user", "content": "What are they doing?<image>"},
                            {"role": "assistant", "content": "They are celebrating on the soccer field."}],
               "images": ["mllm_demo_data/1.jpg", "mllm_demo_data/1a.jpg"]}
    img = _png("red")
    parts = {"id": "oa1", "messages": [
        {"role": "system", "content": "You are helpful."},
        {"role": "user", "content": [{"type": "image_url", "image_url": {"url": "data:image/png;base64," + base64.b64encode(img).decode()}},
                                     {"type": "text", "text": "What colour is this?"}]},
        {"role": "assistant", "content": [{"type": "text", "text": "Red."}]}]}
    by_path = {"id": "oa2", "messages": [{"role": "user", "content": [{"type": "image", "image": "pics/a.png"},
                                                                      {"type": "text", "text": "Describe."}]},
                                         {"role": "assistant", "content": "A square."}]}
    unknown = {"id": "u", "prompt": "p", "response": "r"}
    lines = "\n".join(json.dumps(r) for r in (factory, parts, by_path, unknown)).encode()
    out = read(lines, "mllm_demo.jsonl")
    f, p, b, u = out
    assert f.images == factory["images"] and f.turns[0] == Turn("user", "<image>Who are they?")
    assert [t.role for t in f.turns] == ["user", "assistant", "user", "assistant"]
    assert p.turns[0] == Turn("system", "You are helpful.") and p.turns[1].value == "<image>\nWhat colour is this?"
    assert p.images == ["embedded:0"] and p.embedded == [img]
    assert b.images == ["pics/a.png"] and b.embedded == [None] and b.turns[1] == Turn("assistant", "A square.")
    assert isinstance(u, Rejection) and "keys: id, prompt, response" in u.detail


def _onevision(path, images):
    schema = pa.schema([("id", pa.string()), ("image", pa.struct([("bytes", pa.binary()), ("path", pa.string())])),
                        ("conversations", pa.list_(pa.struct([("from", pa.string()), ("value", pa.string())]))),
                        ("data_source", pa.string())])
    rows = [{"id": f"ov{k}", "image": {"bytes": data, "path": f"{k}.png"} if data else None,
             "conversations": [{"from": "human", "value": "<image>\nWhat colour is the picture?"},
                               {"from": "gpt", "value": f"It is colour number {k}."}], "data_source": "synthetic"}
            for k, data in enumerate(images)]
    rows[-1]["conversations"][0]["value"] = "Say hi."  # a text-only row (no image)
    pq.write_table(pa.Table.from_pylist(rows, schema=schema), path, row_group_size=2)


@pytest.mark.slow
def test_pack_reads_hf_parquet_with_image_bytes_and_fails_unreadable_files(tmp_path):
    images = [_png(c) for c in ("red", "green", "blue")] + [b""]
    _onevision(tmp_path / "train-00000-of-00001.parquet", images)
    (tmp_path / "notes.json").write_text(json.dumps([{"url": "http://x/1.jpg", "caption": "c"}] * 3))
    out = tmp_path / "packed"
    cmd = [sys.executable, "-m", "curation.cli", "pack", "--config", "configs/pack.yaml", "--no-progress",
           "--input", str(tmp_path / "train-00000-of-00001.parquet"), "--output", str(out)]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    index = json.loads((out / "_index.json").read_text())
    assert index["totals"]["kept"] == 4
    packed = set()
    for shard in index["shards"]:
        with tarfile.open(out / shard["tar"]) as tar:
            packed |= {tar.extractfile(m).read() for m in tar.getmembers() if m.name.endswith(".png")}
    assert packed == set(images[:3])  # each image's bytes, staged once and packed as they were
    # a file with no row the reader can use: the command says so and exits 1
    bad = subprocess.run(cmd[:-4] + ["--input", str(tmp_path / "notes.json"), "--output", str(tmp_path / "bad")],
                         capture_output=True, text=True, timeout=600)
    assert bad.returncode == 1 and "notes.json: none of its 3 rows could be read" in bad.stderr
    assert "keys: caption, url" in bad.stderr
