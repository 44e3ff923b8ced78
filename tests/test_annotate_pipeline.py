"""The annotate pipeline on DirectRunner over a real ingest output, with the real OCR engine and
the real offline LLM: every input row accounted for, annotations in each kept `{uid}.json`,
conversations that `curate pack` accepts, deterministic output, and a finished job not rerun."""

from __future__ import annotations

import hashlib
import json
import shutil
import tempfile
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from curation.annotate.config import AnnotateConfig
from curation.core.config import load_config
from curation.samples.text_images import text_images
from curation.core.shards import iter_tar_groups
from tests.conftest import CONFIGS, local_config

pytestmark = pytest.mark.slow


CALIBRATION_CACHE = tempfile.mkdtemp(prefix="curate-test-calibration-")


def _cfg(**over) -> AnnotateConfig:
    # The production recipe with InternVL's quality threshold pinned at 7: the offline 135M rater does
    # not separate clean from degraded probes (AUC 0.68 on this 24-probe subset) and would reject every
    # clean probe at 7, so its quality score rejects nothing (its repetition threshold is the ROC's).
    base = {"shards": {"samples_per_shard": 40}, "progress": False, "llm": {"batch_size": 16},
            "quality": {"threshold": 7, "calibration": {"probes": 24, "cache_dir": CALIBRATION_CACHE}}}
    from curation.core.config import deep_merge

    return load_config(CONFIGS / "annotate.yaml", AnnotateConfig, deep_merge(base, over))


@pytest.fixture(scope="module")
def ingested(sample, tmp_path_factory) -> Path:
    from pipelines.ingest import run_ingest

    out = tmp_path_factory.mktemp("ingest") / "laion"
    run_ingest(local_config(), [str(sample["laion"])], str(out))
    return out


def text_pair_folder(folder: Path) -> Path:
    """A pair-shard folder of rendered-text images (a sign, a page) and hostile members, written by
    the real shard writer, so OCR tasks and OCR errors both occur."""
    from curation.core.records import ImageInfo, Pair, Sample
    from curation.core.shards import build_index, write_pair_shard

    folder.mkdir(parents=True)
    samples = []
    for i, im in enumerate(text_images(4, seed=7)):
        pair = Pair(uid=f"text{i}", url=f"http://example.org/t{i}.png", caption=f"A sign that reads {im.lines[0]}.",
                    source="test", source_file="extra.jsonl", source_row=i)
        samples.append(Sample(pair, ImageInfo(im.data, "jpg", 10, 10, 10, 10, "PNG", "0" * 64, "0" * 16)))
    broken = Pair(uid="broken", url="http://example.org/b.jpg", caption="A photo of a broken file on a desk.",
                  source="test", source_file="extra.jsonl", source_row=9)
    samples.append(Sample(broken, ImageInfo(b"\xff\xd8\xff\xe0 truncated", "jpg", 10, 10, 10, 10, "JPEG", "1" * 64, "0" * 16)))
    from curation.samples.text_images import font_files, render

    cyrillic = render(["ГОРОДСКАЯ БИБЛИОТЕКА"], font_files()[0], 40, 0.0, False, 11)  # DejaVu has Cyrillic
    sign = Pair(uid="cyr0", url="http://example.org/c.png", caption="Вывеска городской библиотеки в центре города.",
                source="test", source_file="extra.jsonl", source_row=11)
    samples.append(Sample(sign, ImageInfo(cyrillic, "png", 10, 10, 10, 10, "PNG", "2" * 64, "0" * 16)))
    repetitive = Pair(uid="rep", url="http://example.org/r.jpg", caption="cheap shoes " * 12,
                      source="test", source_file="extra.jsonl", source_row=10)
    samples.append(Sample(repetitive, samples[0].image))
    with open(folder / "extra-00000-of-00001.tar", "wb") as t, open(folder / "extra-00000-of-00001.parquet", "wb") as m:
        report = write_pair_shard(0, "extra-00000-of-00001", samples, t, m)
    (folder / "_index.json").write_text(json.dumps(build_index([report], kind="pairs", prefix="extra", num_shards=1,
                                                               fingerprint="test")))
    return folder


