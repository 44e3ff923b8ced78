"""Batch MinHash signatures for captions, bit-identical to datasketch's default (scheme affine32).

datasketch hashes each shingle with SHA1 (first 4 bytes, little-endian), pre-mixes it with the
MurmurHash3 32-bit finalizer and applies num_perm affine maps `a*h + b mod 2^32` (odd `a`), keeping
the minimum per map - one document at a time, with numpy calls per document. Here the shingles of a
whole batch are hashed into one array and the permutations run once over it, with the per-document
minimum taken by `np.minimum.reduceat`. Same permutations (RandomState(seed)), so signatures can be
mixed with datasketch's `MinHash(hashvalues=..., scheme="affine32")` and its LSH.
"""

from __future__ import annotations

import hashlib
import re
import unicodedata
from dataclasses import dataclass
from typing import Iterable, Literal, Sequence

import numpy as np

_PUNCT = re.compile(r"[^\w\s]", re.UNICODE)
_SPACE = re.compile(r"\s+")
EMPTY = np.uint32(0xFFFFFFFF)  # datasketch's "no shingle seen" value


def normalize_caption(text: str) -> str:
    """NFKC, lower case, punctuation dropped, whitespace collapsed: case and punctuation edits vanish."""
    text = unicodedata.normalize("NFKC", text).lower()
    return _SPACE.sub(" ", _PUNCT.sub(" ", text)).strip()


def shingles(text: str, kind: Literal["word", "char"] = "word", n: int = 3) -> set[bytes]:
    """Word or character n-grams of the normalised caption; a text shorter than n is one shingle."""
    norm = normalize_caption(text)
    if not norm:
        return set()
    if kind == "word":
        words = norm.split(" ")
        grams = [" ".join(words[i:i + n]) for i in range(max(1, len(words) - n + 1))]
    else:
        grams = [norm[i:i + n] for i in range(max(1, len(norm) - n + 1))]
    return {g.encode("utf-8") for g in grams}


def _fmix32(h: np.ndarray) -> np.ndarray:
    h = h ^ (h >> np.uint32(16))
    h = h * np.uint32(0x85EBCA6B)
    h = h ^ (h >> np.uint32(13))
    h = h * np.uint32(0xC2B2AE35)
    return h ^ (h >> np.uint32(16))


@dataclass(frozen=True)
class MinHasher:
    """Signatures for batches of shingle sets; `num_perm` and `seed` as datasketch's MinHash."""

    num_perm: int = 128
    seed: int = 1

    def __post_init__(self) -> None:
        gen = np.random.RandomState(self.seed)
        a = gen.randint(0, 1 << 31, self.num_perm, dtype=np.uint32) * np.uint32(2) + np.uint32(1)
        b = gen.randint(0, 1 << 32, self.num_perm, dtype=np.uint32)
        object.__setattr__(self, "_a", a)
        object.__setattr__(self, "_b", b)

    def signatures(self, docs: Sequence[Iterable[bytes]], max_shingles: int = 1 << 12) -> np.ndarray:
        """(len(docs), num_perm) uint32; an empty shingle set gets all-EMPTY. Documents are hashed
        in chunks of about `max_shingles` shingles: the (num_perm, shingles) work array stays near
        num_perm x 16 KiB whatever the batch (2 MiB at 128 permutations: it stays in cache, which
        measured 25% faster than 32 MiB chunks in bench/dedup.py)."""
        out = np.full((len(docs), self.num_perm), EMPTY, dtype=np.uint32)
        sha1 = hashlib.sha1
        digests: list[bytes] = []
        starts: list[int] = []
        rows: list[int] = []
        for i, doc in enumerate(docs):
            before = len(digests)
            digests.extend([sha1(s).digest()[:4] for s in doc])
            if len(digests) > before:
                starts.append(before)
                rows.append(i)
            if len(digests) >= max_shingles or i == len(docs) - 1:
                if digests:
                    self._fill(out, digests, starts, rows)
                digests, starts, rows = [], [], []
        return out

    def _fill(self, out: np.ndarray, digests: list[bytes], starts: list[int], rows: list[int]) -> None:
        hv = _fmix32(np.frombuffer(b"".join(digests), dtype="<u4").astype(np.uint32))
        # (num_perm, shingles) layout: each permutation's row is contiguous, so the segmented
        # minimum runs along memory; uint32 wraparound is the mod 2^32.
        phv = np.empty((self.num_perm, len(hv)), dtype=np.uint32)
        np.multiply(self._a[:, None], hv[None, :], out=phv)
        np.add(phv, self._b[:, None], out=phv)
        out[rows] = np.minimum.reduceat(phv, np.asarray(starts), axis=1).T


def jaccard(a: set, b: set) -> float:
    return len(a & b) / len(a | b) if a or b else 1.0


def lsh_params(threshold: float, num_perm: int, fp_weight: float = 0.5, fn_weight: float = 0.5) -> tuple[int, int]:
    """(bands, rows) with bands*rows <= num_perm minimising the weighted false-positive and
    false-negative areas of the S-curve 1 - (1 - s^r)^b around `threshold` (datasketch's rule)."""
    if not 0.0 < threshold < 1.0:
        raise ValueError("threshold must be in (0, 1)")
    lo = np.linspace(0.0, threshold, 201)
    hi = np.linspace(threshold, 1.0, 201)
    best, best_err = (1, num_perm), float("inf")
    for b in range(1, num_perm + 1):
        for r in range(1, num_perm // b + 1):
            fp = np.trapezoid(1 - (1 - lo ** r) ** b, lo)
            fn = np.trapezoid(1 - (1 - (1 - hi ** r) ** b), hi)
            err = fp_weight * fp + fn_weight * fn
            if err < best_err:
                best, best_err = (b, r), err
    return best


def band_keys(signature: np.ndarray, bands: int, rows: int) -> list[bytes]:
    """One bucket key per band: a 12-byte digest of the band index and its rows (equal keys =
    candidate pair). Every row sits in every band's shuffle, so the key is kept short; a chance
    collision only adds a stranger to a bucket, which verification drops."""
    sig = np.ascontiguousarray(signature[: bands * rows], dtype="<u4").reshape(bands, rows)
    return [hashlib.blake2b(sig[i].tobytes(), digest_size=12, salt=i.to_bytes(2, "little")).digest()
            for i in range(bands)]
