"""Answers as values: VQA normalisation, numbers (units, thousands separators, percent, fractions,
exactly as fractions), dates as dates, codes after case and space normalisation. Pure functions."""

from __future__ import annotations

import datetime
import re
import unicodedata
from decimal import Decimal, InvalidOperation
from fractions import Fraction


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