@pytest.fixture(scope="module")
def with_text_images(ingested, tmp_path_factory) -> Path:
    """Beside the ingest output: the text-image pair folder."""
    return text_pair_folder(tmp_path_factory.mktemp("extra") / "pairs")


@pytest.fixture(scope="module")
def annotated(ingested, with_text_images, tmp_path_factory):
    from pipelines.annotate import run_annotate

    out = tmp_path_factory.mktemp("annotate") / "out"
    index = run_annotate(_cfg(), [str(ingested), str(with_text_images)], str(out))
    return out, index


def _manifest(folder: Path) -> list[dict]:
    return [row for p in sorted(folder.glob("*.parquet")) for row in pq.read_table(p).to_pylist()]


def test_every_input_row_is_accounted_for(ingested, with_text_images, annotated):
    out, index = annotated
    inputs = sum(json.loads((f / "_index.json").read_text())["totals"]["inputs"] for f in (ingested, with_text_images))
    rows = _manifest(out)
    assert len(rows) == inputs == index["totals"]["inputs"]
    assert index["rows"] == {"rows_read": inputs, "rows_assigned": inputs, "rows_written": inputs}  # checked in-stage
    assert index["totals"]["inputs"] == index["totals"]["kept"] + sum(index["reasons"].values())
    by_uid = {r["uid"]: r for r in rows}
    assert by_uid["broken"]["reason"] in ("truncated_image", "decode_error") and by_uid["broken"]["stage"] == "annotate"
    assert by_uid["rep"]["reason"] == "repetitive_ngrams"
    upstream = json.loads((ingested / "_index.json").read_text())["reasons"]
    for reason, n in upstream.items():  # ingest's rejections carried through untouched
        assert index["reasons"][reason] >= n
    assert index["_metrics"]["inputs"] == inputs


def test_the_offline_rater_may_not_reject_and_its_calibration_is_in_the_index(annotated):
    out, index = annotated
    gates = index["calibration"]["gates"]
    assert index["calibration"]["model"] == "builtin:smollm2" and index["calibration"]["probes"] == 24
    assert not gates["quality"]["enforced"] and gates["quality"]["clean_reject"] > 0.05
    assert "low_quality_score" not in index["reasons"] and "llm_unparseable" not in index["reasons"]
    if not gates["repetition"]["enforced"]:
        assert "repetitive_text" not in index["reasons"]
    metas = [json.loads(g["json"]) for s in index["shards"] for _, g in iter_tar_groups(str(out / s["tar"]))]
    below = [m for m in metas if m["quality"]["score"] < 7]
    assert below and all(any(u.startswith("low_quality_score") for u in m["quality"]["unenforced"]) for m in below)


def test_kept_samples_carry_ocr_scores_and_a_conversation(annotated):
    out, index = annotated
    kept = {}
    for shard in index["shards"]:
        kept.update(dict(iter_tar_groups(str(out / shard["tar"]))))
    assert kept and len(kept) == index["totals"]["kept"]
    for uid, group in kept.items():
        meta = json.loads(group["json"])
        assert meta["ocr"]["engine"] in ("paddleocr", "tesseract:rus+ukr+eng") and "text_area_fraction" in meta["ocr"]
        assert meta["language"]["caption"]["lang"] and 0 < meta["language"]["caption"]["confidence"] <= 1
        assert 0 <= meta["quality"]["score"] <= 9 and meta["quality"]["raw"]["score"]["backend"] == "transformers"
        dist = meta["quality"]["distributions"]["score"]
        assert dist["mean"] == meta["quality"]["score"] and dist["entropy"] > 0 and dist["mass"] > 0
        assert meta["conversation"]["id"] == uid
    signs = [json.loads(g["json"]) for u, g in kept.items() if u.startswith("text")]
    assert len(signs) == 4 and all(m["language"]["caption"]["lang"] == "en" for m in signs)
    assert all(m["ocr"]["engine"] == "paddleocr" and m["language"]["ocr"]["lang"] for m in signs)
    russian = json.loads(kept["cyr0"]["json"])
    assert russian["language"]["caption"]["lang"] == "ru"
    if shutil.which("tesseract"):  # .ci/run installs Debian's tesseract-ocr with its Russian pack
        from curation.samples.text_images import char_similarity

        assert russian["ocr"]["engine"] == "tesseract:rus+ukr+eng"
        read = " ".join(line["text"] for line in russian["ocr"]["lines"])
        assert char_similarity("ГОРОДСКАЯ БИБЛИОТЕКА", read) > 0.8, read
    for meta in signs:  # the rendered text was read
        assert meta["caption"].removeprefix("A sign that reads ").rstrip(".").upper() in " ".join(
            line["text"] for line in meta["ocr"]["lines"]).upper()


