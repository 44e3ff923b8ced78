"""The answer checkers on a table of answer strings per answer type, as policies write them:
articles, markdown, LaTeX, units, percents, option text instead of the letter, two letters,
"none of the above", near and far misses. Written by hand for this project; each row is
(prediction, ground truth, expected verdict). A near miss (a digit off, dates days apart, one
character of a code, a year within 5%, a name one word apart) is never correct: the lenient metrics
(ANLS, relaxed accuracy) would pass it, the judge does not."""

from __future__ import annotations

import pytest

from curation.mmpr.answers import is_correct, judge_answer

OPTIONS = ["a dog", "a cat", "twelve apples", "None of the above"]

MULTIPLE_CHOICE = [
    ("B", "B", True), ("(B)", "B", True), ("B.", "B", True), ("b)", "B", True), ("(b)", "B", True),
    ("b", "B", True), ("**B**", "B", True), ("**(B)**", "B", True), ("`B`", "B", True), ("B) a cat", "B", True),
    ("B. a cat", "B", True), ("B: a cat", "B", True), ("B - a cat", "B", True), ("Option B", "B", True),
    ("Option (B)", "B", True), ("option b", "B", True), ("Choice B", "B", True), ("The answer is B", "B", True),
    ("The answer is (B).", "B", True), ("The answer is **B**", "B", True), ("answer: B", "B", True),
    ("I pick (B) because it purrs", "B", True), ("a cat", "B", True), ("A cat.", "B", True), ("Cat", "B", True),
    ("It is a cat", "B", True), ("twelve apples", "C", True), ("12 apples", "C", True), ("None of the above", "D", True),
    ("none of the above.", "D", True),
    # adversarial: the article "a" is not option A; two letters; letters past the options; wrong ones
    ("The answer is a dog", "B", False), ("The answer is a dog", "A", True), ("a dog", "A", True),
    ("A or B", "B", False), ("(A) and (B)", "B", False), ("Option A or option B", "A", False),
    ("E", "B", False), ("(F)", "F", False), ("C", "B", False), ("(C)", "B", False), ("The answer is C", "B", False),
    ("", "B", False), ("I don't know", "B", False), ("a dog or a cat", "B", False), ("dog", "A", True),
    ("Option (D)", "D", True), ("D) None of the above", "D", True), ("**Option C**", "C", True),
    ("c.", "C", True), ("The correct option is (A)", "A", True), ("Answer: (c)", "C", True),
    ("Both A and B", "A", False), ("(A) (C)", "A", False), ("Neither", "A", False), ("Option E", "B", False),
    ("a", "B", False), ("The answer is a cat", "B", True), ("The answer is a cat", "A", False),
]

NUMBER = [
    ("12", "12", True), ("12.0", "12", True), ("12.00", "12", True), ("twelve", "12", True), ("**12**", "12", True),
    ("$12", "12", True), ("12 dollars", "12", True), ("12 kg", "12", True), ("1,200", "1200", True),
    ("1,200 people", "1200", True), ("1200.0", "1,200", True), ("-3", "-3", True), ("−3", "-3", True),
    ("3/4", "0.75", True), ("\\frac{3}{4}", "0.75", True), ("\\dfrac{3}{4}", "0.75", True), ("0.75", "3/4", True),
    ("$\\frac{1}{2}$", "0.5", True), ("45%", "45", True), ("45 %", "45%", True), ("about 0.5", "0.5", True),
    ("1e3", "1000", True), ("about 1000", "1e3", True), ("The total is 42.", "42", True),
    ("42 apples", "42", True), ("7 cats", "7", True), ("seven", "7", True), ("zero", "0", True), ("0", "0", True),
    ("3.14159", "3.14159", True), (".5", "0.5", True), ("+5", "5", True), ("$1,234.50", "1234.5", True),
    # adversarial: two numbers, wrong numbers, no number, percent vs fraction, dates
    ("12 or 13", "12", False), ("between 3 and 4", "3", False), ("13", "12", False), ("12.5", "12", False),
    ("1,300", "1200", False), ("no idea", "12", False), ("", "12", False), ("0.45", "45%", False),
    ("3/4/2020", "0.75", False), ("3", "-3", False), ("-12", "12", False), ("twelve or so", "11", False),
    ("1/3", "0.33", False), ("\\frac{1}{0}", "0", False), ("4/3", "0.75", False), ("12 12", "12", False),
    ("1/2", "0.5", True), ("twelve and a half", "12.5", False),
]

