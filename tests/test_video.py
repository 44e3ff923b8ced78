"""Video ingest: PyAV frame sampling (uniform as InternVL's get_index, by fps, keyframes) with a
reason for every bad input, then the real ingest stage on a video list (local files and URLs from
a local server) through to InternVL video conversations, packs and `curate check`. The test
videos are made here with PyAV's own encoders (curation/samples/videos.py): frame i is a flat
colour whose red channel says i."""

from __future__ import annotations

import io
import json

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from curation.core.config import ConfigError
from tests.conftest import CONFIGS
from curation.ingest.video import VideoConfig, container_kind, sample_frames, video_prompt
from curation.samples.videos import CONTAINERS, frame_index, make_audio, make_video


def indices(frames) -> list[int]:
    return [frame_index(np.asarray(Image.open(io.BytesIO(j)))[..., 0].mean()) for j in frames.jpegs]


def internvl_indices(num_frames: int, num_segments: int) -> list[int]:
    """InternVL's get_index(bound=None, fps, max_frame=num_frames - 1, first_idx=0, num_segments)."""
    seg = (num_frames - 1) / num_segments
    return [int(seg / 2 + np.round(seg * i)) for i in range(num_segments)]


@pytest.mark.parametrize("container", sorted(CONTAINERS))
def test_uniform_sampling_picks_internvl_frames_in_every_container(container):
    frames = sample_frames(make_video(container, frames=40, fps=10), VideoConfig(num_segments=8))
    assert not hasattr(frames, "reason"), frames
    assert frames.timestamps == [0.2, 0.7, 1.2, 1.7, 2.2, 2.7, 3.2, 3.7]  # the middle of 8 spans of 0.5 s
    assert max(abs(a - b) for a, b in zip(indices(frames), internvl_indices(40, 8))) <= 3  # InternVL's frames, as decoded
    assert frames.duration_s == 4.0 and frames.source_fps == 10.0 and len(frames.jpegs) == 8
    assert container_kind(make_video(container)) is not None


def test_fps_and_keyframe_sampling():
    video = make_video("mp4", frames=40, fps=10)
    by_fps = sample_frames(video, VideoConfig(sampling="fps", fps=2))
    assert by_fps.timestamps == [0.0, 0.5, 1.0, 1.5, 2.0, 2.5, 3.0, 3.5]
    thinned = sample_frames(video, VideoConfig(sampling="fps", fps=10, max_frames=5))
    assert len(thinned.jpegs) == 5 and thinned.timestamps == sorted(thinned.timestamps)
    keys = sample_frames(video, VideoConfig(sampling="keyframes"))
    assert keys.timestamps == [0.0, 1.0, 2.0, 3.0] and keys.decoded == 4  # one keyframe a second; the rest skipped
    assert indices(keys) == [0, 10, 20, 30]
    small = sample_frames(make_video("mp4", size=(1280, 720), frames=10), VideoConfig(num_segments=2, frame_size=448))
    assert small.sizes == [(448, 252), (448, 252)] and (small.source_width, small.source_height) == (1280, 720)


def test_streams_that_start_late_or_carry_longer_audio_and_many_keyframes():
    late = sample_frames(make_video("mp4", start_s=1.4), VideoConfig(num_segments=8))  # as MPEG-TS starts
    assert late.timestamps == [0.2, 0.7, 1.2, 1.7, 2.2, 2.7, 3.2, 3.7]  # measured from the stream's start
    assert max(abs(a - b) for a, b in zip(indices(late), [2, 7, 12, 17, 22, 27, 32, 37])) <= 1
    long_audio = sample_frames(make_video("mkv", audio_s=10.0), VideoConfig(num_segments=8))
    assert not hasattr(long_audio, "reason") and long_audio.truncated_at_s is None  # shorter than its audio, not cut
    assert long_audio.timestamps[-1] < 4.0 and len(set(long_audio.timestamps)) == 8
    many = sample_frames(make_video("mp4", frames=240, fps=10, gop=2), VideoConfig(sampling="keyframes", max_frames=8))
    assert len(many.jpegs) == 8 and many.decoded == 120  # 120 keyframes, thinned evenly over the whole video
    assert many.timestamps[0] < 3.0 and many.timestamps[-1] > 20.0
    gaps = np.diff(many.timestamps)
    assert gaps.max() <= 2 * gaps.min() + 0.5