def test_conversations_pack(annotated, tmp_path):
    from packing.config import PackConfig
    from pipelines.pack import run_pack

    from curation.core.image_refs import parse_member_ref, read_image_bytes

    out, index = annotated
    jsonl = sorted(out.glob("*.conversations.jsonl"))
    rows = [json.loads(line) for p in jsonl for line in p.read_text().splitlines()]
    assert len(rows) == index["totals"]["kept"] == index["stats"]["conversations"]
    assert not (out / "images").exists()  # every image is stored once: inside its shard's tar
    members = {uid: group for s in index["shards"] for uid, group in iter_tar_groups(str(out / s["tar"]))}
    for row in rows:
        ref = parse_member_ref(row["image"])
        assert ref is not None and ref.member.startswith(row["id"] + ".")
        data = read_image_bytes(str(out / row["image"]), lambda p: open(p, "rb"))
        assert data == members[row["id"]][ref.member.rsplit(".", 1)[1]] and data[:2] in (b"\xff\xd8", b"\x89P", b"RI")
        assert row["conversations"][0]["value"].startswith("<image>\n")
    packed = run_pack(load_config(CONFIGS / "pack.yaml", PackConfig, {"progress": False}), [str(p) for p in jsonl],
                      str(tmp_path / "packed"))
    assert packed["totals"]["kept"] == len(rows) and packed["totals"]["inputs"] == len(rows)


def test_the_internvl_export_is_the_loose_file_layout(annotated, tmp_path):
    """`curate export internvl`: the same rows with `image` a relative file path, and the files
    hold the tar members' bytes - what InternVL's reader opens as `os.path.join(root, image)`."""
    from curation.cli.main import main
    from curation.core.image_refs import read_image_bytes

    out, index = annotated
    target = tmp_path / "internvl"
    assert main(["export", "internvl", "--input", str(out), "--output", str(target)]) == 0
    for src in sorted(out.glob("*.conversations.jsonl")):
        ours = [json.loads(line) for line in src.read_text().splitlines()]
        theirs = [json.loads(line) for line in (target / src.name).read_text().splitlines()]
        assert [{**r, "image": None} for r in ours] == [{**r, "image": None} for r in theirs]
        for a, b in zip(ours, theirs):
            assert b["image"] == f"images/{src.name.split('.')[0]}/{a['id']}.{b['image'].rsplit('.', 1)[1]}"
            assert (target / b["image"]).read_bytes() == read_image_bytes(str(out / a["image"]), lambda p: open(p, "rb"))
    assert sum(1 for _ in (target / "images").rglob("*.*")) == index["stats"]["conversations"]


def test_rerun_of_a_finished_job_writes_nothing(ingested, with_text_images, annotated):
    from pipelines.annotate import run_annotate

    out, index = annotated
    before = {p: p.stat().st_mtime_ns for p in out.rglob("*") if p.is_file()}
    again = run_annotate(_cfg(), [str(ingested), str(with_text_images)], str(out))
    assert again["totals"] == index["totals"]
    assert {p: p.stat().st_mtime_ns for p in out.rglob("*") if p.is_file()} == before