EXACT = [
    ("Paris", "Paris", True), ("paris", "Paris", True), ("Paris.", "Paris", True), ("  Paris  ", "Paris", True),
    ("**Paris**", "Paris", True), ("`Paris`", "Paris", True), ("The Eiffel Tower", "Eiffel Tower", True),
    ("the eiffel tower.", "Eiffel Tower", True), ("An apple", "apple", True), ("a red bus", "red bus", True),
    ("Red bus!", "red bus", True), ("red, bus", "red bus", True), ("New York", "new york", True),
    ("NEW YORK", "new york", True), ("two", "2", True), ("2", "two", True), ("Café", "Café", True),
    ("ＰＡＲＩＳ", "Paris", True), ("Don't", "don't", True), ("3.5", "3.5", True), ("stop", "STOP", True),
    ("OPEN", "open", True), ("yes", "Yes", True), ("No.", "no", True), ("blue sky", "Blue Sky", True),
    ("The cat", "cat", True), ("cat", "The cat", True), ("mother-in-law", "mother-in-law", True),
    ("e-mail", "e-mail", True), ("50%", "50%", True),
    # adversarial: near misses and extra words are wrong for exact match
    ("Pariss", "Paris", False), ("Paris, France", "Paris", False), ("eiffel", "Eiffel Tower", False),
    ("tower", "Eiffel Tower", False), ("red", "red bus", False), ("bus red", "red bus", False), ("", "Paris", False),
    ("London", "Paris", False), ("yes", "no", False), ("Yes, it is", "yes", False), ("3.50", "3.5", True),
    ("3", "three point five", False), ("cats", "cat", False), ("cat cat", "cat", False), ("apple pie", "apple", False),
    ("no", "yes", False), ("New", "new york", False), ("Paris Paris", "Paris", False), ("stop sign", "stop", False),
    ("open 24 hours", "open", False),
]

VQA = [
    ("2", ["2", "2", "2"], True), ("two", ["2", "2", "2"], True), ("Two", ["2", "2", "two"], True),
    ("red", ["red", "red", "red"], True), ("Red.", ["red", "red", "red"], True), ("a red one", ["red one"] * 3, True),
    ("yes", ["yes", "yes", "yes"], True), ("Yes!", ["yes", "yes", "yes"], True), ("no", ["no"] * 3, True),
    ("dog", ["dog", "dog", "puppy"], False), ("**dog**", ["dog"] * 3, True), ("the dog", ["dog"] * 3, True),
    ("kitchen", ["kitchen"] * 3, True), ("Kitchen", ["kitchen", "kitchen", "kitchen"], True),
    ("3", ["3", "3", "4"], False), ("three", ["3", "3", "3"], True), ("blue", ["blue"], True), ("blue", ["blue", "navy"], True),
    ("tennis", ["tennis"] * 3, True), ("frisbee", ["frisbee", "frisbee", "frisbee", "disc"], True),
    ("white", ["white"] * 10, True), ("left", ["left", "left", "left"], True), ("2", ["2"] * 10, True),
    ("bus", ["bus", "bus", "bus"], True), ("stop sign", ["stop sign"] * 3, True),
    # adversarial: too few annotators agree, near misses, wrong, empty
    ("2", ["2", "3", "3"], False), ("red", ["red", "blue", "blue", "blue"], False), ("dogs", ["dog"] * 3, False),
    ("puppy", ["dog", "dog", "puppy", "dog"], False), ("", ["dog"] * 3, False), ("cat", ["dog"] * 3, False),
    ("yes", ["no"] * 3, False), ("two dogs", ["2"] * 3, True), ("4", ["3", "3", "3"], False),
    ("blue", ["navy"], False), ("bluish", ["blue"] * 3, False), ("right", ["left"] * 3, False),
    ("kitchen sink", ["kitchen"] * 3, False), ("whit", ["white"] * 3, False), ("no", ["yes"], False),
    ("none", ["0"] * 3, False), ("1", ["one dog"] * 3, False), ("tennis racket", ["tennis"] * 3, False),
    ("baseball", ["tennis"] * 3, False), ("frisbees", ["frisbee"] * 3, False), ("busy", ["bus"] * 3, False),
    ("stop", ["stop sign"] * 3, False), ("green", ["red", "red", "red"], False), ("3 or 4", ["3"] * 3, False),
    ("left side", ["left"] * 3, False),
]