def test_bad_input_gets_a_reason_never_an_exception():
    def reason(data, **cfg):
        got = sample_frames(data, VideoConfig(**cfg))
        return getattr(got, "reason", None)

    png, gif = io.BytesIO(), io.BytesIO()
    Image.new("RGB", (32, 32), "red").save(png, "PNG")
    Image.new("RGB", (32, 32), "red").save(gif, "GIF")
    mp4 = make_video("mp4")
    assert reason(b"") == reason(b"<html>an error page</html>") == "not_a_video"
    assert reason(png.getvalue()) == reason(gif.getvalue()) == "not_a_video"  # still images are not videos
    assert reason(make_audio()) == "audio_only"
    assert reason(mp4[: len(mp4) // 3]) == reason(mp4[: len(mp4) * 2 // 3]) == "video_corrupt"  # cut before its index
    assert reason(mp4, max_duration_s=2) == "video_too_long"
    assert reason(mp4, max_pixels=1000) == "video_too_large"
    mkv = make_video("mkv")
    cut = sample_frames(mkv[: len(mkv) * 7 // 10], VideoConfig())  # a stream that ends early: sampled over what decodes
    assert 1.5 < cut.truncated_at_s < 4.0 and cut.timestamps[-1] < cut.truncated_at_s and len(cut.jpegs) == 8
    assert len(set(cut.timestamps)) == 8  # no frame repeated to pad
    assert reason(mkv[: len(mkv) // 4]) == "video_corrupt"  # under half of it decodes
    assert sample_frames(make_video("mp4", audio=True), VideoConfig()).timestamps[0] == 0.2  # audio beside is fine
    with pytest.raises(ConfigError):
        VideoConfig(num_segments=0)
    assert video_prompt(2) == "Frame-1: <image>\nFrame-2: <image>\n"  # InternVL 2.5 / 3's fine-tuning loader
    assert video_prompt(1, "Frame") == "Frame1: <image>\n"  # its chat demo


@pytest.mark.slow
def test_video_list_to_packs_and_check(tmp_path):
    """A parquet list of local and served videos (and broken ones) through the real ingest stage
    on configs/video.yaml: every row accounted for, frames and timestamps in the shard; then
    InternVL video conversations (one tile per frame), packed and streamed through the model core."""
    import dataclasses

    from curation.annotate.tasks import pairs_to_conversations
    from curation.core.shards import iter_tar_groups
    from curation.samples.image_server import serve
    from model.build import load_model
    from model.check import check_packs
    from model.config import ModelConfig
    from pipelines.ingest import run_ingest
    from pipelines.pack import run_pack
    from tests.conftest import local_config, small_pack_config

    (tmp_path / "videos").mkdir()
    for c in ("mp4", "webm", "mkv"):
        (tmp_path / "videos" / f"clip.{c}").write_bytes(make_video(c))
    mp4 = make_video("mp4")
    served = {"a.avi": make_video("avi"), "b.flv": make_video("flv"), "cut.mp4": mp4[: len(mp4) // 3],
              "sound.m4a.mp4": make_audio(), "page.mp4": b"<html>not a video</html>"}
    with serve(served) as base:
        rows = [{"video": f"clip.{c}", "caption": f"a colour ramp from a local {c} file"} for c in ("mp4", "webm", "mkv")]
        rows += [{"video": f"{base}/img/{n}", "caption": f"a clip served as {n}"} for n in served]
        rows.append({"video": "missing.mp4", "caption": "a local file that is not there"})
        rows.append({"video": "../outside.mp4", "caption": "a path outside image_root"})
        pq.write_table(pa.Table.from_pylist(rows), tmp_path / "list.parquet")
        cfg = local_config("video.yaml", source={"image_root": str(tmp_path / "videos")})
        index = run_ingest(cfg, [str(tmp_path / "list.parquet")], str(tmp_path / "out"))
    assert index["totals"] == {"inputs": 10, "kept": 5, "rejected": 5}
    assert index["reasons"] == {"audio_only": 1, "local_file_error": 2, "not_a_video": 1, "video_corrupt": 1}
    groups = [g for s in index["shards"] for _, g in iter_tar_groups(str(tmp_path / "out" / s["tar"]))]
    for g in groups:
        meta = json.loads(g["json"])
        assert meta["video"]["frames"] == 8 and len(meta["video"]["timestamps"]) == 8
        assert sorted(k for k in g if k.startswith("frame")) == [f"frame{k:02d}.jpg" for k in range(8)]
        assert meta["source_sha256"] and meta["original_width"] == 96  # the video's own, the poster is a frame
    from curation.core.config import load_config
    from filters.dedup.config import DedupConfig
    from pipelines.dedup.stage import run_dedup

    # dedup re-reads the shard lazily and rewrites every member: the frames survive, and two copies
    # of one video file are exact duplicates by the file's hash (not by a shared poster frame)
    posters = [json.loads(g["json"])["sha256"] for g in groups]
    assert len(set(posters)) < len(posters)  # the mkv and avi clips (both MPEG-4 Part 2) store one poster
    dcfg = load_config(CONFIGS / "dedup.yaml", DedupConfig, {  # exact keys only: the clips show one colour ramp
        "progress": False, "exact": {"caption": False}, "near_caption": {"enabled": False},
        "near_image": {"enabled": False}})
    deduped = run_dedup(dcfg, [str(tmp_path / "out")], str(tmp_path / "dedup"))
    assert deduped["totals"]["kept"] == 5  # five different files: no dup_image for a shared poster
    again = [g for s in deduped["shards"] for _, g in iter_tar_groups(str(tmp_path / "dedup" / s["tar"]))]
    assert sorted(map(sorted, again)) == sorted(map(sorted, groups))
    assert all(a[k] == b[k] for a, b in zip(sorted(again, key=lambda g: g["json"]), sorted(groups, key=lambda g: g["json"]))
               for k in a)
    from curation.core.shardset import ShardSet
    from curation.inspection.report import render_report
    from curation.inspection.show import find_pair, render_pair

    ss = ShardSet.open(str(tmp_path / "out"))
    shown = render_pair(find_pair(ss, index=0), save_images=str(tmp_path / "shown"))
    assert "video: 8 frames (uniform) at 0.2, 0.7" in shown and len(list((tmp_path / "shown").glob("*frame*.jpg"))) == 8
    page = render_report(ss)
    assert "id='videos'" in page and page.count("<figure>") == 5 * 8  # every kept video as a strip of its frames
    conv, n = pairs_to_conversations(tmp_path / "out", tmp_path / "conv")
    rows = [json.loads(line) for line in conv.read_text().splitlines()]
    assert n == 5 and all(len(r["image"]) == 8 and r["tiling"]["max_num"] == 1 for r in rows)
    assert rows[0]["conversations"][0]["value"].startswith("Frame-1: <image>\nFrame-2: <image>\n")
    packed = run_pack(dataclasses.replace(small_pack_config(), l_max=4096, t_max=16), [str(conv)], str(tmp_path / "p"))
    assert packed["totals"]["kept"] == 5 and packed["stats"]["tiles"] == 40  # one tile per frame, no thumbnail
    report = check_packs(str(tmp_path / "p"), load_model(ModelConfig()), verify_every=1, progress=False)
    assert report.ok and report.packs == 5 and report.verified == 5
