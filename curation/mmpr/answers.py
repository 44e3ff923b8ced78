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


_NUM = re.compile(r"[-+−]?\d[\d,]*(?:\.\d+)?|[-+−]?\.\d+")


def parse_number(text: str) -> float | None:
    """The single number in `text` ("1,234.5 kg", "$12", "45%", "-3"), percent kept as written
    (45% -> 45); None when there is no number or more than one."""
    t = unicodedata.normalize("NFKC", text).lower().replace("−", "-")
    t = " ".join(_NUMBER_WORDS.get(w, w) for w in re.findall(r"[\w.,%$+-]+", t))
    found = _NUM.findall(t)
    if len(found) != 1:
        return None
    raw = found[0].replace(",", "")
    try:
        return float(raw)
    except ValueError:
        return None


def choice_letter(text: str, options: Sequence[str] = ()) -> str | None:
    """A multiple-choice answer as its letter: "B", "(B)", "B.", "B) 12", "The answer is (B) 12",
    or the option's text itself when `options` are given."""
    t = text.strip()
    m = re.fullmatch(r"\(([A-Za-z])\)(?:[.:]?\s.*)?|([A-Za-z])(?:[.:)](?:\s.*)?)?", t, re.S)
    if m:
        return (m.group(1) or m.group(2)).upper()
    m = re.search(r"\banswer\s+is\s*:?\s*\(?([A-Z])\)?(?![a-z])", t, re.I)
    if m:
        return m.group(1).upper()
    m = re.search(r"\(([A-Z])\)", t)
    if m:
        return m.group(1)
    if options:
        norm = normalize(t)
        for i, opt in enumerate(options):
            if norm and norm == normalize(opt):
                return chr(ord("A") + i)
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
