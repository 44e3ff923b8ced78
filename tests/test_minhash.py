"""Batch MinHash: bit-identical to datasketch, LSH parameters as datasketch picks them, band keys."""

import random

import numpy as np
from datasketch import MinHash
from datasketch.lsh import _optimal_param

from filters.dedup.minhash import EMPTY, MinHasher, band_keys, jaccard, lsh_params, normalize_caption, shingles

WORDS = "red blue green circle square photo of a the on white black background large small cat dog park".split()


def captions(n, seed=0):
    rng = random.Random(seed)
    return [" ".join(rng.choice(WORDS) for _ in range(rng.randint(1, 25))) for _ in range(n)]


def test_signatures_equal_datasketch_word_and_char_shingles():
    for kind, n, num_perm in (("word", 3, 128), ("char", 5, 64)):
        docs = [shingles(c, kind, n) for c in captions(300)] + [set()]
        sigs = MinHasher(num_perm, seed=7).signatures(docs, max_shingles=500)  # many chunks
        assert np.array_equal(sigs, MinHasher(num_perm, seed=7).signatures(docs, max_shingles=1))  # one doc each
        for doc, sig in zip(docs, sigs):
            ref = MinHash(num_perm=num_perm, seed=7)
            ref.update_batch(sorted(doc))
            assert np.array_equal(sig, ref.hashvalues)
    assert (sigs[-1] == EMPTY).all()


def test_normalisation_removes_case_and_punctuation_edits():
    assert normalize_caption("  A Red, CIRCLE!\n on   white. ") == "a red circle on white"
    assert shingles("A red circle!", "word", 3) == shingles("a RED circle", "word", 3) == {b"a red circle"}
    assert shingles("hi", "word", 3) == {b"hi"} and shingles("", "word", 3) == set()


def test_lsh_params_match_datasketch():
    for threshold, num_perm in ((0.8, 128), (0.5, 128), (0.9, 256)):
        assert lsh_params(threshold, num_perm) == _optimal_param(threshold, num_perm, 0.5, 0.5)


def test_band_keys_collide_for_near_duplicates_not_for_strangers():
    base = "a large red circle on a white background next to a small blue square in the park"
    near = base.replace("small", "tiny")
    other = "a black cat sleeping on a green sofa in the afternoon sun by the window"
    hasher = MinHasher(128)
    a, b, c = hasher.signatures([shingles(t) for t in (base, near, other)])
    bands, rows = lsh_params(0.5, 128)
    assert jaccard(shingles(base), shingles(near)) > 0.6
    assert set(band_keys(a, bands, rows)) & set(band_keys(b, bands, rows))
    assert not set(band_keys(a, bands, rows)) & set(band_keys(c, bands, rows))
    # the estimate tracks the true Jaccard
    assert abs(float(np.mean(a == b)) - jaccard(shingles(base), shingles(near))) < 0.15
