"""`curate inspect` on pair and packed shards: summary, show, validate (each planted corruption named),
and the HTML report rendered in headless Chromium."""

import base64
import io
import json
import re
import shutil
import subprocess
import tempfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from curation.cli.main import main
from packing.config import PackConfig
from curation.core.config import ShardConfig
from curation.core.shardset import ShardSet
from curation.inspection.summary import summarize
from curation.inspection.validate import validate
from curation.samples.dups import planted_images, write_pair_folder
from curation.core.shards import iter_tar_groups, write_tar

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def pairs(tmp_path_factory):
    return write_pair_folder(tmp_path_factory.mktemp("pairs") / "in", planted_images(12, seed=7), samples_per_shard=10)


@pytest.fixture(scope="module")
def packed(conv_sample, tmp_path_factory):
    from pipelines.pack import run_pack

    out = tmp_path_factory.mktemp("packed") / "out"
    cfg = PackConfig(l_max=8192, t_max=24, progress=False, shards=ShardConfig(prefix="packed", samples_per_shard=12))
    run_pack(cfg, [str(conv_sample["conversations"]), str(conv_sample["preferences"])], str(out))
    return out


def test_summary_counts_and_json(pairs, packed, capsys):
    doc = summarize(ShardSet.open(str(pairs)))
    index = json.loads((pairs / "_index.json").read_text())
    assert doc["kind"] == "pair" and doc["kept"] == index["totals"]["kept"] and doc["accounting_ok"]
    assert doc["distributions"]["caption_chars"]["count"] == doc["kept"]
    assert sum(doc["distributions"]["image_width"]["hist"]["counts"]) == doc["kept"]
    assert main(["inspect", "summary", str(packed), "--json"]) == 0
    pdoc = json.loads(capsys.readouterr().out)
    pindex = json.loads((packed / "_index.json").read_text())
    assert pdoc["kind"] == "packed" and pdoc["packs"] == pindex["stats"]["packs"]
    # the stage's own count of the rows it read, beside the index totals
    assert pdoc["rows_read"] == pindex["rows"]["rows_read"] == pindex["totals"]["inputs"] and pdoc["accounting_ok"]
    assert doc["rows_read"] is None  # a folder written outside a stage (write_pair_folder) has no such count
    assert pdoc["rejected_by_stage"] and sum(n for r in pdoc["rejected_by_stage"].values() for n in r.values()) == \
        pindex["totals"]["rejected"]
    assert 0 < pdoc["mean_token_fill"] <= 1 and pdoc["truncated"] == pindex["stats"]["truncated"]
    assert main(["inspect", "summary", str(pairs)]) == 0 and "accounting" in capsys.readouterr().out
    assert main(["inspect", "summary", str(packed)]) == 0
    assert re.search(rf"rows the stage read\s*│\s*{pindex['rows']['rows_read']}\s*│", capsys.readouterr().out)


def test_show_pair_and_pack(pairs, packed, tmp_path, capsys):
    uid = next(iter_tar_groups(str(sorted(pairs.glob("*.tar"))[0])))[0]
    assert main(["inspect", "show", str(pairs), "--id", uid, "--save-images", str(tmp_path / "img")]) == 0
    out = capsys.readouterr().out
    assert f"uid: {uid}" in out and "phash" in out and (tmp_path / "img" / f"{uid}.jpg").exists()
    assert main(["inspect", "show", str(packed), "--index", "0"]) == 0
    out = capsys.readouterr().out
    assert re.search(r"<img>\[256 x \d+ tiles\]</img>", out) and "<IMG_CONTEXT>" not in out
    assert "⟦" in out and "<|im_start|>assistant\n⟦" in out  # supervised text marked, the header is not
    assert main(["inspect", "show", str(packed), "--id", "pref0"]) == 0
    out = capsys.readouterr().out
    assert "[chosen/" in out and "[rejected/" in out
    assert main(["inspect", "show", str(pairs), "--id", "nope"]) == 2


