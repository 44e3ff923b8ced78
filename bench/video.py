"""Video frame sampling throughput (curation/ingest/video.py, PyAV): decode + choose + JPEG-encode,
one process, on videos made here with PyAV (`--videos` clips of `--seconds` s at `--fps` and
`--size`, H.264 with a keyframe every second, a moving gradient so the encoder has work). One JSON
line per sampling mode: `videos_per_s`, `frames_per_s` (frames decoded per second: the decode
cost), `stored_frames_per_s` (frames kept and encoded) and `ms_per_video`.

    python bench/video.py --videos 12 --seconds 10 --fps 30 --size 640x360
"""

from __future__ import annotations

import argparse
import io
import json
import os
import sys
import time
from fractions import Fraction
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def clip(seconds: int, fps: int, width: int, height: int, seed: int) -> bytes:
    import av

    rng = np.random.default_rng(seed)
    buf = io.BytesIO()
    x = np.linspace(0, 255, width, dtype=np.float32)[None, :]
    y = np.linspace(0, 255, height, dtype=np.float32)[:, None]
    with av.open(buf, mode="w", format="mp4") as out:
        stream = out.add_stream("libx264", rate=fps)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        stream.options = {"g": str(fps), "preset": "veryfast", "crf": "23"}
        phase = rng.uniform(0, 255)
        for i in range(seconds * fps):
            r = (x + 3 * i + phase) % 256
            g = (y + 2 * i) % 256
            b = ((x + y) / 2 + i) % 256
            pixels = np.stack(np.broadcast_arrays(r, g, b), axis=-1).astype(np.uint8)
            frame = av.VideoFrame.from_ndarray(pixels, format="rgb24")
            frame.pts, frame.time_base = i, Fraction(1, fps)
            for packet in stream.encode(frame):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    return buf.getvalue()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--videos", type=int, default=12)
    ap.add_argument("--seconds", type=int, default=10)
    ap.add_argument("--fps", type=int, default=30)
    ap.add_argument("--size", default="640x360")
    args = ap.parse_args()
    width, height = map(int, args.size.split("x"))

    from curation.ingest.video import VideoConfig, sample_frames

    videos = [clip(args.seconds, args.fps, width, height, seed) for seed in range(args.videos)]
    modes = {"uniform_8": VideoConfig(num_segments=8), "uniform_32": VideoConfig(num_segments=32),
             "fps_1": VideoConfig(sampling="fps", fps=1.0), "keyframes": VideoConfig(sampling="keyframes")}
    sample_frames(videos[0], modes["uniform_8"])  # warm
    for name, cfg in modes.items():
        t0 = time.perf_counter()
        results = [sample_frames(v, cfg) for v in videos]
        s = time.perf_counter() - t0
        bad = [r for r in results if hasattr(r, "reason")]
        if bad:
            raise SystemExit(f"{name}: {bad[0]}")
        decoded = sum(r.decoded for r in results)
        stored = sum(len(r.jpegs) for r in results)
        print(json.dumps({"bench": "video", "mode": name, "videos": len(videos), "seconds_each": args.seconds,
                          "fps": args.fps, "size": args.size, "videos_per_s": round(len(videos) / s, 2),
                          "frames_per_s": round(decoded / s, 1), "stored_frames_per_s": round(stored / s, 1),
                          "frames_decoded": decoded, "frames_stored": stored, "ms_per_video": round(1000 * s / len(videos), 1),
                          "mb_per_video": round(sum(map(len, videos)) / len(videos) / 2**20, 2), "cores": os.cpu_count(),
                          "threads": 1}), flush=True)


if __name__ == "__main__":
    main()
