"""Source profiles: each schema maps onto one record type; lenient casts; malformed rows and
bad encodings become rejections, never crashes; uids are stable and dot-free."""

import io
import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from curation.ingest.config import IngestConfig, SourceConfig
from curation.core.config import load_config
from curation.core.records import Pair, Rejection, hash_uid
from curation.core.rows import detect_format
from curation.ingest.sources import read_pairs
from tests.conftest import CONFIGS


def source(recipe: str) -> SourceConfig:
    return load_config(CONFIGS / recipe, IngestConfig).source


def parquet_bytes(table: pa.Table) -> io.BytesIO:
    buf = io.BytesIO()
    pq.write_table(table, buf)
    buf.seek(0)
    return buf


def test_laion400m_schema():
    t = pa.table({"SAMPLE_ID": [123456789.0], "URL": ["http://x.example/a.jpg"], "TEXT": ["a dog on grass"],
                  "HEIGHT": [480.0], "WIDTH": [640.0], "LICENSE": ["?"], "NSFW": ["UNLIKELY"], "similarity": [0.33]})
    (p,) = read_pairs(parquet_bytes(t), source("laion400m.yaml"), "part-0.parquet")
    assert isinstance(p, Pair)
    assert p.uid == "laion400m--123456789"  # float id read as an integer id, in the source's namespace
    assert (p.declared_width, p.declared_height) == (640, 480)
    assert p.nsfw_tag == "UNLIKELY" and p.clip_similarity == pytest.approx(0.33) and p.license == "?"


def test_laion5b_schema_hash_uid():
    t = pa.table({"URL": ["http://x.example/a.jpg"], "TEXT": ["a dog"], "WIDTH": [640], "HEIGHT": [480.5],
                  "similarity": [0.3], "hash": [-123], "punsafe": [0.1], "pwatermark": [0.2], "aesthetic": [5.5]})
    (p,) = read_pairs(parquet_bytes(t), source("laion.yaml"), "x.parquet")
    assert p.uid == hash_uid("http://x.example/a.jpg", "a dog") and "." not in p.uid
    assert p.declared_height == 480 and p.nsfw_score == pytest.approx(0.1)
    assert p.watermark_score == pytest.approx(0.2) and p.aesthetic_score == pytest.approx(5.5)
    assert p.source_hash == "-123"


def test_coyo_schema_and_extra_columns():
    t = pa.table({"id": pa.array([4_000_000_001], pa.int64()), "url": ["https://x.example/b.png"], "text": ["two cats"],
                  "width": [800], "height": [600], "image_phash": ["ab"], "clip_similarity_vitb32": [0.31],
                  "clip_similarity_vitl14": [0.27], "nsfw_score_opennsfw2": [0.01], "nsfw_score_gantman": [0.02],
                  "watermark_score": [0.1], "aesthetic_score_laion_v2": [5.1], "num_faces": [0]})
    (p,) = read_pairs(parquet_bytes(t), source("coyo.yaml"), "coyo.parquet")
    assert p.uid == "coyo--4000000001" and p.clip_similarity_l14 == pytest.approx(0.27)
    assert p.nsfw_score_gantman == pytest.approx(0.02) and p.extra == {"num_faces": 0}


def test_datacomp_schema_csv_and_tsv():
    text = "uid,url,text,original_width,original_height,clip_b32_similarity_score,clip_l14_similarity_score,sha256\n" \
           "00a1b2.c3,http://x.example/c.jpg,a red bus,1024.0,768,0.3,0.25,deadbeef\n"
    (p,) = read_pairs(io.BytesIO(text.encode()), source("datacomp.yaml"), "pool.csv")
    assert p.uid == "datacomp--00a1b2-2ec3"  # dots never reach a webdataset key (escaped, not replaced)
    assert (p.declared_width, p.declared_height) == (1024, 768)
    tsv = text.replace(",", "\t").encode()
    (q,) = read_pairs(io.BytesIO(tsv), source("datacomp.yaml"), "pool.tsv")
    assert q.uid == p.uid and q.caption == "a red bus"


