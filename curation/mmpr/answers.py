"""Answer extraction and checkers for MMPR correctness pairs: find the final answer in a chain of
thought ("Final Answer:" or `\\boxed{}`), check its format, and compare it with the ground truth by
answer type - exact match after normalisation, multiple-choice letter, number with tolerance,
VQA score, ANLS and relaxed accuracy. Pure functions; no model, no Beam.

ANLS here is the metric as defined (1 - normalised edit distance, kept when at least the threshold,
0.5): a near miss scores high, a far miss scores 0. InternVL's script computes it inverted.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass
from typing import Literal, Sequence

AnswerType = Literal["exact", "multiple_choice", "number", "vqa", "anls", "relaxed"]

_FINAL = re.compile(r"final\s+answer\s*[:：]", re.I)


@dataclass(frozen=True, slots=True)
class Extracted:
    """The answer found in a response, and whether the response has the required shape."""

    answer: str | None
    format_ok: bool
    problem: str = ""  # why the format is not ok


def _boxed(text: str) -> str | None:
    """Content of the last `\\boxed{...}`, braces balanced."""
    start = text.rfind("\\boxed{")
    if start < 0:
        return None
    i, depth, out = start + len("\\boxed{"), 1, []
    while i < len(text):
        c = text[i]
        depth += c == "{"
        depth -= c == "}"
        if depth == 0:
            return "".join(out).strip()
        out.append(c)
        i += 1
    return None


def extract_answer(response: str, style: Literal["final_answer", "boxed"] = "final_answer") -> Extracted:
    """The last final answer in `response`. Format: a rationale before it and a one-line answer."""
    text = response.strip()
    if not text:
        return Extracted(None, False, "empty response")
    if style == "boxed":
        answer = _boxed(text)
        if answer is None:
            return Extracted(None, False, "no \\boxed{} answer")
        rationale = text[: text.rfind("\\boxed{")].strip()
    else:
        matches = list(_FINAL.finditer(text))
        if not matches:
            return Extracted(None, False, "no 'Final Answer:'")
        last = matches[-1]
        rationale = text[: last.start()].strip()
        tail = text[last.end():].strip()
        lines = [ln.strip() for ln in tail.splitlines() if ln.strip()]
        answer = lines[0] if lines else ""
        if not answer:
            return Extracted(None, False, "empty final answer")
        if len(lines) > 1:
            return Extracted(answer, False, "final answer spans several lines")
    if not answer:
        return Extracted(None, False, "empty final answer")
    if not rationale:
        return Extracted(answer, False, "no reasoning before the final answer")
    return Extracted(answer, True)


# ---------------------------------------------------------------------------------------------
# Normalisation

_ARTICLES = re.compile(r"\b(a|an|the)\b")
_PUNCT = re.compile(r"[^\w\s.%-]|(?<!\d)\.(?!\d)")
_NUMBER_WORDS = {w: str(i) for i, w in enumerate(
    "zero one two three four five six seven eight nine ten eleven twelve".split())}


def normalize(text: str) -> str:
    """NFKC, lower case, articles, punctuation (not decimal points) and extra spaces dropped,
    number words to digits: the VQA-style normal form."""
    t = unicodedata.normalize("NFKC", text).lower().strip()
    t = t.removesuffix(".")
    t = _PUNCT.sub(" ", t)
    t = _ARTICLES.sub(" ", t)
    words = [_NUMBER_WORDS.get(w, w) for w in t.split()]
    return " ".join(words)


_NUM = re.compile(r"[-+−]?\d[\d,]*(?:\.\d+)?(?:e[-+]?\d+)?|[-+−]?\.\d+")
_FRAC = re.compile(r"\\d?frac\s*\{\s*([-+]?[\d.]+)\s*\}\s*\{\s*([-+]?[\d.]+)\s*\}|(?<![\d/.])([-+]?\d+(?:\.\d+)?)\s*/\s*(\d+(?:\.\d+)?)(?![\d/])")
_MARKUP = re.compile(r"\*\*|__|`|\\text\{|\\mathrm\{|\\textbf\{|\$")


def strip_markup(text: str) -> str:
    """An answer without markdown emphasis, code ticks, `$` math delimiters and LaTeX text wrappers."""
    t = _MARKUP.sub("", text)
    return t.replace("\\%", "%").replace("\\,", "").replace("{", "").replace("}", "").strip() if "\\" in text else t.strip()


def _fractions(text: str) -> str:
    """`3/4` and `\\frac{3}{4}` as the decimal they stand for (a date like 3/4/2020 is left alone)."""
    def value(m: re.Match) -> str:
        num, den = (m.group(1), m.group(2)) if m.group(1) is not None else (m.group(3), m.group(4))
        try:
            return repr(float(num) / float(den)) if float(den) else m.group(0)
        except ValueError:
            return m.group(0)
    return _FRAC.sub(value, text)


def parse_number(text: str) -> float | None:
    """The single number in `text` ("1,234.5 kg", "$12", "45%", "-3", "3/4", "\\frac{3}{4}",
    "**12**"), percent kept as written (45% -> 45); None when there is no number or more than one."""
    t = unicodedata.normalize("NFKC", _fractions(text)).lower().replace("−", "-")
    t = _MARKUP.sub("", t)
    t = " ".join(_NUMBER_WORDS.get(w, w) for w in re.findall(r"[\w.,%$+-]+", t))
    found = _NUM.findall(t)
    if len(found) != 1:
        return None
    raw = found[0].replace(",", "")
    try:
        return float(raw)
    except ValueError:
        return None


# A letter that stands alone as the answer: "B", "(B)", "B.", "B)", "B: 12", "(b)", "b)" (a bare
# lower-case letter only with a bracket or alone: "a dog" is an article, not option A).
_LONE_LETTER = re.compile(r"\(\s*([A-Za-z])\s*\)(?:[.:]?\s.*)?|([A-Z])(?:[.:)](?:\s.*)?|\s+[-–:]\s.*)?|([a-z])(?:\)(?:\s.*)?)?", re.S)
# "answer is (B)", "answer: B", "Option C", "choice (d)", "option B is correct"
# (keywords in any case; the letter itself upper case, or lower case only bracketed or at the end)
_NAMED_LETTER = re.compile(r"\b(?i:answer(?:\s+is)?|option|choice)\s*[:：]?\s*(?:\(\s*([A-Za-z])\s*\)|([A-Z])|([a-z])(?=\s*$|[.,;:)]))(?![\w])")


def choice_letter(text: str, options: Sequence[str] = ()) -> str | None:
    """A multiple-choice answer as its letter: "B", "(B)", "**B**", "B.", "b)", "B) 12", "Option (C)",
    "The answer is (B) 12", or the option's text itself when `options` are given. None when the
    answer names no option, or two different ones ("A or B"), or a letter past the options."""
    t = strip_markup(unicodedata.normalize("NFKC", text)).strip().rstrip(".").strip()
    letters: list[str] = []
    m = _LONE_LETTER.fullmatch(t)
    named = [(a or b or c).upper() for a, b, c in _NAMED_LETTER.findall(t)]
    bracketed = [x.upper() for x in re.findall(r"\(\s*([A-Za-z])\s*\)", t)]
    if m:  # "B) a cat": the letter, unless the rest names another option too ("(A) (C)")
        letters = [(m.group(1) or m.group(2) or m.group(3)).upper(), *named, *bracketed]
    else:
        letters = named or bracketed
    distinct = sorted(set(letters))
    if len(distinct) == 1:
        letter = distinct[0]
        if options and ord(letter) - ord("A") >= len(options):
            return None
        return letter
    if len(distinct) > 1:
        return None  # two options named: no single answer
    if options:
        norm = normalize(t)
        exact = [i for i, opt in enumerate(options) if norm and norm == normalize(opt)]
        if len(exact) == 1:
            return chr(ord("A") + exact[0])
        inside = [i for i, opt in enumerate(options) if normalize(opt) and re.search(rf"(?<!\w){re.escape(normalize(opt))}(?!\w)", norm)]
        if len(inside) == 1:  # "it is blue" for option "blue", but not "blue or red"
            return chr(ord("A") + inside[0])
    return None


def levenshtein(a: str, b: str) -> int:
    prev = list(range(len(b) + 1))
    for i, ca in enumerate(a, 1):
        cur = [i]
        for j, cb in enumerate(b, 1):
            cur.append(min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (ca != cb)))
        prev = cur
    return prev[-1]


def anls(prediction: str, truths: Sequence[str], threshold: float = 0.5) -> float:
    """Average normalised Levenshtein similarity for one question: the best over the ground truths
    of 1 - NL(pred, gt), counted only when NL < threshold (else 0)."""
    pred = " ".join(prediction.lower().split())
    best = 0.0
    for gt in truths:
        g = " ".join(gt.lower().split())
        if not g and not pred:
            return 1.0
        nl = levenshtein(pred, g) / max(len(pred), len(g))
        if nl < threshold:
            best = max(best, 1.0 - nl)
    return best


def vqa_score(prediction: str, truths: Sequence[str]) -> float:
    """VQA accuracy: min(1, matching annotator answers / 3) after normalisation."""
    pred = normalize(prediction)
    return min(1.0, sum(normalize(t) == pred for t in truths) / 3.0)


def relaxed_match(prediction: str, truth: str, tolerance: float = 0.05) -> bool:
    """ChartQA relaxed accuracy: numbers within 5% relative, anything else exact after normalisation."""
    p, t = parse_number(prediction), parse_number(truth)
    if p is not None and t is not None:
        return p == t if t == 0 else abs(p - t) / abs(t) <= tolerance
    return normalize(prediction) == normalize(truth)


def number_match(prediction: str, truth: str, rel_tol: float = 1e-4) -> bool:
    p, t = parse_number(prediction), parse_number(truth)
    if p is None or t is None:
        return False
    return abs(p - t) <= rel_tol * max(1.0, abs(t))


def is_correct(prediction: str, truth: str | Sequence[str], answer_type: AnswerType = "exact",
               options: Sequence[str] = (), rel_tol: float = 1e-4, anls_threshold: float = 0.5) -> bool:
    """Whether an extracted answer is right for its answer type."""
    truths = [truth] if isinstance(truth, str) else list(truth)
    if answer_type == "multiple_choice":
        got = choice_letter(prediction, options)
        return got is not None and any(got == choice_letter(t, options) for t in truths)
    if answer_type == "number":
        return any(number_match(prediction, t, rel_tol) for t in truths)
    if answer_type == "vqa":
        return vqa_score(prediction, truths) >= 1.0 or (len(truths) < 3 and vqa_score(prediction, truths) > 0)
    if answer_type == "anls":
        return anls(prediction, truths, anls_threshold) >= anls_threshold
    if answer_type == "relaxed":
        return any(relaxed_match(prediction, t) for t in truths)
    return any(normalize(prediction) == normalize(t) for t in truths)