def test_a_resumed_job_runs_the_models_only_for_unfinished_shards(ingested, with_text_images, annotated, tmp_path):
    import shutil

    from pipelines.annotate import run_annotate

    out, index = annotated
    full = index["_metrics"]
    assert full["ocr_images"] > 0 and full["llm_samples"] > 0
    partial = tmp_path / "partial"
    shutil.copytree(out, partial)
    (partial / "_index.json").unlink()
    lost = index["shards"][0]
    (partial / "_progress" / f"{lost['name']}.json").unlink()  # as if killed before this shard was written
    again = run_annotate(_cfg(), [str(ingested), str(with_text_images)], str(partial))
    assert again["totals"] == index["totals"]
    assert 0 < again["_metrics"]["ocr_images"] < full["ocr_images"]  # the lost shard's rows, not the finished ones
    assert again["_metrics"]["llm_samples"] < full["llm_samples"]
    assert (partial / lost["tar"]).read_bytes() == (out / lost["tar"]).read_bytes()


def test_output_does_not_depend_on_batching(ingested, with_text_images, annotated, tmp_path):
    """Other OCR and LLM batch sizes (so other batch boundaries and padding): the same bytes."""
    from pipelines.annotate import run_annotate

    out, index = annotated
    other = tmp_path / "rebatched"
    again = run_annotate(_cfg(ocr={"batch_size": 3}, llm={"batch_size": 5}), [str(ingested), str(with_text_images)],
                         str(other))

    def digest(folder: Path) -> dict[str, str]:
        return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
                for p in folder.rglob("*") if p.is_file() and "_progress" not in p.parts
                and p.name not in ("_job.json", "_index.json")}

    a, b = digest(out), digest(other)
    assert a == b, sorted(k for k in set(a) | set(b) if a.get(k) != b.get(k))
    assert again["shards"] == index["shards"]


def test_rapidocr_engine_and_no_llm(ingested, tmp_path):
    from pipelines.annotate import run_annotate

    index = run_annotate(_cfg(ocr={"engine": "rapidocr"}, quality={"enabled": False}), [str(ingested)],
                         str(tmp_path / "o"))
    assert index["totals"]["inputs"] == index["totals"]["kept"] + sum(index["reasons"].values())
    tar = next((tmp_path / "o").glob("*.tar"))
    metas = [json.loads(g["json"]) for _, g in iter_tar_groups(str(tar))]
    assert metas and all(m["ocr"]["engine"] == "rapidocr" and "quality" not in m for m in metas)