ANLS = [
    ("OPEN 24 HOURS", ["OPEN 24 HOURS"], True), ("open 24 hours", ["OPEN 24 HOURS"], True),
    ("OPEN 24 HOUR", ["OPEN 24 HOURS"], False), ("OPEN  24  HOURS", ["OPEN 24 HOURS"], True),
    ("0PEN 24 HOURS", ["OPEN 24 HOURS"], False), ("Coca-Cola", ["Coca-Cola"], True), ("Coca Cola", ["Coca-Cola"], True),
    ("CocaCola", ["Coca-Cola"], True), ("SALE", ["SALE"], True), ("SAL", ["SALE"], False), ("sale", ["SALE"], True),
    ("Main Street", ["Main St", "Main Street"], True), ("Main Stret", ["Main Street"], False),
    ("$4.99", ["$4.99"], True), ("4.99", ["$4.99"], True), ("EXIT", ["EXIT"], True), ("EXT", ["EXIT"], False),
    ("No Parking", ["NO PARKING"], True), ("No Parkin", ["NO PARKING"], False), ("Welcome", ["WELCOME"], True),
    ("Wellcome", ["WELCOME"], False), ("ABC123", ["ABC123"], True), ("ABC124", ["ABC123"], False),
    ("hello world", ["hello world"], True), ("Helo World", ["hello world"], False), ("", [""], True),
    ("2019-05-01", ["2019-05-01"], True), ("2019-05-02", ["2019-05-01"], False),
    # adversarial: far misses score 0, never high; an empty answer; a different word
    ("CLOSED", ["OPEN 24 HOURS"], False), ("", ["OPEN 24 HOURS"], False), ("Pepsi", ["Coca-Cola"], False),
    ("abcdef", ["abcxyz"], False), ("uvwxyz", ["abcxyz"], False), ("SALE", ["EXIT"], False), ("EX", ["EXIT 12"], False),
    ("Park", ["NO PARKING"], False), ("Goodbye", ["WELCOME"], False), ("XYZ789", ["ABC123"], False),
    ("hello", ["hello world"], False), ("world hello", ["hello world"], False), ("2020", ["2019-05-01"], False),
    ("1", ["one hundred"], False), ("Main", ["Main Street"], False), ("S", ["SALE"], False),
    ("completely different", ["hello world"], False), ("OPEN", ["OPEN 24 HOURS"], False), ("24", ["OPEN 24 HOURS"], False),
    ("HOURS", ["OPEN 24 HOURS"], False), ("$9.99", ["$4.99", "$5.99"], False), ("$123.45", ["$4.99"], False),
]

RELAXED = [
    ("100", "100", True), ("104", "100", False), ("96", "100", False), ("105", "100", False), ("95", "100", False),
    ("105.1", "100", False), ("94.9", "100", False), ("106", "100", False), ("0.96", "1.0", False), ("0.9", "1.0", False),
    ("1,020", "1000", False), ("$1,020", "1000", False), ("1020 units", "1000", False), ("52%", "50%", False),
    ("50.5", "50", False), ("**50**", "50", True), ("fifty", "50", False), ("twelve", "12", True), ("12.5", "12", False),
    ("12.7", "12", False), ("3/4", "0.75", True), ("\\frac{3}{4}", "0.76", False), ("0", "0", True), ("0.01", "0", False),
    ("-10", "-10", True), ("-10.4", "-10", False), ("-11", "-10", False), ("10", "-10", False), ("1e3", "1000", True),
    ("2019", "2019", True), ("2020", "2019", False), ("2200", "2019", False), ("1,000", "1000", True),
    ("100.0", "100", True), ("50 %", "50%", True), ("$1,000", "1000", True),
    # text answers: exact after normalisation
    ("Red bus", "red bus", True), ("The red bus", "red bus", True), ("red", "red bus", False), ("Yes", "yes", True),
    ("no", "yes", False), ("January", "january", True), ("Jan", "january", False), ("", "100", False),
    ("about 100 or 200", "100", False), ("n/a", "100", False), ("100 and 200", "100", False), ("North", "north", True),
    ("South", "north", False), ("Q3", "q3", True), ("Q4", "q3", False), ("1.0", "100%", False), ("99%", "100%", False),
    ("90%", "100%", False),
]

