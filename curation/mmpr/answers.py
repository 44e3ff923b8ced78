"""Answer extraction and the oracle for MMPR correctness pairs: find the final answer in a chain of
thought ("Final Answer:" or `\\boxed{}`), check its format, and judge it against the ground truth.

The judge is strict: `correct` only when the answer is right - numbers equal after unit,
thousands-separator, percent and fraction normalisation (exactly, as fractions), dates equal as
dates, codes and names equal after case and space normalisation, option letters equal, text equal
after VQA normalisation. An answer the lenient metrics would pass but the strict check does not (a
digit off, dates days apart, one character of a code) is `ambiguous`: neither chosen nor rejected.
Only an answer failing both is `wrong`. ANLS, relaxed accuracy and the VQA score stay here as the
reported metrics, never as the judge. Pure functions; no model, no Beam.

ANLS here is the metric as defined (1 - normalised edit distance, kept when at least the threshold,
0.5): a near miss scores high, a far miss scores 0. InternVL's script computes it inverted.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass
from fractions import Fraction
from typing import Literal, Sequence

from curation.mmpr.answer_metrics import anls, levenshtein, relaxed_match, vqa_score
from curation.mmpr.answer_values import (code_key, exact_number, is_bare_number, normalize, parse_dates, parse_number,
                                         strip_markup)

AnswerType = Literal["exact", "multiple_choice", "number", "vqa", "anls", "relaxed"]
Verdict = Literal["correct", "ambiguous", "wrong"]

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


# ---------------------------------------------------------------------------------------------
# Strict canonical forms: exact numbers, dates, codes


def _numbers_equal(prediction: str, truth: str, rel_tol: float, bare: bool = True) -> bool | None:
    """Whether two answers are the same number (None when either is not one number, or, with
    `bare`, when the truth is more than a number)."""
    if bare and not is_bare_number(truth):
        return None
    p, t = exact_number(prediction), exact_number(truth)
    if p is None or t is None:
        return None
    if rel_tol:
        return abs(p[0] - t[0]) <= Fraction(rel_tol) * abs(t[0])
    return p[0] == t[0]


def _dates_equal(prediction: str, truth: str) -> bool | None:
    """Whether two answers are the same date (None when the truth is not a date)."""
    t = parse_dates(truth)
    if t is None:
        return None
    p = parse_dates(prediction)
    return p is not None and p <= t


def _text_equal(prediction: str, truth: str, rel_tol: float) -> bool:
    """Dates as dates, numbers as numbers, else the VQA normal form (articles, punctuation, case)."""
    if (same := _dates_equal(prediction, truth)) is not None:
        return same
    if (same := _numbers_equal(prediction, truth, rel_tol)) is not None:
        return same
    return bool(normalize(truth)) and normalize(prediction) == normalize(truth)


def strict_match(prediction: str, truths: Sequence[str], answer_type: AnswerType = "exact",
                 options: Sequence[str] = (), rel_tol: float = 0.0) -> bool:
    """The oracle's `correct`: the answer is right, not close."""
    if answer_type == "multiple_choice":
        got = choice_letter(prediction, options)
        return got is not None and any(got == choice_letter(t, options) for t in truths)
    if answer_type == "number":
        return any(_numbers_equal(prediction, t, rel_tol, bare=False) for t in truths)
    if answer_type == "vqa":  # the VQA score's 1.0: three annotators agree (any one of fewer than three)
        agree = sum(_text_equal(prediction, t, rel_tol) for t in truths)
        return agree >= 3 or (len(truths) < 3 and agree >= 1)
    if answer_type == "anls":  # OCR-style answers: codes and names, numbers, dates
        for t in truths:
            same = _dates_equal(prediction, t)
            if same is None:
                same = _numbers_equal(prediction, t, rel_tol)
            if same is None:
                same = bool(code_key(t)) and code_key(prediction) == code_key(t)
            if same or (not t.strip() and not prediction.strip()):
                return True
        return False
    return any(_text_equal(prediction, t, rel_tol) for t in truths)  # exact, relaxed


def _digits_one_apart(prediction: str, truth: str) -> bool:
    """Numbers of four or more digits that differ in one digit ("$1,200" for "$1,500", "1996" for "1998")."""
    a, b = re.sub(r"\D", "", prediction), re.sub(r"\D", "", truth)
    return len(a) == len(b) >= 4 and sum(x != y for x, y in zip(a, b)) == 1


def _words_one_apart(prediction: str, truth: str) -> bool:
    """Names of two or more words that differ in one of them ("Main Street" for "Main Road")."""
    p, t = normalize(prediction).split(), normalize(truth).split()
    return len(p) == len(t) >= 2 and sum(a != b for a, b in zip(p, t)) == 1


def near_miss(prediction: str, truth: str) -> bool:
    """What the lenient metrics or a one-step slip would pass: numbers within ChartQA's 5% or one
    digit apart, dates within a week, codes one character apart, names one word apart, ANLS >= 0.5,
    one answer's words inside the other's. Never the judge of `correct`; an answer here but not
    strictly right is too close to call wrong."""
    if is_bare_number(truth) and parse_number(prediction) is not None and parse_number(truth) is not None:
        return relaxed_match(prediction, truth) or _digits_one_apart(prediction, truth)
    p_dates, t_dates = parse_dates(prediction), parse_dates(truth)
    if p_dates and t_dates and min(abs((a - b).days) for a in p_dates for b in t_dates) <= 7:
        return True
    p_key, t_key = code_key(prediction), code_key(truth)
    if p_key and t_key and max(len(p_key), len(t_key)) >= 2 and levenshtein(p_key, t_key) <= 1:
        return True
    if _words_one_apart(prediction, truth) or anls(prediction, [truth]) >= 0.5 or vqa_score(prediction, [truth]) > 0:
        return True
    p, g = normalize(prediction), normalize(truth)
    return bool(p and g and (re.search(rf"(?<!\w){re.escape(g)}(?!\w)", p) or re.search(rf"(?<!\w){re.escape(p)}(?!\w)", g)))


def lenient_match(prediction: str, truths: Sequence[str], answer_type: AnswerType = "exact",
                  options: Sequence[str] = ()) -> bool:
    """A near miss of any ground truth (never for option letters: a letter is right or wrong)."""
    if answer_type == "multiple_choice" or not prediction.strip():
        return False
    return any(near_miss(prediction, t) for t in truths)


def judge_answer(prediction: str, truth: str | Sequence[str], answer_type: AnswerType = "exact",
                 options: Sequence[str] = (), rel_tol: float = 0.0) -> Verdict:
    """`correct` (right), `ambiguous` (a near miss: no pair either way) or `wrong` (clearly)."""
    truths = [truth] if isinstance(truth, str) else list(truth)
    if strict_match(prediction, truths, answer_type, options, rel_tol):
        return "correct"
    if lenient_match(prediction, truths, answer_type, options):
        return "ambiguous"
    return "wrong"


def is_correct(prediction: str, truth: str | Sequence[str], answer_type: AnswerType = "exact",
               options: Sequence[str] = (), rel_tol: float = 0.0) -> bool:
    """Whether an extracted answer is right for its answer type (strictly: never a near miss)."""
    return judge_answer(prediction, truth, answer_type, options, rel_tol) == "correct"
