"""Video -> sampled frames, with PyAV (FFmpeg): the container is probed, frames are decoded in
order and only the chosen ones kept, each re-encoded as JPEG with its timestamp. Three ways to
choose, as InternVL and its peers do:

- `uniform`: `num_segments` frames, the middle of each of that many equal spans (InternVL's
  `get_index` with no bound: `int(seg / 2 + round(seg * i))` over the frame count, here over time
  so a variable frame rate is honoured);
- `fps`: one frame every 1 / `fps` seconds, at most `max_frames`;
- `keyframes`: the keyframes only (the decoder skips the rest), at most `max_frames`, evenly
  thinned when there are more.

Bad input gets a reason, never an exception: `not_a_video` (no container FFmpeg reads),
`audio_only`, `video_corrupt` (the stream breaks before a frame decodes), `video_no_frames`,
`video_too_long` (over `max_duration_s`), `video_too_large` (frames over `max_pixels`). Bounded
work: decoding stops after the last chosen frame, or after `max_decoded_frames`."""

from __future__ import annotations

import io
import math
from dataclasses import dataclass, field
from typing import Literal

from curation.core.config import ConfigError
from curation.core.records import Verdict


@dataclass(frozen=True)
class VideoConfig:
    """How frames are chosen and stored."""

    sampling: Literal["uniform", "fps", "keyframes"] = "uniform"  # how frames are chosen (the module's docstring)
    num_segments: int = 8  # uniform: frames per video (InternVL trains with 8-32; at most 256)
    fps: float = 1.0  # fps: frames per second of video
    max_frames: int = 32  # fps and keyframes: at most this many (evenly thinned)
    max_duration_s: float = 600.0  # longer: video_too_long
    max_pixels: int = 4096 * 2160  # a frame above it: video_too_large (a 4K frame passes)
    max_decoded_frames: int = 100_000  # decoding stops here (a stream whose timestamps never reach the targets)
    frame_size: int = 448  # frames are stored with their longer side at most this (InternVL's tile size)
    jpeg_quality: int = 90  # Pillow JPEG quality of the stored frames, 1..100
    max_bytes: int = 200_000_000  # a video file above it: body_too_large (replaces download.max_bytes)

    def __post_init__(self) -> None:
        if not 1 <= self.num_segments <= 256 or not 1 <= self.max_frames <= 256 or self.fps <= 0:
            raise ConfigError("video: num_segments and max_frames in 1..256, fps > 0")
        if self.max_duration_s <= 0 or self.max_pixels < 1 or self.max_decoded_frames < 1 or self.frame_size < 16:
            raise ConfigError("video: max_duration_s > 0, max_pixels >= 1, max_decoded_frames >= 1, frame_size >= 16")
        if not 1 <= self.jpeg_quality <= 100:
            raise ConfigError("video: jpeg_quality in 1..100")


@dataclass
class Frames:
    """The frames kept from one video, in time order."""

    jpegs: list[bytes]
    timestamps: list[float]  # seconds from the stream's start
    width: int  # of the stored frames
    height: int
    duration_s: float
    source_fps: float | None
    codec: str
    container: str
    decoded: int = 0  # frames decoded to find them
    sizes: list[tuple[int, int]] = field(default_factory=list)
    source_width: int = 0  # of the video's own frames
    source_height: int = 0
    truncated_at_s: float | None = None  # the stream ended here, before its stated duration: sampled up to it


def targets(cfg: VideoConfig, duration: float) -> list[float]:
    """The timestamps (seconds) the frames are chosen at, for uniform and fps sampling."""
    if cfg.sampling == "uniform":
        seg = duration / cfg.num_segments
        return [seg / 2 + seg * i for i in range(cfg.num_segments)]
    n = max(1, math.floor(duration * cfg.fps))
    times = [i / cfg.fps for i in range(n)]
    return thin(times, cfg.max_frames)


def thin(items: list, n: int) -> list:
    """At most `n` of `items`, evenly spread (the middle of n equal spans)."""
    if len(items) <= n:
        return items
    step = len(items) / n
    return [items[int(step / 2 + step * i)] for i in range(n)]


