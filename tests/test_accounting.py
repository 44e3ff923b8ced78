"""Nothing lost: dedup keeps one copy of every group whatever the uids, no writer replaces a finished
shard, and a job whose writers got fewer rows than were read fails with `RowsLost` naming the
shards, their markers removed so a rerun writes them again. (Beam's local-runner race that lost
rows for real, bench/runner_loss.py, no longer reaches a test-sized job: see docs/runbook.md.)"""

from collections import Counter
from pathlib import Path

import pytest

from curation.core.accounting import RowAccount, RowsLost, ShardStateError
from curation.core.shards import PROGRESS_DIR, ShardReport, read_pair_shard, write_pair_shard
from curation.samples.dups import check_dedup, planted_captions, write_pair_folder
from filters.dedup.keys import representative_of
from pipelines.dedup.stage import run_dedup
from pipelines.sharded_output import WriteIndex, write_one_shard
from tests.test_dedup_pipeline import MULTI, NO_IMAGES, config, manifest

MEM = ["--direct_running_mode=in_memory"]


def _kept(folder: Path) -> Counter:
    return Counter(r["uid"] for r in manifest(folder) if r["status"] == "kept")


def _reps_kept(folder: Path) -> None:
    rows = manifest(folder)
    kept = {r["uid"] for r in rows if r["status"] == "kept"}
    for r in rows:
        if r["status"] == "rejected" and r["stage"] == "dedup":
            assert representative_of(r["detail"]) in kept, r


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    """1,000-odd planted caption records, deduplicated once as one folder: the reference."""
    base = tmp_path_factory.mktemp("overlap")
    recs = planted_captions(300, seed=5)
    write_pair_folder(base / "all", recs, samples_per_shard=200)
    cfg = config(**NO_IMAGES, shards={"samples_per_shard": 200})
    run_dedup(cfg, [str(base / "all")], str(base / "all-out"), MEM)
    return base, recs, cfg


def test_overlapping_inputs_keep_one_copy_of_every_record(corpus):
    """Two parts sharing a third of their rows at other row positions (as LAION parts do): every
    shared record is kept once, never rejected as a duplicate of itself, and the kept set equals the
    deduplicated union."""
    base, recs, cfg = corpus
    third = len(recs) // 3
    a, b = recs[: 2 * third], recs[third:]
    write_pair_folder(base / "a", a, samples_per_shard=200, source_file="part-a.jsonl")
    write_pair_folder(base / "b", b, samples_per_shard=200, source_file="part-b.jsonl")
    index = run_dedup(cfg, [str(base / "a"), str(base / "b")], str(base / "ab"), MEM)
    assert index["totals"]["inputs"] == len(a) + len(b) == index["rows"]["rows_read"] == index["rows"]["rows_written"]
    assert _kept(base / "ab") == _kept(base / "all-out")  # each uid kept exactly once, the same ones
    assert check_dedup(base / "ab", [base / "a", base / "b"], images=False) == []
    _reps_kept(base / "ab")


def test_the_same_folder_given_twice_keeps_every_record_once(corpus):
    base, recs, cfg = corpus
    index = run_dedup(cfg, [str(base / "all"), str(base / "all")], str(base / "twice"), MULTI)
    assert index["totals"]["inputs"] == 2 * len(recs)
    assert _kept(base / "twice") == _kept(base / "all-out")
    assert check_dedup(base / "twice", [base / "all", base / "all"], images=False) == []
    _reps_kept(base / "twice")


def test_bare_source_ids_shared_by_three_inputs_keep_one(tmp_path):
    """`uid.namespace: none`: the uid is the source's own id, so three parts holding the same row
    (at other files and rows) give one uid three times; one copy is kept, the other two name it."""
    recs = planted_captions(40, seed=9)
    folders = []
    for k in range(3):
        rows = {r.uid: (k * 7 + i) % len(recs) for i, r in enumerate(recs)}
        folders.append(write_pair_folder(tmp_path / f"p{k}", recs, samples_per_shard=50, source_rows=rows,
                                         source_file=f"part-{k}.parquet"))
    cfg = config(**NO_IMAGES, shards={"samples_per_shard": 50})
    index = run_dedup(cfg, [str(f) for f in folders], str(tmp_path / "out"), MEM)
    out = manifest(tmp_path / "out")
    assert len(out) == 3 * len(recs) == index["totals"]["inputs"]
    alone = run_dedup(cfg, [str(folders[0])], str(tmp_path / "alone"), MEM)
    assert _kept(tmp_path / "out") == _kept(tmp_path / "alone") and alone["totals"]["kept"] > 0
    by_uid = Counter((r["uid"], r["status"]) for r in out)
    assert all(by_uid[(uid, "kept")] <= 1 for uid, _ in by_uid)
    assert check_dedup(tmp_path / "out", folders, images=False) == []
    _reps_kept(tmp_path / "out")


