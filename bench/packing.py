"""Packing quality and speed on the issue's seeded synthetic stream; one JSON line per limit pair.

rng = default_rng(1234); text = rint(lognormal(log 600, 0.5, 20000)), min 8; tiles = integers(1, 14);
tokens = text + 256 * tiles + 2. Lower bound = max(ceil(sum tokens / l_max), ceil(sum tiles / t_max)).

    python bench/packing.py [--buffer 512] [--offline]
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from packing.packer import Item, Oversized, lower_bound, pack_stream  # noqa: E402

LIMITS = ((8192, 40), (16384, 48), (32768, 96))


def stream(n: int = 20000, seed: int = 1234) -> list[Item[int]]:
    rng = np.random.default_rng(seed)
    text = np.maximum(np.rint(rng.lognormal(math.log(600), 0.5, n)), 8).astype(int)
    tiles = rng.integers(1, 14, n)
    tokens = text + 256 * tiles + 2
    return [Item(i, int(t), int(k)) for i, (t, k) in enumerate(zip(tokens, tiles))]


def measure(items, l_max: int, t_max: int, buffer: int | None, repeats: int = 3) -> dict:
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = list(pack_stream(items, l_max, t_max, buffer))
        best = min(best, time.perf_counter() - t0)
    packs = [p for p in out if not isinstance(p, Oversized)]
    assert sum(len(p.items) for p in packs) + sum(isinstance(p, Oversized) for p in out) == len(items)
    assert all(p.tokens <= l_max and p.tiles <= t_max for p in packs)
    bound = lower_bound(items, l_max, t_max)
    return {
        "l_max": l_max, "t_max": t_max, "buffer": buffer if buffer is not None else "offline", "packs": len(packs),
        "lower_bound": bound, "over_bound_pct": round(100.0 * (len(packs) - bound) / bound, 2),
        "token_fill": round(sum(p.tokens for p in packs) / (len(packs) * l_max), 4),
        "samples_per_s": round(len(items) / best),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--buffer", type=int, default=256)
    ap.add_argument("--offline", action="store_true", help="pack the whole stream at once (best-fit decreasing)")
    args = ap.parse_args()
    items = stream()
    for l_max, t_max in LIMITS:
        print(json.dumps(measure(items, l_max, t_max, None if args.offline else args.buffer)))


if __name__ == "__main__":
    main()