def test_inspect_shows_and_validates_annotations(annotated, capsys):
    from curation.cli.main import main

    out, index = annotated
    uid = next(u for s in index["shards"] for u, _ in iter_tar_groups(str(out / s["tar"])) if u.startswith("text"))
    assert main(["inspect", "show", str(out), "--id", uid]) == 0
    shown = capsys.readouterr().out
    assert "ocr (paddleocr):" in shown and "confidence" in shown and "quality: domain" in shown
    assert "conversation (" in shown and ("human: '<image>" in shown or "pretrain: '<image>" in shown)
    assert main(["inspect", "validate", str(out)]) == 0
    assert ": OK" in capsys.readouterr().out
    assert main(["inspect", "summary", str(out), "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["accounting_ok"] and summary["stats"]["conversations"] == summary["kept"]
    assert summary["rejected_by_stage"]["annotate"]["repetitive_ngrams"] == 1
    assert summary["calibration"]["gates"] == index["calibration"]["gates"]
    assert main(["inspect", "summary", str(out)]) == 0
    text = capsys.readouterr().out
    assert "conversations" in text and "rater calibration" in text and "NOT enforced" in text
    assert main(["inspect", "report", str(out), "-o", str(out.parent / "report.html")]) == 0
    page = (out.parent / "report.html").read_text()
    assert "id='calibration'" in page and "ROC-AUC" in page and "NOT enforced" in page
    assert "id='unenforced'" in page and "<td>low_quality_score</td>" in page


def test_probes_scored_on_the_workers_give_the_launchers_calibration(ingested, tmp_path):
    """`calibration.run_on: workers` (the default): the probes go through the job's own LLM step
    beside the rows, and the gates, the index and every row's verdict are those of the probes
    scored on the launcher before the job."""
    from curation.annotate.calibration import calibrate, calibration_key
    from pipelines.annotate import run_annotate
    from tests.conftest import output_files

    def cfg(cache: str, run_on: str) -> AnnotateConfig:
        return _cfg(ocr={"enabled": False}, quality={"calibration": {"cache_dir": str(tmp_path / cache), "run_on": run_on}})

    on_workers = run_annotate(cfg("workers", "workers"), [str(ingested)], str(tmp_path / "a"))
    assert on_workers["_metrics"]["llm_probes"] == 24 and on_workers["_metrics"]["llm_samples"] > 0
    assert (tmp_path / "workers" / f"{calibration_key(cfg('workers', 'workers'))}.json").is_file()  # cached where it ran
    assert calibrate(cfg("launcher", "launcher")) == on_workers["calibration"]
    on_launcher = run_annotate(cfg("launcher", "launcher"), [str(ingested)], str(tmp_path / "b"))
    assert "llm_probes" not in on_launcher["_metrics"]  # read from the launcher's cache: no probe in the job
    got, want = output_files(tmp_path / "a"), output_files(tmp_path / "b")
    assert json.loads(got.pop("_index.json"))["reasons"] == json.loads(want.pop("_index.json"))["reasons"]
    assert got == want
    # the scores the rows were judged by stay in the job's state, so a resume judges by the same gates
    from pipelines.annotate_calibration import saved_figures

    cached = json.loads((tmp_path / "workers" / f"{calibration_key(cfg('workers', 'workers'))}.json").read_text())
    assert saved_figures(str(tmp_path / "a"), cfg("x", "workers")) == cached
    assert saved_figures(str(tmp_path / "b"), cfg("x", "workers")) == cached
    # where the probes are scored is not part of the job: the finished job is found, not a conflict
    again = run_annotate(cfg("elsewhere", "launcher"), [str(ingested)], str(tmp_path / "a"))
    assert again["totals"] == on_workers["totals"] and not (tmp_path / "elsewhere").exists()


def test_model_steps_carry_the_accelerator_hint_and_nothing_else_does():
    """On Dataflow only the OCR and LLM steps should ask for GPU workers."""
    import apache_beam as beam

    from pipelines.annotate import build_annotate

    gpu = "type:nvidia-l4;count:1;install-nvidia-driver"
    cfg = _cfg(ocr={"accelerator": gpu}, llm={"accelerator": gpu})
    p = beam.Pipeline()
    from pipelines.sharded_output import DoneShards
    from pipelines.sharded_input import ReadInputShards

    build_annotate(p, cfg, ReadInputShards(["in"], 1, "annotate", [1]), 1, "/nonexistent", "fp",
                   p | DoneShards("/nonexistent", "fp"), ["s"])
    proto = p.to_runner_api()
    hinted = set()
    for tid, t in proto.components.transforms.items():
        env = proto.components.environments.get(t.environment_id)
        if env is not None and any(gpu.encode() in v for v in env.resource_hints.values()):
            hinted.add(t.unique_name.split("/")[0])
    assert hinted == {"Ocr", "QualityScore"}


@pytest.mark.parametrize("share", [False, True])
def test_models_shared_across_sdk_processes_load_once(with_text_images, annotated, tmp_path, monkeypatch, share):
    """DirectRunner multi_processing with 2 SDK processes: each loads its own OCR engine, unless
    `ocr.share_across_processes` serves one engine to both (Beam's multi_process_shared), as on a
    Dataflow GPU VM; the output is the same bytes either way."""
    from pipelines.annotate import run_annotate

    loads = tmp_path / "loads"
    monkeypatch.setenv("CURATE_MODEL_LOAD_DIR", str(loads))  # the SDK processes inherit it
    out = tmp_path / "out"
    cfg = _cfg(ocr={"share_across_processes": share, "batch_size": 2}, quality={"enabled": False})
    index = run_annotate(cfg, [str(with_text_images)], str(out),
                         ["--direct_running_mode=multi_processing", "--direct_num_workers=2"])
    assert index["totals"]["inputs"] == index["totals"]["kept"] + sum(index["reasons"].values())
    copies = len(list(loads.glob("ocr-*")))
    assert copies == 1 if share else copies >= 1, sorted(p.name for p in loads.iterdir())
    assert index["totals"]["kept"] > 0