def test_rows_sharing_only_a_uid_across_shards_keep_one_as_dup_uid(tmp_path):
    """Bare source ids that collide: two inputs hold different records (caption, image) under the
    same uids. Their rows are written by different shard writers (one output shard per input
    shard), so dedup's last exact step keeps one per uid and names it."""
    from curation.samples.dups import Planted

    a = [Planted(f"id{i}", f"a caption about the harbour number {i}", i) for i in range(12)]
    b = [Planted(f"id{i}", f"quite another text on mountains, item {i}", 100 + i) for i in range(6)]
    fa = write_pair_folder(tmp_path / "a", a, samples_per_shard=50, source_file="a.parquet")
    fb = write_pair_folder(tmp_path / "b", b, samples_per_shard=50, source_file="b.parquet")
    # the planted URLs follow the uid: the URL step off, so only the uid is shared
    cfg = config(exact={"url": False, "image": False}, near_image={"enabled": False})
    index = run_dedup(cfg, [str(fa), str(fb)], str(tmp_path / "out"), MEM)
    assert index["num_shards"] == 2 and index["totals"]["inputs"] == 18
    out = manifest(tmp_path / "out")
    dup_uid = [r for r in out if r["reason"] == "dup_uid"]
    # each names its uid's kept copy (or, where the near-caption step removed that copy, the record kept for it)
    assert len(dup_uid) == 6 and all(r["stage"] == "dedup" and r["detail"].startswith(f"same uid as {r['uid']}")
                                     for r in dup_uid)
    kept = Counter(r["uid"] for r in out if r["status"] == "kept")
    assert kept and max(kept.values()) == 1  # no uid kept twice across the output
    _reps_kept(tmp_path / "out")


# ---------------------------------------------------------------------------------------------
# Markers, reports and the index


def _finished_shard(out: Path, n: int = 5) -> ShardReport:
    recs = planted_captions(3, seed=1)[:n]
    src = write_pair_folder(out.parent / "src", recs, samples_per_shard=100)
    with open(next(src.glob("*.tar")), "rb") as t, open(next(src.glob("*.parquet")), "rb") as m:
        records = list(read_pair_shard(t, m))
    (out / PROGRESS_DIR).mkdir(parents=True)
    return write_one_shard(str(out), "x", 0, 2, records, write_pair_shard, "test")


def test_a_marker_without_its_report_fails_and_the_shard_is_not_rewritten(tmp_path):
    out = tmp_path / "out"
    report = _finished_shard(out)
    tar = out / f"{report.name}.tar"
    before = tar.read_bytes()
    index = WriteIndex(str(out), "x", "pairs", "fp", write_pair_shard, "curate.test")
    with pytest.raises(ShardStateError, match=f"{report.name}: a progress marker but no report"):
        list(index.process([], 2, assigned={0: report.rows}, rows_read=report.rows))
    assert tar.read_bytes() == before and report.rows > 0  # not replaced by an empty shard
    assert not (out / "_index.json").exists()
    # a retried bundle writing the finished shard again gets its marker's report, nothing rewritten
    again = write_one_shard(str(out), "x", 0, 2, [], write_pair_shard, "test")
    assert again == report and tar.read_bytes() == before


def test_a_report_without_its_marker_fails(tmp_path):
    out = tmp_path / "out"
    report = _finished_shard(out)
    (out / PROGRESS_DIR / f"{report.name}.json").unlink()
    index = WriteIndex(str(out), "x", "pairs", "fp", write_pair_shard, "curate.test")
    with pytest.raises(ShardStateError, match=f"{report.name}: a report but no progress marker"):
        list(index.process([(report, report.rows)], 2, assigned={0: report.rows}, rows_read=report.rows))


def test_a_short_shard_is_rows_lost_and_loses_its_marker(tmp_path):
    out = tmp_path / "out"
    report = _finished_shard(out)
    index = WriteIndex(str(out), "x", "pairs", "fp", write_pair_shard, "curate.test")
    with pytest.raises(RowsLost, match=f"test: .*{report.name} expected {report.rows + 2} got {report.rows}"):
        list(index.process([(report, report.rows)], 2, assigned={0: report.rows + 2}, rows_read=report.rows + 2))
    assert not (out / PROGRESS_DIR / f"{report.name}.json").exists()  # a rerun writes it again
    assert not (out / "_index.json").exists()
    # the shard no row hashed to was written empty, and it is complete: its marker stays
    assert (out / PROGRESS_DIR / "x-00001-of-00002.json").exists() and (out / "x-00001-of-00002.tar").exists()


def test_every_shard_with_its_rows_gives_the_index_and_its_row_totals(tmp_path):
    out = tmp_path / "out"
    report = _finished_shard(out)
    index = WriteIndex(str(out), "x", "pairs", "fp", write_pair_shard, "curate.test")
    doc, = index.process([(report, report.rows)], 2, assigned={0: report.rows}, rows_read=report.rows)
    assert doc["rows"] == {"rows_read": report.rows, "rows_assigned": report.rows, "rows_written": report.rows}
    assert [s["rows"] for s in doc["shards"]] == [report.rows, 0] and (out / "_index.json").exists()


def test_a_shard_that_lost_a_decision_is_short_though_its_rows_are_all_there(tmp_path):
    out = tmp_path / "out"
    report = _finished_shard(out)
    index = WriteIndex(str(out), "x", "pairs", "fp", write_pair_shard, "curate.test")
    with pytest.raises(RowsLost, match=f"{report.name} expected {report.rows + 3} rows and decisions got {report.rows + 1}"):
        list(index.process([(report, report.rows + 1)], 2, assigned={0: report.rows}, decisions={0: 3},
                           rows_read=report.rows))
    assert not (out / PROGRESS_DIR / f"{report.name}.json").exists()


def test_rows_lost_before_any_shard_names_every_shard_of_the_run():
    account = RowAccount("ingest", "out", rows_read=10, assigned={"s0": 4, "s1": 5}, got={"s0": 4, "s1": 5})
    assert "10 rows read, 9 assigned to shards, 9 reached the shard writers (lost before" in account.problem()
    assert account.redo({"s1"}) == ["s1"]
    assert RowAccount("x", "o", 9, {"s0": 4, "s1": 5}, {"s0": 4, "s1": 5}).problem() is None