def test_lenient_numbers_and_control_characters():
    text = "uid,url,text,original_width,original_height,clip_b32_similarity_score,clip_l14_similarity_score,sha256\n" \
           "a,http://x.example/c.jpg,\"bad\x00 caption\x07 here\",wide,nan,,0.2,\n"
    (p,) = read_pairs(io.BytesIO(text.encode()), source("datacomp.yaml"), "pool.csv")
    assert p.declared_width is None and p.declared_height is None and p.clip_similarity is None
    assert p.caption == "bad caption here"


def test_html_character_references_are_decoded_once_and_the_raw_text_kept():
    from curation.core.records import pair_metadata

    captions = ["Fish &amp; Chips", "2019 &#8211; 2020", "&quot;Quoted&quot; caf&eacute;", "&amp;amp; twice-escaped",
                "no references & a bare ampersand", "bell&#7;char", "plain"]
    table = pa.table({"URL": [f"http://x.example/{i}.jpg" for i in range(len(captions))], "TEXT": captions})
    pairs = list(read_pairs(parquet_bytes(table), source("laion.yaml"), "part.parquet"))
    assert [p.caption for p in pairs] == ["Fish & Chips", "2019 \u2013 2020", '"Quoted" caf\u00e9', "&amp; twice-escaped",
                                          "no references & a bare ampersand", "bellchar", "plain"]
    assert [p.caption_raw for p in pairs] == captions[:4] + [None, captions[5], None]  # kept only where it differs
    assert pair_metadata(pairs[0])["caption_raw"] == "Fish &amp; Chips" and "caption_raw" not in pair_metadata(pairs[6])
    # the uid is the row as written: the same as before decoding existed
    assert pairs[0].uid == hash_uid("http://x.example/0.jpg", "Fish &amp; Chips")


def test_malformed_rows_are_rejections_with_identity():
    lines = [
        json.dumps({"id": "a1", "image": "x.jpg", "conversations": [{"from": "human", "value": "<image>"},
                                                                     {"from": "gpt", "value": "A cat."}]}),
        "{not json",
        json.dumps([1, 2]),
        b"\xff\xfe broken".decode("latin-1"),
        json.dumps({"id": "a2", "image": ["x.jpg", "y.jpg"], "conversations": []}),
        json.dumps({"id": "a3", "conversations": []}),
    ]
    data = "\n".join(lines).encode("latin-1")
    out = list(read_pairs(io.BytesIO(data), source("internvl_jsonl.yaml"), "convs.jsonl"))
    assert len(out) == 6
    assert isinstance(out[0], Pair) and out[0].caption == "A cat." and out[0].image_path == "x.jpg"
    reasons = [r.reason for r in out[1:]]
    assert reasons == ["malformed_row", "malformed_row", "malformed_row", "malformed_row", "missing_url"]
    assert "invalid UTF-8" in out[3].detail and "2 images" in out[4].detail
    uids = {r.uid for r in out[1:4]}
    assert len(uids) == 3  # each unreadable row keeps its own identity
    assert [r.source_row for r in out[1:]] == [1, 2, 3, 4, 5]


def test_csv_wrong_field_count_and_bad_utf8():
    data = b"URL,TEXT,WIDTH,HEIGHT\nhttp://a.example/1.jpg,ok caption,1,1\nhttp://a.example/2.jpg,x\n" \
           b"http://a.example/3.jpg,caf\xe9 latin1,1,1\n"
    cfg = SourceConfig(name="t", columns={"url": "URL", "caption": "TEXT"})
    out = list(read_pairs(io.BytesIO(data), cfg, "m.csv"))
    assert isinstance(out[0], Pair)
    assert [o.reason for o in out[1:]] == ["malformed_row", "malformed_row"]


def test_corrupt_parquet_is_one_rejection_not_a_crash():
    cfg = source("laion.yaml")
    out = list(read_pairs(io.BytesIO(b"PAR1 this is not parquet"), cfg, "broken.parquet"))
    assert len(out) == 1 and isinstance(out[0], Rejection) and out[0].reason == "unreadable_file"


def test_detect_format():
    assert detect_format("a/b.parquet") == "parquet"
    assert detect_format("a/b.jsonl.gz") == "jsonl"
    with pytest.raises(ValueError, match="set source.format"):
        detect_format("a/b.bin")
