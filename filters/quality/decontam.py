"""Benchmark decontamination: a training text that shares a long word n-gram with an eval set's
question, answer or option (13 words by default, as GPT-3 and most decontamination since), or a
training image within `phash_bits` of an eval image's pHash, is rejected `eval_contaminated`,
naming the benchmark file and what matched. An eval text shorter than `ngram` words (most VQA
questions are) is matched whole when it has at least `min_words` words.

This module is the matching; the index is built from the benchmarks' own files by
curation/mmpr/eval_sets.py, with the readers `curate mmpr` already has."""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field
from typing import Iterable

from curation.core.config import ConfigError

_WORD = re.compile(r"\w+", re.UNICODE)


@dataclass(frozen=True)
class DecontamConfig:
    """Eval sets whose questions, answers, options and images may not reach training data."""

    # benchmark files or globs (local or fsspec URLs), in any schema `curate mmpr` reads: MMPR rows,
    # ScienceQA, A-OKVQA, ChartQA, DocVQA parquet, MathVista jsonl; empty: no decontamination
    eval_sets: list[str] = field(default_factory=list)
    ngram: int = 13  # words an n-gram shared with an eval text must have
    min_words: int = 8  # an eval text shorter than ngram is matched whole from this many words
    phash_bits: int = 4  # an image within this many bits of an eval image's pHash; -1: texts only
    image_root: str | None = None  # where eval rows' relative image paths live; null: each file's folder

    def __post_init__(self) -> None:
        if self.ngram < 3 or not 1 <= self.min_words <= self.ngram:
            raise ConfigError("decontamination: ngram >= 3 and 1 <= min_words <= ngram")
        if not -1 <= self.phash_bits <= 32:
            raise ConfigError("decontamination.phash_bits: -1 (off) to 32")

    @property
    def enabled(self) -> bool:
        return bool(self.eval_sets)


def words(text: str) -> list[str]:
    """Lower-cased word tokens: case, punctuation and spacing never hide a copy."""
    return _WORD.findall(text.lower())


def _key(tokens: Iterable[str]) -> int:
    return int.from_bytes(hashlib.blake2b(" ".join(tokens).encode(), digest_size=8).digest(), "big")


@dataclass
class EvalIndex:
    """The eval sets' n-grams (64-bit hashes -> the set they came from) and image pHashes."""

    cfg: DecontamConfig
    names: list[str] = field(default_factory=list)  # eval set files, by position
    grams: dict[int, int] = field(default_factory=dict)  # n-gram (or whole short text) hash -> set
    lengths: set[int] = field(default_factory=set)  # word counts of the whole short texts indexed
    phashes: list[tuple[int, int]] = field(default_factory=list)  # (pHash, set)
    counts: dict[str, dict[str, int]] = field(default_factory=dict)  # per set: rows, texts, images

    def add_text(self, text: str, source: int) -> None:
        toks = words(text)
        n = self.cfg.ngram
        if len(toks) >= n:
            for i in range(len(toks) - n + 1):
                self.grams.setdefault(_key(toks[i:i + n]), source)
        elif len(toks) >= self.cfg.min_words:
            self.grams.setdefault(_key(toks), source)
            self.lengths.add(len(toks))

    def add_image(self, phash_hex: str, source: int) -> None:
        if self.cfg.phash_bits >= 0:
            self.phashes.append((int(phash_hex, 16), source))

    def text_hit(self, text: str) -> str | None:
        """What of `text` an eval set holds ('13-gram "..." of FILE'), or None."""
        toks = words(text)
        for n in (self.cfg.ngram, *sorted(self.lengths, reverse=True)):
            for i in range(len(toks) - n + 1):
                source = self.grams.get(_key(toks[i:i + n]))
                if source is not None:
                    return f'{n}-gram "{" ".join(toks[i:i + n])[:120]}" of {self.names[source]}'
        return None

    def image_hit(self, phash_hex: str | None) -> str | None:
        """The nearest eval image within phash_bits ('pHash N bits from an image of FILE'), or None."""
        if not phash_hex or self.cfg.phash_bits < 0 or not self.phashes:
            return None
        value = int(phash_hex, 16)
        bits, source = min(((value ^ h).bit_count(), s) for h, s in self.phashes)
        return f"pHash {bits} bits from an image of {self.names[source]}" if bits <= self.cfg.phash_bits else None

    def hit(self, texts: Iterable[str | None], phashes: Iterable[str | None] = ()) -> str | None:
        """The first contamination among a row's texts and images, or None."""
        for text in texts:
            found = self.text_hit(text) if text else None
            if found:
                return found
        for h in phashes:
            found = self.image_hit(h)
            if found:
                return found
        return None

    def summary(self) -> dict[str, object]:
        """What the index holds, for `_index.json`."""
        return {"eval_sets": self.counts, "ngram": self.cfg.ngram, "min_words": self.cfg.min_words,
                "phash_bits": self.cfg.phash_bits, "grams": len(self.grams), "images": len(self.phashes)}
