"""Benchmark decontamination: an index built from benchmarks' own files with `curate mmpr`'s
readers (MMPR jsonl with image files, ScienceQA / A-OKVQA parquet with embedded images, written by
curation.samples.vqa_formats), then the rows it rejects `eval_contaminated` in annotate (captions
and images) and mmpr (questions, options, answers and images), named with the eval file and what
matched. Real photos are scikit-image's."""

from __future__ import annotations

import io
import json

import pytest
import skimage.data
from PIL import Image

from curation.core.config import ConfigError
from curation.core.images import phash
from curation.mmpr.eval_sets import build_eval_index
from filters.quality.decontam import DecontamConfig

LONG = "In the photograph taken at the harbour, how many red fishing boats are tied to the wooden pier?"
SHORT = "Which animal is sleeping on the blue sofa today?"  # 9 words: matched whole


def photo(name: str) -> Image.Image:
    return Image.fromarray(getattr(skimage.data, name)()).convert("RGB")


@pytest.fixture(scope="module")
def evals(tmp_path_factory):
    from curation.samples.vqa_formats import write_vqa_formats

    root = tmp_path_factory.mktemp("evals")
    (root / "images").mkdir()
    photo("astronaut").save(root / "images" / "astronaut.png")
    rows = [{"id": "e1", "image": "images/astronaut.png", "question": LONG, "answer_gt": "3"},
            {"id": "e2", "image": "images/astronaut.png", "question": SHORT, "answer_gt": "a cat"},
            {"id": "e3", "question": "What is this?", "answer_gt": "a dog"},  # too short to guard anything
            {"id": "e4", "question": ""}]  # unusable: no question
    (root / "bench.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    formats = write_vqa_formats(root / "formats")
    return root, formats


def test_the_index_reads_benchmark_files_and_matches_long_ngrams_and_whole_short_questions(evals):
    root, formats = evals
    cfg = DecontamConfig(eval_sets=[str(root / "bench.jsonl"), str(formats["aokvqa.parquet"])])
    index = build_eval_index(cfg)
    counts = index.summary()["eval_sets"]
    assert counts[str(root / "bench.jsonl")] == {"rows": 4, "texts": 6, "images": 2, "unusable": 0}  # 3 x (question, answer)
    aok = counts[str(formats["aokvqa.parquet"])]
    assert aok["rows"] == 2 and aok["images"] == 2 and aok["texts"] == 30  # question, 4 choices, 10 answers; embedded images
    # 13 words of the long question, in other case and punctuation, inside a caption
    caption = "Stock photo: In the photograph TAKEN at the harbour - how many red fishing boats are tied, today"
    assert index.text_hit(caption).endswith(f'of {root / "bench.jsonl"}') and index.text_hit(caption).startswith('13-gram "in the photograph')
    assert index.text_hit("In the photograph taken at the harbour how many red fishing boats do you see") is None  # 12
    assert index.text_hit(f"Q: {SHORT.upper()}") and index.text_hit(SHORT.replace("blue", "green")) is None
    assert index.text_hit("What is this? A dog.") is None  # a 3-word eval question guards nothing
    with pytest.raises(ConfigError):
        DecontamConfig(eval_sets=["x"], ngram=13, min_words=20)
    with pytest.raises(FileNotFoundError, match="nothing matches"):
        build_eval_index(DecontamConfig(eval_sets=[str(root / "none-*.jsonl")]))


def test_test_splits_without_answers_broken_images_and_template_wording(tmp_path):
    """Test splits seldom publish answers: their questions and images are indexed all the same. A
    broken eval image is unusable, not an error. Wording shared by many eval rows is a template."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    buf = io.BytesIO()
    photo("rocket").save(buf, "PNG")
    rows = [{"questionId": 1, "question": "What is the total amount due on the second page of this invoice?",
             "answers": None, "image": {"bytes": buf.getvalue(), "path": "1.png"}},  # DocVQA test: no answers
            {"questionId": 2, "question": "Which company issued the letter shown at the top of the page?",
             "answers": None, "image": {"bytes": buf.getvalue()[:200], "path": "2.png"}}]  # a truncated image
    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "test-00000-of-00001.parquet")
    template = "Think about the magnetic force between the magnets in each pair and then answer"
    (tmp_path / "sqa.jsonl").write_text("".join(
        json.dumps({"id": f"s{k}", "question": f"{template} question number {k} about pair {k}"}) + "\n"
        for k in range(25)))
    index = build_eval_index(DecontamConfig(eval_sets=[str(tmp_path / "*.parquet"), str(tmp_path / "sqa.jsonl")]))
    counts = index.summary()["eval_sets"][str(tmp_path / "test-00000-of-00001.parquet")]
    assert counts == {"rows": 2, "texts": 2, "images": 1, "unusable": 1}
    assert index.text_hit("Q: what is the total amount due on the second page of this invoice") is not None
    assert index.image_hit(phash(photo("rocket"))) is not None
    assert index.summary()["template_grams_dropped"] > 0
    assert index.text_hit(f"Notes: {template}.") is None  # the benchmark's fixed wording is not a question
    assert index.text_hit(f"{template} question number 7 about pair 7") is not None  # its own question is


def test_an_eval_image_is_found_after_a_recompress_and_a_resize(evals):
    root, _ = evals
    index = build_eval_index(DecontamConfig(eval_sets=[str(root / "bench.jsonl")]))
    buf = io.BytesIO()
    photo("astronaut").resize((300, 300)).save(buf, "JPEG", quality=60)
    copy = Image.open(io.BytesIO(buf.getvalue())).convert("RGB")
    assert index.image_hit(phash(copy)).endswith(f"bits from an image of {root / 'bench.jsonl'}")
    for other in ("coffee", "chelsea", "camera", "rocket"):
        assert index.image_hit(phash(photo(other))) is None, other
    texts_only = build_eval_index(DecontamConfig(eval_sets=[str(root / "bench.jsonl")], phash_bits=-1))
    assert texts_only.image_hit(phash(copy)) is None and texts_only.summary()["images"] == 0


def test_annotate_rejects_contaminated_captions_and_images_and_accounts_for_every_row(evals, tmp_path):
    from curation.core.config import deep_merge, load_config
    from curation.annotate.config import AnnotateConfig
    from curation.core.records import ImageInfo, Pair, Sample
    from curation.core.shards import build_index, write_pair_shard
    from pipelines.annotate import run_annotate
    from tests.conftest import CONFIGS

    root, _ = evals
    folder = tmp_path / "pairs"
    folder.mkdir()

    def sample(uid: str, caption: str, img: Image.Image) -> Sample:
        buf = io.BytesIO()
        img.save(buf, "JPEG", quality=90)
        pair = Pair(uid=uid, url=f"http://example.org/{uid}.jpg", caption=caption, source="test",
                    source_file="t.jsonl", source_row=int(uid[1:]))
        return Sample(pair, ImageInfo(buf.getvalue(), "jpg", img.width, img.height, img.width, img.height, "JPEG",
                                      "0" * 64, phash(img)))

    samples = [sample("r0", f"A poster that asks: {LONG}", photo("coffee")),  # the long question
               sample("r1", "Portrait of an astronaut in an orange suit with a flag behind her.", photo("astronaut")),
               sample("r2", "A cup of coffee with latte art on a saucer on a wooden table.", photo("coffee")),
               sample("r3", "A ginger cat resting on a windowsill in the afternoon sun.", photo("chelsea"))]
    with open(folder / "t-00000-of-00001.tar", "wb") as t, open(folder / "t-00000-of-00001.parquet", "wb") as m:
        report = write_pair_shard(0, "t-00000-of-00001", samples, t, m)
    (folder / "_index.json").write_text(json.dumps(build_index([report], kind="pairs", prefix="t", num_shards=1,
                                                               fingerprint="test")))
    over = {"progress": False, "ocr": {"enabled": False}, "quality": {"enabled": False},
            "decontamination": {"eval_sets": [str(root / "bench.jsonl")]}}
    cfg = load_config(CONFIGS / "annotate.yaml", AnnotateConfig, deep_merge({}, over))
    index = run_annotate(cfg, [str(folder)], str(tmp_path / "out"))
    assert index["totals"] == {"inputs": 4, "kept": 2, "rejected": 2}
    assert index["reasons"] == {"eval_contaminated": 2}
    assert index["decontamination"]["eval_sets"][str(root / "bench.jsonl")]["rows"] == 4
    import pyarrow.parquet as pq

    rows = {r["uid"]: r for s in index["shards"] for r in pq.read_table(tmp_path / "out" / s["manifest"]).to_pylist()}
    assert rows["r0"]["detail"].startswith("13-gram") and rows["r1"]["detail"].endswith("bench.jsonl") and "bits from an image" in rows["r1"]["detail"]
    assert rows["r2"]["status"] == rows["r3"]["status"] == "kept"


def test_mmpr_rejects_a_benchmark_question_before_any_model_runs(tmp_path, monkeypatch):
    """MMPR reads VQA files: the same questions given as the eval set are rejected at read."""
    from curation.mmpr.config import MmprConfig, MmprImageConfig
    from curation.mmpr.tasks import MmprTask
    from curation.mmpr.shards import read_tasks
    from curation.mmpr.tasks import load_images
    from curation.samples.vqa import write_vqa
    from pipelines.mmpr import decontaminate
    from tests.test_mmpr_pipeline import recipe

    vqa = write_vqa(tmp_path / "vqa")
    train = tmp_path / "vqa" / "train.jsonl"
    lines = vqa["questions"].read_text().splitlines()
    novel = json.loads(next(line for line in lines if '"id": "q0"' in line))
    novel.update(id="fresh", question="How many windows can you count on the front of the building?")
    train.write_text("\n".join([*lines, json.dumps(novel)]) + "\n")

    def judged(decontamination: dict, hold: bool = False) -> dict[str, MmprTask]:
        """The read step's decontamination: on the image bytes it holds (`hold`, as ReadTasks does),
        or reading them again."""
        cfg: MmprConfig = recipe(decontamination={"eval_sets": [str(vqa["questions"])], **decontamination})
        with open(train, "rb") as f:
            tasks = []
            for t in read_tasks(f, "train.jsonl"):
                held = [] if hold else None
                tasks.append((load_images(t, str(train.parent), MmprImageConfig(), lambda p, n: open(p, "rb").read(n),
                                          held), held))
        return {t.uid: decontaminate(t, cfg.decontamination, held) for t, held in tasks if not t.reason}

    # texts alone (the sample's questions have 7 words: matched whole from min_words 5)
    from filters.quality.decontam import words

    by_text = judged({"min_words": 5, "phash_bits": -1})
    assert by_text.pop("fresh").reason is None
    caught = [t for t in by_text.values() if t.reason == "eval_contaminated"]
    assert len(caught) >= 5 and all('-gram "' in t.detail and "vqa.jsonl" in t.detail for t in caught)
    missed = [t for t in by_text.values() if t.reason is None]  # only questions too short to guard ("What is 12 + 7?")
    assert all(len(words(t.item.question.replace("<image>", " "))) < 5 for t in missed), [t.item.question for t in missed]
    # images alone: the fresh question's image is q0's, so it is caught by its pHash
    by_image = judged({"min_words": 13, "phash_bits": 0})
    assert by_image["fresh"].reason == "eval_contaminated" and "0 bits from an image" in by_image["fresh"].detail
    import pipelines.mmpr

    def no_second_read(*_):
        raise AssertionError("the held bytes were not used: the image was read again")

    monkeypatch.setattr(pipelines.mmpr.fsio, "read_image", no_second_read)
    held = judged({"min_words": 13, "phash_bits": 0}, hold=True)  # the bytes already read: the same verdicts
    assert {u: (t.reason, t.detail) for u, t in held.items()} == {u: (t.reason, t.detail) for u, t in by_image.items()}