def _copy(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


def _rewrite_pack(folder: Path, change) -> None:
    """Apply `change(meta, ids, labels)` to the first pack of the first shard and rewrite its tar."""
    tar = sorted(folder.glob("*.tar"))[0]
    groups = list(iter_tar_groups(str(tar)))
    key, group = groups[0]
    meta = json.loads(group["json"])
    ids = np.load(io.BytesIO(group["input_ids.npy"]))
    labels = np.load(io.BytesIO(group["labels.npy"]))
    change(meta, ids, labels)
    group["json"] = json.dumps(meta).encode()
    for name, arr in (("input_ids.npy", ids), ("labels.npy", labels)):
        buf = io.BytesIO()
        np.save(buf, arr)
        group[name] = buf.getvalue()
    with open(tar, "wb") as f:
        write_tar(f, [(f"{k}.{s}", d) for k, g in groups for s, d in g.items()])


def test_validate_names_each_planted_corruption(pairs, packed, tmp_path):
    assert validate(ShardSet.open(str(pairs))) == [] and validate(ShardSet.open(str(packed))) == []

    bad = _copy(pairs, tmp_path / "truncated")
    tar = sorted(bad.glob("*.tar"))[0]
    tar.write_bytes(tar.read_bytes()[:3000])
    assert any(tar.name in p and ("unreadable tar" in p or "sha256" in p) for p in validate(ShardSet.open(str(bad))))

    bad = _copy(pairs, tmp_path / "count")
    index = json.loads((bad / "_index.json").read_text())
    index["shards"][0]["count"] += 1
    (bad / "_index.json").write_text(json.dumps(index))
    assert any("lists count" in p for p in validate(ShardSet.open(str(bad))))

    bad = _copy(packed, tmp_path / "overrun")
    _rewrite_pack(bad, lambda meta, ids, labels: meta.update(l_max=meta["tokens"] - 1))
    assert any("overrun l_max" in p for p in validate(ShardSet.open(str(bad))))

    def drop_context_token(meta, ids, labels):
        a, b, _ = next(s for seg in meta["segments"] for s in seg["image_spans"])
        ids[a + 5] = ids[a]  # one <IMG_CONTEXT> replaced by <img>
    bad = _copy(packed, tmp_path / "tokens")
    _rewrite_pack(bad, drop_context_token)
    assert any("context tokens in its <img> span" in p for p in validate(ShardSet.open(str(bad))))

    bad = _copy(packed, tmp_path / "split")
    shard_of_pref = None
    for tar in sorted(bad.glob("*.tar")):
        for key, group in iter_tar_groups(str(tar)):
            if any(s["role"] == "rejected" for s in json.loads(group["json"])["segments"]):
                shard_of_pref = tar
                break
        if shard_of_pref:
            break
    groups = list(iter_tar_groups(str(shard_of_pref)))
    for key, group in groups:
        meta = json.loads(group["json"])
        if any(s["role"] == "rejected" for s in meta["segments"]):
            next(s for s in meta["segments"] if s["role"] == "rejected")["role"] = "sft"
            group["json"] = json.dumps(meta).encode()
            break
    with open(shard_of_pref, "wb") as f:
        write_tar(f, [(f"{k}.{s}", d) for k, g in groups for s, d in g.items()])
    assert any("preference pair" in p and "split" in p for p in validate(ShardSet.open(str(bad))))
    assert main(["inspect", "validate", str(bad)]) == 1


def test_member_names_that_escape_are_refused(pairs, tmp_path, capsys):
    bad = _copy(pairs, tmp_path / "escape")
    tar = sorted(bad.glob("*.tar"))[0]
    groups = list(iter_tar_groups(str(tar)))
    with open(tar, "wb") as f:
        write_tar(f, [("../evil.jpg", b"x")] + [(f"{k}.{s}", d) for k, g in groups for s, d in g.items()])
    problems = validate(ShardSet.open(str(bad)))
    assert any("../evil.jpg" in p and "refused" in p for p in problems)
    assert not (tmp_path / "evil.jpg").exists()


def test_report_renders_in_headless_chromium(pairs, packed, tmp_path):
    chromium = shutil.which("chromium")
    assert chromium, "Debian's chromium is needed for the report test (.ci/run installs it)"
    for name, folder in (("pairs", pairs), ("packed", packed)):
        html_path = tmp_path / f"{name}.html"
        assert main(["inspect", "report", str(folder), "-o", str(html_path)]) == 0
        flags = [chromium, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 f"--user-data-dir={tempfile.mkdtemp()}"]
        dom = subprocess.run(flags + ["--dump-dom", html_path.as_uri()], capture_output=True, text=True, timeout=120).stdout
        assert "id=\"summary\"" in dom and "accounting" in dom
        uris = re.findall(r'src="data:image/png;base64,([^"]+)"', dom)
        plots = dom.count('class="plot"')
        thumbs = dom.count('class="thumb"')
        assert plots >= 4 and thumbs >= 5 and len(uris) == plots + thumbs
        for data in uris:  # every embedded image decodes
            Image.open(io.BytesIO(base64.b64decode(data))).verify()
        shot = tmp_path / f"{name}.png"
        subprocess.run(flags + ["--window-size=1000,1400", f"--screenshot={shot}", html_path.as_uri()],
                       capture_output=True, timeout=120)
        pixels = np.asarray(Image.open(shot).convert("L"), dtype=np.float64)
        assert pixels.shape == (1400, 1000) and pixels.std() > 10  # a rendered page, not a blank one
