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
from typing import Any, Iterable

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
    # an n-gram (or short text) found in more eval rows than this is the benchmark's template wording
    # ("Which of the following statements is true?"), not a question: it is not matched
    max_gram_rows: int = 20

    def __post_init__(self) -> None:
        if self.ngram < 3 or not 1 <= self.min_words <= self.ngram:
            raise ConfigError("decontamination: ngram >= 3 and 1 <= min_words <= ngram")
        if not -1 <= self.phash_bits <= 32:
            raise ConfigError("decontamination.phash_bits: -1 (off) to 32")
        if self.max_gram_rows < 1:
            raise ConfigError("decontamination.max_gram_rows: at least 1")

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
    counts: dict[str, dict[str, int]] = field(default_factory=dict)  # per set: rows, texts, images, unusable
    templates: int = 0  # n-grams dropped as template wording (in more than max_gram_rows eval rows)
    _hashes: list[int] = field(default_factory=list)
    _sources: list[int] = field(default_factory=list)
    _rows: dict[int, set[tuple[int, int]]] = field(default_factory=dict)  # gram -> the eval rows holding it
    _array: Any = None

    def add_text(self, text: str, source: int, row: int = 0) -> None:
        toks = words(text)
        n = self.cfg.ngram
        keys = []
        if len(toks) >= n:
            keys = [_key(toks[i:i + n]) for i in range(len(toks) - n + 1)]
        elif len(toks) >= self.cfg.min_words:
            keys = [_key(toks)]
            self.lengths.add(len(toks))
        for key in keys:
            self.grams.setdefault(key, source)
            rows = self._rows.setdefault(key, set())
            if len(rows) <= self.cfg.max_gram_rows:
                rows.add((source, row))

    def drop_templates(self) -> None:
        """Forget the n-grams more than `max_gram_rows` eval rows share (a benchmark's fixed wording)."""
        common = [key for key, rows in self._rows.items() if len(rows) > self.cfg.max_gram_rows]
        for key in common:
            del self.grams[key]
        self.templates = len(common)
        self._rows = {}

    def add_image(self, phash_hex: str, source: int) -> None:
        if self.cfg.phash_bits >= 0:
            self._hashes.append(int(phash_hex, 16))
            self._sources.append(source)
            self._array = None

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
        """The nearest eval image within phash_bits ('pHash N bits from an image of FILE'), or None
        (one vectorised XOR and popcount over every eval image)."""
        import numpy as np

        if not phash_hex or self.cfg.phash_bits < 0 or not self._hashes:
            return None
        if self._array is None:
            self._array = np.array(self._hashes, dtype=np.uint64)
        bits = np.bitwise_count(self._array ^ np.uint64(int(phash_hex, 16)))
        nearest = int(bits.argmin())
        if int(bits[nearest]) > self.cfg.phash_bits:
            return None
        return f"pHash {int(bits[nearest])} bits from an image of {self.names[self._sources[nearest]]}"

    def hit(self, texts: Iterable[str | None], phashes: Iterable[str | None] = ()) -> str | None:
        """The first contamination among a row's texts, then its images, or None."""
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
                "phash_bits": self.cfg.phash_bits, "grams": len(self.grams), "template_grams_dropped": self.templates,
                "images": len(self._hashes)}