TABLE = ([("multiple_choice", p, t, OPTIONS, ok) for p, t, ok in MULTIPLE_CHOICE]
         + [("number", p, t, (), ok) for p, t, ok in NUMBER] + [("exact", p, t, (), ok) for p, t, ok in EXACT]
         + [("vqa", p, t, (), ok) for p, t, ok in VQA] + [("anls", p, t, (), ok) for p, t, ok in ANLS]
         + [("relaxed", p, t, (), ok) for p, t, ok in RELAXED])


def test_the_table_has_at_least_fifty_strings_per_answer_type_both_ways():
    for kind, rows in (("multiple_choice", MULTIPLE_CHOICE), ("number", NUMBER), ("exact", EXACT), ("vqa", VQA),
                       ("anls", ANLS), ("relaxed", RELAXED)):
        assert len(rows) >= 50, kind
        assert sum(ok for *_, ok in rows) >= 15 and sum(not ok for *_, ok in rows) >= 15, kind


@pytest.mark.parametrize("kind, prediction, truth, options, expected", TABLE)
def test_checker_table(kind, prediction, truth, options, expected):
    assert is_correct(prediction, truth, kind, options) is expected


# Near misses, written out from hand-picked seeds: each must never be `correct`. The lenient metrics
# pass all of them (that is what makes them near), so each is `ambiguous`: no pair either way.
_DIGIT_OFF = [("1996", "1998"), ("$1,200", "$1,500"), ("4.99", "4.98"), ("1,234,567", "1,234,568"), ("37", "38"),
              ("0.75", "0.76"), ("12.5%", "12.4%"), ("3,001", "3,000"), ("98.6", "98.7"), ("250 ml", "251"),
              ("1024", "1023"), ("65", "64"), ("7.1", "7.2"), ("$19.99", "$19.98"), ("980", "981"),
              ("1,000,000", "1,000,001"), ("42.0", "42.1"), ("8848", "8849"), ("31.4", "31.5"), ("2.718", "2.717")]
_DATES = [("March 3, 2019", "March 8, 2019"), ("2019-05-02", "2019-05-01"), ("1 July 2020", "July 4, 2020"),
          ("2021-12-30", "2021-12-25"), ("Jan 5 2018", "2018-01-02"), ("10 October 1999", "1999-10-13"),
          ("2000-02-28", "2000-02-29"), ("June 14, 2016", "June 12, 2016"), ("2011-11-11", "2011-11-12"),
          ("Dec 31, 2009", "2009-12-29"), ("2023-04-01", "April 3, 2023"), ("5th May 2015", "May 7, 2015"),
          ("1989-11-09", "1989-11-10"), ("August 1, 2008", "2008-08-08"), ("2017-09-17", "2017-09-19"),
          ("3 March 2003", "2003-03-06"), ("2022-06-06", "June 5, 2022"), ("Feb 14 2014", "2014-02-15"),
          ("2010-01-01", "2010-01-03"), ("20 April 2001", "2001-04-22")]
_CODES = [("ABC124", "ABC123"), ("XJ-9003", "XJ-9002"), ("B737", "B738"), ("A4", "A5"), ("QR8Z1", "QR8Z7"),
          ("HX1234", "HX1235"), ("SN-00471", "SN-00477"), ("M25", "M26"), ("E7", "E8"), ("1A2B3C", "1A2B3D"),
          ("LH441", "LH444"), ("ZIP 90210", "ZIP 90211"), ("K9", "K8"), ("RT-66", "RT-67"), ("V8X", "V6X"),
          ("AB-12-CD", "AB-12-CE"), ("Z3", "Z4"), ("P0420", "P0421"), ("R2D2", "R2D3"), ("G7 SUMMIT", "G8 SUMMIT")]
