"""Answer extraction and checkers for MMPR correctness pairs, on tricky real-world shapes."""

from __future__ import annotations

import pytest

from curation.mmpr.answer_metrics import anls, relaxed_match, vqa_score
from curation.mmpr.answers import choice_letter, extract_answer, is_correct, judge_answer
from curation.mmpr.answer_values import normalize, parse_number


def test_extracts_the_last_final_answer_with_a_rationale():
    got = extract_answer("The bars show 12 and 30, so 30 is larger.\nFinal Answer: 30\n")
    assert got.answer == "30" and got.format_ok
    got = extract_answer("Final Answer: 3? No, recount. Two red, one blue.\nFinal Answer: (B)")
    assert got.answer == "(B)" and got.format_ok


@pytest.mark.parametrize("response, problem", [
    ("", "empty response"),
    ("It is 30.", "no 'Final Answer:'"),
    ("Final Answer: 30", "no reasoning before the final answer"),
    ("Counting.\nFinal Answer:\n", "empty final answer"),
    ("Counting.\nFinal Answer: 30\nbecause the chart says so", "final answer spans several lines"),
])
def test_format_negatives(response, problem):
    got = extract_answer(response)
    assert not got.format_ok and got.problem == problem


def test_boxed_style_with_nested_braces():
    got = extract_answer(r"Area = 1/2 * 4 * 3. So \boxed{\frac{12}{2}}", style="boxed")
    assert got.answer == r"\frac{12}{2}" and got.format_ok
    assert not extract_answer("no box here", style="boxed").format_ok


@pytest.mark.parametrize("text, letter", [
    ("B", "B"), ("(B)", "B"), ("B.", "B"), ("b)", "B"), ("B) 12", "B"), ("The answer is (B) 12", "B"),
    ("The answer is C", "C"), ("I pick (D) because it is largest", "D"), ("twelve", None),
])
def test_choice_letters(text, letter):
    assert choice_letter(text) == letter


def test_choice_by_option_text():
    options = ["red", "blue", "twelve apples"]
    assert choice_letter("Blue.", options) == "B"
    assert is_correct("12 apples", "C", "multiple_choice", options)
    assert not is_correct("(A)", "C", "multiple_choice", options)


@pytest.mark.parametrize("text, value", [
    ("1,234.5 kg", 1234.5), ("$12", 12.0), ("45%", 45.0), ("-3", -3.0), ("about 0.5", 0.5),
    ("three", 3.0), ("between 3 and 4", None), ("no number", None),
])
def test_parse_number(text, value):
    assert parse_number(text) == value


def test_numbers_with_commas_units_and_tolerance():
    assert is_correct("1,200 people", "1200", "number")
    assert is_correct("12.00", "12", "number")
    assert not is_correct("12.5", "12", "number")
    assert not is_correct("1200 or 1300", "1200", "number")


def test_anls_near_and_far_misses_in_the_right_direction():
    assert anls("Hello World", ["hello world"]) == 1.0
    near = anls("Helo World", ["hello world"])  # one edit: a near miss scores high
    assert 0.9 < near < 1.0
    assert anls("completely different", ["hello world"]) == 0.0  # far miss: 0, never high
    assert anls("abcdef", ["abcxyz"]) == 0.0  # NL exactly 0.5 is not below the threshold
    # the metric is reported, never the judge: a near miss is ambiguous (no pair), a far miss wrong
    assert judge_answer("abcdyz", "abcxyz", "anls") == "ambiguous" and judge_answer("uvwxyz", "abcxyz", "anls") == "wrong"
    assert judge_answer("Helo World", ["nothing", "hello world"], "anls") == "ambiguous"  # near one of the truths
    assert judge_answer("Hello World", ["nothing", "hello world"], "anls") == "correct"


def test_vqa_score_and_relaxed_accuracy():
    assert vqa_score("Two", ["2", "2", "two", "3"]) == 1.0
    assert vqa_score("2", ["2", "3", "3"]) == pytest.approx(1 / 3)
    assert relaxed_match("104", "100") and not relaxed_match("106", "100")
    assert relaxed_match("The Red Bus", "red bus")
    assert judge_answer("0.96", "1.0", "relaxed") == "ambiguous" and judge_answer("0.9", "1.0", "relaxed") == "wrong"
    assert is_correct("1.00", "1.0", "relaxed")


def test_exact_match_after_normalisation():
    assert normalize("  The Eiffel Tower. ") == "eiffel tower"
    assert is_correct("the eiffel tower", "Eiffel Tower")
    assert not is_correct("eiffel", "Eiffel Tower")
