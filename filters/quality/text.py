"""InternVL 2.5 heuristic text rules: abnormal sentence lengths, long zero / number runs, too many
duplicate lines, and the n-gram repetition rule; plus the deterministic repetition measures of
Gopher / Data-Juicer (word and character n-gram repetition ratios, zlib compression ratio), each
with its own threshold. Pure functions over a string; no Beam, no I/O."""

from __future__ import annotations

import math
import re
import zlib
from collections import Counter
from dataclasses import dataclass

from curation.core.records import Verdict

_SENTENCE_END = re.compile(r"(?<=[.!?。！？])\s+|[\n\r]+|(?<=[。！？])")
_DIGITS = re.compile(r"\d+")
_ZEROS = re.compile(r"0+")
_CJK = re.compile(r"[\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uac00-\ud7af]")


@dataclass(frozen=True)
class HeuristicsConfig:
    """InternVL 2.5 rule-based filters on the caption (0 turns a rule off)."""

    enabled: bool = True  # run these rules on the caption (false: all off)
    min_mean_sentence_words: float = 1.0  # mean words per sentence at least (characters for unspaced CJK text)
    max_mean_sentence_words: float = 80.0  # mean words per sentence at most; else abnormal_sentence_length
    max_sentence_chars: int = 1000  # characters in the longest sentence at most (0: off): abnormal_sentence_length
    max_digit_run: int = 24  # a run of this many digits or more (long number sequences)
    max_zero_run: int = 8  # a run of this many zeros or more
    max_duplicate_line_fraction: float = 0.3  # over 3+ lines: share of lines that repeat an earlier one
    ngram: int = 10  # InternVL's 10-gram rule: words (characters for text without spaces)
    max_ngram_repeats: int = 2  # an n-gram seen more often than this is repetition
    # Data-Juicer's word_repetition_filter: share of word n-grams that occur more than once
    word_rep_ngram: int = 10
    max_word_rep_ratio: float = 0.0  # 0: off; Data-Juicer's default 0.5
    # Data-Juicer's character_repetition_filter: share of the top sqrt(K) repeated char n-grams
    char_rep_ngram: int = 10
    max_char_rep_ratio: float = 0.0  # 0: off; Data-Juicer's default 0.5
    # zlib compressed / raw bytes, for texts of at least `compression_min_bytes` (short texts do not compress)
    min_compression_ratio: float = 0.0  # 0: off
    compression_min_bytes: int = 200  # UTF-8 bytes a text needs before min_compression_ratio applies


def sentences(text: str) -> list[str]:
    return [s.strip() for s in _SENTENCE_END.split(text) if s and s.strip()]


def units(text: str) -> list[str]:
    """Words, or characters for text written without spaces (Chinese, Japanese)."""
    if _CJK.search(text) and len(text.split()) * 4 < len(text):
        return [c for c in text if not c.isspace()]
    return re.findall(r"\w+", text.lower())


def max_ngram_repeats(text: str, n: int) -> tuple[int, str]:
    """How often the most frequent n-gram of `units(text)` occurs, and that n-gram."""
    toks = units(text)
    if len(toks) < n:
        return 0, ""
    counts = Counter(tuple(toks[i:i + n]) for i in range(len(toks) - n + 1))
    gram, count = counts.most_common(1)[0]
    return count, " ".join(gram)


def word_repetition_ratio(text: str, n: int = 10) -> float:
    """Data-Juicer's word repetition ratio: occurrences of word n-grams seen more than once over
    all word n-grams (0 for texts shorter than n words)."""
    toks = units(text)
    counts = Counter(tuple(toks[i:i + n]) for i in range(len(toks) - n + 1))
    total = sum(counts.values())
    return sum(c for c in counts.values() if c > 1) / total if total else 0.0


def char_repetition_ratio(text: str, n: int = 10) -> float:
    """Data-Juicer's character repetition ratio: the frequencies of the top sqrt(K) char n-grams
    (only those seen more than once) over all K n-gram occurrences."""
    counts = sorted(Counter(text[i:i + n] for i in range(len(text) - n + 1)).values(), reverse=True)
    total = sum(counts)
    if not total:
        return 0.0
    top = min(int(math.sqrt(len(counts))), sum(1 for c in counts if c > 1))
    return sum(counts[:top]) / total


def compression_ratio(text: str) -> float:
    """zlib-compressed size over UTF-8 size: low for repetitive text (about 1 for short text)."""
    raw = text.encode("utf-8", "surrogatepass")
    return len(zlib.compress(raw, 9)) / len(raw) if raw else 1.0


@dataclass(frozen=True)
class TextRules:
    """All heuristic rules of one HeuristicsConfig; the first that fires rejects."""

    cfg: HeuristicsConfig

    def __call__(self, text: str) -> Verdict:
        c = self.cfg
        if not c.enabled or not text.strip():
            return Verdict.keep()
        sents = sentences(text)
        if sents:
            mean_words = sum(len(units(s)) for s in sents) / len(sents)
            longest = max(len(s) for s in sents)
            if c.max_sentence_chars and longest > c.max_sentence_chars:
                return Verdict.reject("abnormal_sentence_length", f"a sentence of {longest} chars > {c.max_sentence_chars}")
            if not c.min_mean_sentence_words <= mean_words <= c.max_mean_sentence_words:
                return Verdict.reject("abnormal_sentence_length",
                                      f"mean {mean_words:.1f} words per sentence outside "
                                      f"[{c.min_mean_sentence_words:g}, {c.max_mean_sentence_words:g}]")
        if c.max_zero_run:
            run = max((len(m) for m in _ZEROS.findall(text)), default=0)
            if run >= c.max_zero_run:
                return Verdict.reject("long_number_run", f"{run} zeros in a row")
        if c.max_digit_run:
            run = max((len(m) for m in _DIGITS.findall(text)), default=0)
            if run >= c.max_digit_run:
                return Verdict.reject("long_number_run", f"{run} digits in a row")
        lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
        if c.max_duplicate_line_fraction and len(lines) >= 3:
            dup = len(lines) - len(set(lines))
            if dup / len(lines) > c.max_duplicate_line_fraction:
                return Verdict.reject("duplicate_lines", f"{dup} of {len(lines)} lines repeat an earlier one")
        if c.ngram and c.max_ngram_repeats:
            count, gram = max_ngram_repeats(text, c.ngram)
            if count > c.max_ngram_repeats:
                return Verdict.reject("repetitive_ngrams", f"{c.ngram}-gram seen {count} times: {gram[:80]!r}")
        if c.max_word_rep_ratio:
            ratio = word_repetition_ratio(text, c.word_rep_ngram)
            if ratio > c.max_word_rep_ratio:
                return Verdict.reject("repetitive_words", f"word {c.word_rep_ngram}-gram repetition {ratio:.2f} > "
                                                          f"{c.max_word_rep_ratio:g}")
        if c.max_char_rep_ratio:
            ratio = char_repetition_ratio(text, c.char_rep_ngram)
            if ratio > c.max_char_rep_ratio:
                return Verdict.reject("repetitive_chars", f"char {c.char_rep_ngram}-gram repetition {ratio:.2f} > "
                                                          f"{c.max_char_rep_ratio:g}")
        if c.min_compression_ratio and len(text.encode("utf-8", "surrogatepass")) >= c.compression_min_bytes:
            ratio = compression_ratio(text)
            if ratio < c.min_compression_ratio:
                return Verdict.reject("low_compression_ratio", f"compresses to {ratio:.2f} < {c.min_compression_ratio:g}")
        return Verdict.keep()