def container_kind(data: bytes) -> str | None:
    """The video container its first bytes announce (ISO BMFF, Matroska / WebM, AVI, FLV, MPEG-TS
    / PS), or None."""
    head = data[:16]
    if head[4:8] == b"ftyp":
        return "mp4"
    if head[:4] == b"\x1a\x45\xdf\xa3":
        return "matroska"
    if head[:4] == b"RIFF" and head[8:12] == b"AVI ":
        return "avi"
    if head[:3] == b"FLV":
        return "flv"
    if head[:1] == b"\x47" and data[188:189] == b"\x47":
        return "mpegts"
    if head[:4] == b"\x00\x00\x01\xba":
        return "mpeg-ps"
    return None


def _duration(container, stream) -> float | None:
    """The video stream's duration in seconds, else the container's; None when neither is known
    (or one is not positive)."""
    if stream.duration is not None and stream.time_base is not None and stream.duration > 0:
        return float(stream.duration * stream.time_base)
    if container.duration is not None and container.duration > 0:
        return container.duration / 1_000_000  # av.time_base
    return None


def _encode(frame, cfg: VideoConfig) -> tuple[bytes, tuple[int, int]]:
    img = frame.to_image()  # RGB PIL
    if max(img.size) > cfg.frame_size:
        scale = cfg.frame_size / max(img.size)
        img = img.resize((max(1, round(img.width * scale)), max(1, round(img.height * scale))))
    buf = io.BytesIO()
    img.save(buf, "JPEG", quality=cfg.jpeg_quality)
    return buf.getvalue(), img.size