_YEARS = [("2020", "2019"), ("1995", "1998"), ("2003", "2001"), ("1969", "1968"), ("1914", "1918"), ("2012", "2010"),
          ("1980", "1984"), ("2024", "2022"), ("1945", "1944"), ("1776", "1774"), ("2008", "2007"), ("1990", "1991"),
          ("2016", "2015"), ("1066", "1067"), ("1999", "2000"), ("1929", "1930"), ("1492", "1493"), ("1963", "1961"),
          ("2001", "2004"), ("1789", "1787")]
_NAMES = [("John Smith", "John Smyth"), ("Main Street", "Main Road"), ("New York Times", "New York Post"),
          ("Coca-Cola Zero", "Coca-Cola Light"), ("Golden Gate Bridge", "Golden Gate Park"), ("Red Cross", "Red Crescent"),
          ("United Kingdom", "United States"), ("Pacific Ocean", "Atlantic Ocean"), ("Mary Jane", "Mary Ann"),
          ("Lake Michigan", "Lake Huron"), ("North Carolina", "South Carolina"), ("Real Madrid", "Atletico Madrid"),
          ("Saint Peter", "Saint Paul"), ("Grand Central", "Grand Canyon"), ("Blue Line", "Red Line"),
          ("Oxford Street", "Oxford Road"), ("West Virginia", "Virginia"), ("San Diego", "San Jose"),
          ("Apple Store", "Apple Music"), ("Bank of America", "Bank of England")]

NEAR_MISSES = ([("number", p, t) for p, t in _DIGIT_OFF] + [("relaxed", p, t) for p, t in _DIGIT_OFF]
               + [("anls", p, [t]) for p, t in _DATES] + [("exact", p, t) for p, t in _DATES]
               + [("anls", p, [t]) for p, t in _CODES] + [("exact", p, t) for p, t in _CODES]
               + [("relaxed", p, t) for p, t in _YEARS] + [("number", p, t) for p, t in _YEARS]
               + [("exact", p, t) for p, t in _NAMES] + [("anls", p, [t]) for p, t in _NAMES])

# Clearly wrong: a far miss of each kind; these (and only these) may be `rejected`.
FAR_MISSES = [("number", "13", "12"), ("number", "1,750", "1200"), ("relaxed", "2200", "2019"), ("relaxed", "106", "100"),
              ("anls", "CLOSED", ["OPEN 24 HOURS"]), ("anls", "XYZ789", ["ABC123"]), ("exact", "London", "Paris"),
              ("anls", "Pepsi", ["Coca-Cola"]), ("vqa", "cat", ["dog"] * 3), ("multiple_choice", "C", "B"),
              ("number", "0.0001", "0"), ("exact", "1887", "March 3, 2019"), ("relaxed", "0.9", "1.0")]


def test_there_are_at_least_a_hundred_near_misses_of_each_promised_kind():
    assert len(NEAR_MISSES) >= 100
    assert all(len(rows) >= 20 for rows in (_DIGIT_OFF, _DATES, _CODES, _YEARS, _NAMES))


@pytest.mark.parametrize("kind, prediction, truth", NEAR_MISSES)
def test_a_near_miss_is_never_chosen_and_never_rejected(kind, prediction, truth):
    assert not is_correct(prediction, truth, kind)
    assert judge_answer(prediction, truth, kind) == "ambiguous"


@pytest.mark.parametrize("kind, prediction, truth", FAR_MISSES)
def test_a_far_miss_is_wrong(kind, prediction, truth):
    assert judge_answer(prediction, truth, kind, OPTIONS if kind == "multiple_choice" else ()) == "wrong"


@pytest.mark.parametrize("prediction, truth, kind", [
    ("March 3, 2019", "2019-03-03", "exact"), ("3 March 2019", "March 3rd, 2019", "anls"), ("2019/03/03", "Mar. 3, 2019", "exact"),
    ("1,200", "1200", "anls"), ("$4.99", "4.99", "relaxed"), ("45 percent", "45%", "number"), ("3,5", "3.5", "number"),
    ("abc-123", "ABC123", "anls"), ("coca cola", "Coca-Cola", "anls"), ("(b)", "B", "multiple_choice"),
])
def test_the_same_answer_written_another_way_is_correct(prediction, truth, kind):
    assert judge_answer(prediction, truth, kind, OPTIONS if kind == "multiple_choice" else ()) == "correct"
