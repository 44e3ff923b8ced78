"""Small test videos made offline with PyAV (its wheel ships libx264, mpeg4, VP8/VP9, FLV and
MJPEG encoders): frame i is a flat colour whose red channel encodes i, so a decoded frame tells
which frame it was. Also broken inputs: a truncated file, an audio-only file."""

from __future__ import annotations

import io
from fractions import Fraction

import numpy as np

# container -> (format name, video codec)
CONTAINERS = {"mp4": ("mp4", "libx264"), "webm": ("webm", "libvpx"), "mkv": ("matroska", "mpeg4"),
              "avi": ("avi", "mpeg4"), "flv": ("flv", "flv")}
STEP = 6  # red = STEP * frame index (up to 42 frames stay distinct under compression)


def frame_index(red: float) -> int:
    """The frame number a decoded frame's mean red channel says."""
    return int(round(red / STEP))


def make_video(container: str = "mp4", frames: int = 40, fps: int = 10, size: tuple[int, int] = (96, 64),
               audio: bool = False, start_s: float = 0.0, audio_s: float | None = None, gop: int = 10) -> bytes:
    """A `frames`-frame video at `fps` in `container` (a key of CONTAINERS), as bytes: its first
    frame at `start_s` (MPEG-TS style offsets), a keyframe every `gop` frames, with `audio` as long
    as the video (or `audio_s`)."""
    import av

    fmt, codec = CONTAINERS[container]
    buf = io.BytesIO()
    with av.open(buf, mode="w", format=fmt) as out:
        stream = out.add_stream(codec, rate=fps)
        stream.width, stream.height = size
        stream.pix_fmt = "yuv420p"
        if codec == "libx264":
            stream.options = {"g": str(gop), "keyint_min": str(gop), "sc_threshold": "0", "crf": "18"}
        else:
            stream.codec_context.gop_size = gop
        sound = out.add_stream("aac", rate=8000) if audio or audio_s else None
        for i in range(frames):
            pixels = np.zeros((size[1], size[0], 3), dtype=np.uint8)
            pixels[..., 0] = min(255, STEP * i)
            pixels[..., 1] = 128
            frame = av.VideoFrame.from_ndarray(pixels, format="rgb24")
            frame.pts = i + round(start_s * fps)
            frame.time_base = Fraction(1, fps)
            for packet in stream.encode(frame):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
        if sound is not None:
            _add_tone(out, sound, audio_s if audio_s is not None else frames / fps)
    return buf.getvalue()


def _add_tone(out, stream, seconds: float) -> None:
    import av

    rate = stream.rate
    samples = int(rate * seconds)
    tone = (0.2 * np.sin(2 * np.pi * 440 * np.arange(samples) / rate)).astype(np.float32)
    for start in range(0, samples, 1024):
        chunk = tone[start:start + 1024]
        frame = av.AudioFrame.from_ndarray(chunk.reshape(1, -1), format="fltp", layout="mono")
        frame.rate = rate
        frame.pts = start
        for packet in stream.encode(frame):
            out.mux(packet)
    for packet in stream.encode():
        out.mux(packet)


def make_audio(seconds: float = 1.0) -> bytes:
    """An audio-only MP4 (AAC)."""
    import av

    buf = io.BytesIO()
    with av.open(buf, mode="w", format="mp4") as out:
        _add_tone(out, out.add_stream("aac", rate=8000), seconds)
    return buf.getvalue()
