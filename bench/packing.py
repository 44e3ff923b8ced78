"""Packing quality and speed: our streaming packer against two-limit FFD and InternVL's own packer.

One JSON line per (stream, l_max, t_max): three seeded streams (packing/measure.py: the issue's
stream, 70/30 captions and documents, multi-image samples tiled by InternVL's rule) at 8192/40,
16384/48, 32768/96. Per packer: packs, overhead over the lower bound in percent, samples/s of
planning (20,000 samples; CPU time of this process, best of `--repeats`, so a shared machine's load
inflates it less than wall time would). The bound is max(ceil(sum tokens / l_max), ceil(sum tiles /
t_max), Martello-Toth L2 on either); `bound_gain` is what L2 adds over the first two.

- `ours`: packing.packer.GreedyPacker, streaming, `--buffer` items (default 256, as configs/pack.yaml);
- `ffd`: offline two-limit first-fit decreasing, sorted by max(tokens / l_max, tiles / t_max);
- `internvl`: InternVL 2.5's PackedDataset loop (max_buffer_size 20) on the same item records,
  without its tensor concatenation, so its samples/s is far above what it runs at in InternVL.

    python bench/packing.py [--buffer 512] [--offline] [--stream multi_image] [--repeats 3]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Callable

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from packing.measure import STREAMS, first_fit_decreasing, internvl_reference, strong_lower_bound  # noqa: E402
from packing.packer import Item, Oversized, Pack, lower_bound, pack_stream  # noqa: E402

LIMITS = ((8192, 40), (16384, 48), (32768, 96))


def run(plan: Callable[[], list], items: list[Item], l_max: int, t_max: int, bound: int, repeats: int) -> dict:
    """Plan `repeats` times (best CPU time), check limits and that every item lands once, score it."""
    best = float("inf")
    for _ in range(repeats):
        t0 = time.process_time()
        out = plan()
        best = min(best, time.process_time() - t0)
    packs = [p for p in out if isinstance(p, Pack)]
    assert not any(isinstance(p, Oversized) for p in out), "the streams are built within the limits"
    assert all(p.tokens <= l_max and p.tiles <= t_max for p in packs)
    assert sorted(i.key for p in packs for i in p.items) == sorted(i.key for i in items)
    return {"packs": len(packs), "over_bound_pct": round(100.0 * (len(packs) - bound) / bound, 2),
            "samples_per_s": round(len(items) / best)}


def measure(stream: str, items: list[Item], l_max: int, t_max: int, buffer: int | None, repeats: int) -> dict:
    bound = strong_lower_bound(items, l_max, t_max)
    row: dict = {"stream": stream, "l_max": l_max, "t_max": t_max, "samples": len(items),
                 "buffer": buffer if buffer is not None else "offline", "lower_bound": bound,
                 "bound_gain": bound - lower_bound(items, l_max, t_max)}
    for name, plan in (("ours", lambda: list(pack_stream(items, l_max, t_max, buffer))),
                       ("ffd", lambda: first_fit_decreasing(items, l_max, t_max)),
                       ("internvl", lambda: internvl_reference(items, l_max, t_max))):
        for k, v in run(plan, items, l_max, t_max, bound, repeats).items():
            row[f"{name}_{k}"] = v
    row["goal_met"] = row["ours_over_bound_pct"] <= 2.0 and row["ours_samples_per_s"] >= 100_000
    row["load_avg_1m"] = round(os.getloadavg()[0], 2)
    return row


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--buffer", type=int, default=256)
    ap.add_argument("--offline", action="store_true", help="our packer over the whole stream at once (no buffer bound)")
    ap.add_argument("--stream", choices=sorted(STREAMS), action="append", help="default: all three")
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    for stream in args.stream or list(STREAMS):
        items = STREAMS[stream]()
        for l_max, t_max in LIMITS:
            print(json.dumps(measure(stream, items, l_max, t_max, None if args.offline else args.buffer, args.repeats)),
                  flush=True)


if __name__ == "__main__":
    main()
