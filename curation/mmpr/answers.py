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

import datetime
import re
import unicodedata
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from fractions import Fraction
from typing import Literal, Sequence

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


# ---------------------------------------------------------------------------------------------
# Strict canonical forms: exact numbers, dates, codes

_STRICT_NUM = re.compile(r"(?<![\w.])[-+]?(?:\d{1,3}(?:,\d{3})+|\d+)?(?:[.,]\d+)?(?:e[-+]?\d+)?(?![\w])")
_CURRENCY = re.compile(r"[$€£¥₹]")


def exact_number(text: str) -> tuple[Fraction, bool] | None:
    """The single number in `text` as an exact fraction, and whether it was written as a percent:
    "1,200" (thousands groups of three), "3,5" (a decimal comma), "12 kg", "$12", "45 %", "3/4",
    "\\frac{3}{4}", "1e3", "twelve". None when there is no number or more than one."""
    text = unicodedata.normalize("NFKC", text).replace("−", "-")
    frac = _FRAC.search(text)
    if frac:
        num, den = (frac.group(1), frac.group(2)) if frac.group(1) is not None else (frac.group(3), frac.group(4))
        rest = _FRAC.sub(" ", text, count=1)
        try:
            value = Fraction(Decimal(num)) / Fraction(Decimal(den))
        except (InvalidOperation, ZeroDivisionError, ValueError):
            return None
        return (value, False) if exact_number_count(rest) == 0 else None
    t = strip_markup(text).lower().replace("\\%", "%")
    t = re.sub(r"(\d)([a-df-z]|e(?![-+]?\d))", r"\1 \2", t)  # a unit glued on: "4feet", "12kg" (not "1e3")
    if _SCALE_WORDS.search(t):
        return None  # "one hundred", "twelve and a half": not one plain number
    percent = "%" in t or re.search(r"\bper\s*cent\b", t) is not None
    t = _CURRENCY.sub(" ", t).replace("%", " ")
    t = " ".join(_NUMBER_WORDS.get(w, w) for w in re.findall(r"[\w.,+-]+", t))
    found = [f for f in _STRICT_NUM.findall(t) if any(c.isdigit() for c in f)]
    if len(found) != 1:
        return None
    raw = found[0]
    if re.fullmatch(r"[-+]?\d{1,3}(?:,\d{3})+(?:\.\d+)?(?:e[-+]?\d+)?", raw):
        raw = raw.replace(",", "")  # thousands groups
    elif raw.count(",") == 1 and "." not in raw:
        raw = raw.replace(",", ".")  # a decimal comma: "3,5"
    elif "," in raw:
        return None
    try:
        return Fraction(Decimal(raw)), percent
    except (InvalidOperation, ValueError):
        return None


def exact_number_count(text: str) -> int:
    return len([f for f in _STRICT_NUM.findall(text) if any(c.isdigit() for c in f)])


_SCALE_WORDS = re.compile(r"\b(hundred|thousand|million|billion|trillion|dozen|half|quarter|point)s?\b")
_BARE_NUMBER = re.compile(r"[-+]?[$€£¥₹]?\s*[-+]?(\d[\d,]*(\.\d+)?|\.\d+)(e[-+]?\d+)?\s*%?")


def is_bare_number(text: str) -> bool:
    """A ground truth that is a number alone (currency sign and percent allowed): "1,200", "$4.99",
    "45%", "3/4". "OPEN 24 HOURS" is text with a number in it."""
    t = strip_markup(unicodedata.normalize("NFKC", text)).replace("−", "-").strip()
    return bool(_BARE_NUMBER.fullmatch(t) or _FRAC.fullmatch(t))


_MONTHS = {m: i for i, names in enumerate((
    ("january", "jan"), ("february", "feb"), ("march", "mar"), ("april", "apr"), ("may",), ("june", "jun"),
    ("july", "jul"), ("august", "aug"), ("september", "sep", "sept"), ("october", "oct"), ("november", "nov"),
    ("december", "dec")), 1) for m in names}
_MONTH = "(" + "|".join(sorted(_MONTHS, key=len, reverse=True)) + r")\.?"
_DATE_FORMS = [
    (re.compile(r"(\d{4})[-/.](\d{1,2})[-/.](\d{1,2})"), ("y", "m", "d")),
    (re.compile(_MONTH + r"\s+(\d{1,2})(?:st|nd|rd|th)?,?\s+(\d{4})"), ("mon", "d", "y")),
    (re.compile(r"(\d{1,2})(?:st|nd|rd|th)?\s+(?:of\s+)?" + _MONTH + r",?\s+(\d{4})"), ("d", "mon", "y")),
    (re.compile(r"(\d{1,2})[/.-](\d{1,2})[/.-](\d{4})"), ("a", "b", "y")),
]


def parse_dates(text: str) -> frozenset[datetime.date] | None:
    """The calendar date `text` is, as the set of its readings ("03/08/2019" is March 8 or August 3;
    ISO and month-name forms have one); None when `text` is not a date alone."""
    t = strip_markup(unicodedata.normalize("NFKC", text)).lower().strip().rstrip(".").strip()
    for form, fields in _DATE_FORMS:
        m = form.fullmatch(t)
        if not m:
            continue
        got = dict(zip(fields, m.groups()))
        y = int(got["y"])
        if "mon" in got:
            readings = [(_MONTHS[got["mon"]], int(got["d"]))]
        elif "m" in got:
            readings = [(int(got["m"]), int(got["d"]))]
        else:
            a, b = int(got["a"]), int(got["b"])
            readings = [(a, b), (b, a)]
        out = set()
        for month, day in readings:
            try:
                out.add(datetime.date(y, month, day))
            except ValueError:
                pass
        return frozenset(out) or None
    return None


def code_key(text: str) -> str:
    """A code or name as compared: NFKC, case folded, markup, spaces and the joiners `-_.` dropped
    ("Coca-Cola" = "coca cola" = "CocaCola", "ABC-123" = "abc123")."""
    t = strip_markup(unicodedata.normalize("NFKC", text)).casefold().strip().rstrip(".")
    return re.sub(r"[\s\-_.·]+", "", t)


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
