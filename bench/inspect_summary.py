"""`curate inspect summary` speed: a pair-shard folder of --samples kept samples (blank images, planted
captions and scores), then the summary over it, timed. One JSON line.

    python bench/inspect_summary.py [--samples 100000]
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from curation.core.shardset import ShardSet  # noqa: E402
from curation.inspection.summary import summarize  # noqa: E402
from curation.inspection.validate import validate  # noqa: E402
from curation.samples.dups import Planted, write_pair_folder  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--samples", type=int, default=100_000)
    ap.add_argument("--per-shard", type=int, default=10_000)
    args = ap.parse_args()
    rng = random.Random(0)
    recs = [Planted(f"s{i:07d}", f"caption {i} " + "word " * rng.randint(1, 30), i) for i in range(args.samples)]
    scores = {r.uid: rng.random() for r in recs}
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        folder = write_pair_folder(Path(tmp) / "pairs", recs, samples_per_shard=args.per_shard, scores=scores)
        build = time.perf_counter() - t0
        t0 = time.perf_counter()
        doc = summarize(ShardSet.open(str(folder)))
        summary_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        problems = validate(ShardSet.open(str(folder)))
        validate_s = time.perf_counter() - t0
    assert doc["kept"] == args.samples and not problems
    print(json.dumps({"samples": args.samples, "shards": doc["shards"], "summary_s": round(summary_s, 2),
                      "validate_s": round(validate_s, 2), "build_s": round(build, 1)}))


if __name__ == "__main__":
    main()