def sample_frames(data: bytes, cfg: VideoConfig, _span: float | None = None) -> Frames | Verdict:
    """The chosen frames of a video given as bytes, or a rejection with its reason. A stream that
    ends before its stated duration (a truncated file) is sampled again over the part that
    decodes (`Frames.truncated_at_s`); under half of it decoding is `video_corrupt`."""
    import av

    try:
        container = av.open(io.BytesIO(data), mode="r")
    except (av.error.FFmpegError, ValueError, OSError) as err:
        if (kind := container_kind(data)) is not None:  # a video container's header, then nothing readable
            return Verdict.reject("video_corrupt", f"{kind} container unreadable (truncated?): {type(err).__name__}"
                                                   f": {err}"[:200])
        return Verdict.reject("not_a_video", f"{type(err).__name__}: {err}"[:200])
    with container:
        fmt = container.format.name
        if fmt == "image2" or fmt.endswith("_pipe"):  # FFmpeg reads a still image as a one-frame stream
            return Verdict.reject("not_a_video", f"a still image ({fmt})")
        if not container.streams.video:
            if container.streams.audio:
                return Verdict.reject("audio_only", f"{container.format.name}: audio and no video stream")
            if container_kind(data) is not None:  # a video container's header, no stream table (mp4 cut before moov)
                return Verdict.reject("video_corrupt", f"{container.format.name}: no readable stream (truncated?)")
            return Verdict.reject("not_a_video", f"{container.format.name}: no video stream")
        stream = container.streams.video[0]
        width, height = stream.codec_context.width or 0, stream.codec_context.height or 0
        if width * height > cfg.max_pixels:
            return Verdict.reject("video_too_large", f"{width}x{height} frames > max_pixels {cfg.max_pixels}")
        duration = _duration(container, stream)
        if duration is not None and duration > cfg.max_duration_s:
            return Verdict.reject("video_too_long", f"{duration:.1f} s > max_duration_s {cfg.max_duration_s:g}")
        rate = float(stream.average_rate) if stream.average_rate else None
        step = 1 / (rate or 25.0)
        if cfg.sampling == "keyframes":
            stream.codec_context.skip_frame = "NONKEY"
        span = _span if _span is not None else duration
        want = targets(cfg, span) if cfg.sampling != "keyframes" and span else None
        # times from the stream's start (MPEG-TS and many MP4s start at 1.4 s or more)
        origin = float(stream.start_time * stream.time_base) if stream.start_time is not None and stream.time_base else None
        kept: list[Kept] = []
        stride, seen = 1, 0  # without targets: every stride-th candidate, the stride doubled when too many
        decoded = 0
        last = None  # (t, frame) of the last decoded frame, undecoded into JPEG until chosen
        broke = False
        try:
            for frame in container.decode(stream):
                decoded += 1
                if frame.width * frame.height > cfg.max_pixels:
                    return Verdict.reject("video_too_large", f"{frame.width}x{frame.height} frame > max_pixels")
                raw = float(frame.time) if frame.time is not None else None
                if origin is None:
                    origin = raw if raw is not None else 0.0
                t = max(0.0, raw - origin) if raw is not None else (decoded - 1) * step
                if want is None:  # keyframes, or no duration known: evenly spaced candidates, bounded
                    if seen % stride == 0:
                        kept.append(_kept(t, frame, cfg, seen))
                        if len(kept) > 2 * cfg.max_frames:
                            stride *= 2
                            kept = [k for k in kept if k.index % stride == 0]
                    seen += 1
                else:  # each target takes the last frame at or before it (InternVL's floor of the index)
                    while len(kept) < len(want) and t >= want[len(kept)]:
                        chosen = last if t > want[len(kept)] and last is not None else (t, frame)
                        kept.append(_kept(*chosen, cfg, len(kept)))
                    if len(kept) == len(want):
                        break
                last = (t, frame)
                if decoded >= cfg.max_decoded_frames:
                    break
        except (av.error.FFmpegError, ValueError, OSError) as err:
            if not kept and last is None:
                return Verdict.reject("video_corrupt", f"{type(err).__name__}: {err}"[:200])
            broke = True  # a truncated or damaged file: what decoded before the break is kept
        if want is not None and len(kept) < len(want) and last is not None and _span is None:
            end = last[0] + step  # the stream ended before its stated duration: cut, or shorter than its audio
            # cut: it broke, or the duration it fell short of was the video's own (the stream's, or a
            # container's without audio); a container's duration beside audio may be the audio's
            cut = broke or bool(stream.duration and stream.duration > 0) or not container.streams.audio
            if cut and duration and end < duration / 2:
                return Verdict.reject("video_corrupt", f"only {end:.2f} s of {duration:.2f} s decode (truncated?)")
            again = sample_frames(data, cfg, end)
            if isinstance(again, Frames) and cut:
                again.truncated_at_s = round(end, 3)
            return again
        if want is not None and len(kept) < len(want) and last is not None:
            kept += [_kept(*last, cfg, len(kept))] * (len(want) - len(kept))  # rounding at the very end of the span
        if want is None:
            kept = thin(kept, cfg.num_segments if cfg.sampling == "uniform" else cfg.max_frames)
        if not kept:
            return Verdict.reject("video_no_frames", f"{decoded} frames decoded, none usable")
        if fmt == "gif" and decoded < 2:
            return Verdict.reject("not_a_video", "a still GIF (one frame)")
        known = duration if duration is not None and duration > 0 else kept[-1].t
        return Frames(jpegs=[k.jpeg for k in kept], timestamps=[round(k.t, 3) for k in kept], width=kept[0].size[0],
                      height=kept[0].size[1], duration_s=round(known, 3), source_fps=rate,
                      codec=stream.codec_context.name, container=container.format.name, decoded=decoded,
                      sizes=[k.size for k in kept], source_width=kept[0].source[0], source_height=kept[0].source[1])


@dataclass(frozen=True)
class Kept:
    """A chosen frame, already a JPEG (no decoded frame is held past its turn)."""

    t: float
    jpeg: bytes
    size: tuple[int, int]
    source: tuple[int, int]
    index: int


def _kept(t: float, frame, cfg: VideoConfig, index: int) -> Kept:
    jpeg, size = _encode(frame, cfg)
    return Kept(t, jpeg, size, (frame.width, frame.height), index)


FRAME_LABELS = ("Frame-", "Frame")  # InternVL 2.5 / 3's training loader; InternVL's chat demo


def video_prompt(n: int, label: str = "Frame-") -> str:
    """InternVL's video prompt for n frames: `Frame-1: <image>\nFrame-2: <image>\n` as its
    fine-tuning loader builds it from `<video>\n` (label "Frame" gives its chat demo's `Frame1:`)."""
    if label not in FRAME_LABELS:
        raise ConfigError(f"frame label: one of {FRAME_LABELS}")
    return "".join(f"{label}{i + 1}: <image>\n" for i in range(n))

