"""MMPR pair building from sampled responses (no model): correctness pairs and Dropout NTP."""

from __future__ import annotations

from curation.mmpr.pairs import MmprItem, correctness_pairs, judge
from curation.mmpr.pairs import dropout_pair
from curation.mmpr.dropout import dropout_prefix
from curation.core.reasons import check_reason

ITEM = MmprItem(id="q1", images=("img/1.jpg",), question="How many apples?", answer_gt="3", answer_type="number")
RIGHT_A = "I count one, two, three apples.\nFinal Answer: 3"
RIGHT_B = "Three apples sit on the plate.\nFinal Answer: 3.0"
WRONG = "There are two apples.\nFinal Answer: 2"
NO_FORMAT = "3"


def test_correctness_pairs_right_times_wrong_bounded_and_seeded():
    judged = judge(ITEM, [RIGHT_A, RIGHT_B, WRONG, NO_FORMAT, RIGHT_A])
    assert [j.correct for j in judged] == [True, True, False, False, True]
    out = correctness_pairs(ITEM, judged, max_pairs=3, seed=0)
    assert out.reason is None and len(out.pairs) == 3  # 2 unique right x 2 wrong = 4, capped at 3
    for row in out.pairs:
        assert row["chosen"] in (RIGHT_A, RIGHT_B) and row["rejected"] in (WRONG, NO_FORMAT)
        assert row["method"] == "correctness" and row["image"] == "img/1.jpg" and row["answer_gt"] == "3"
    assert len({r["id"] for r in out.pairs}) == 3
    again = correctness_pairs(ITEM, judged, max_pairs=3, seed=0)
    assert again.pairs == out.pairs
    other = correctness_pairs(ITEM, judged, max_pairs=1, seed=1)
    assert len(other.pairs) == 1
    fmt = [p for p in out.pairs if p["rejected"] == NO_FORMAT]
    for p in fmt:
        assert p["rejected_meta"]["format_ok"] is False and p["rejected_meta"]["problem"]


def test_chosen_inside_rejected_is_skipped():
    longer = RIGHT_A + "\nor maybe 4"  # contains the right response: teaches nothing
    judged = judge(ITEM, [RIGHT_A, longer])
    out = correctness_pairs(ITEM, judged, max_pairs=4, seed=0)
    assert out.reason == "all_correct" and not out.pairs


YEAR = MmprItem(id="q2", images=("img/2.jpg",), question="Which year is on the stone?", answer_gt="1998",
                answer_type="number")


def test_a_near_miss_is_neither_chosen_nor_rejected():
    right = "The carving reads 1998.\nFinal Answer: 1998"
    near = "The carving reads 1996.\nFinal Answer: 1996"  # a digit off: the lenient metrics pass it
    far = "It looks medieval.\nFinal Answer: 1204"
    judged = judge(YEAR, [right, near, far])
    assert [j.verdict for j in judged] == ["correct", "ambiguous", "wrong"]
    out = correctness_pairs(YEAR, judged, max_pairs=4, seed=0)
    assert [(p["chosen"], p["rejected"]) for p in out.pairs] == [(right, far)]  # the near miss takes no side
    only_near = correctness_pairs(YEAR, judge(YEAR, [right, near]), 4, 0)
    assert only_near.reason == "ambiguous_answer" and not only_near.pairs and check_reason("ambiguous_answer")
    none_right = correctness_pairs(YEAR, judge(YEAR, [near, "Carved in 1997.\nFinal Answer: 1997"]), 4, 0)
    assert none_right.reason == "ambiguous_answer" and not none_right.pairs


def test_rejection_reasons():
    cases = {
        "empty_response": ["", "  "],
        "no_parseable_answer": ["I think three.", "maybe 3"],
        "all_wrong": [WRONG, "Two.\nFinal Answer: 2"],
        "all_correct": [RIGHT_A, RIGHT_B],
    }
    for reason, responses in cases.items():
        out = correctness_pairs(ITEM, judge(ITEM, responses), 4, 0)
        assert out.reason == reason and check_reason(reason) and not out.pairs


def test_dropout_prefix_keeps_spacing_and_floors():
    text = "A red bus\nwaits at the stop."
    assert dropout_prefix(text, 0.5) == "A red bus"  # 7 words -> 3
    assert dropout_prefix("one two three four", 0.5) == "one two"
    assert dropout_prefix("single", 0.5) == ""


def test_dropout_cuts_scripts_without_spaces_by_character():
    from curation.mmpr.dropout import unit_ends

    assert len(unit_ends("我喜欢猫 and dogs")) == 6
    zh = "图中有一只红色的公共汽车停在面包店旁边。"
    ja = "赤いバスがパン屋の前に止まっています。"
    th = "รถบัสสีแดงจอดอยู่หน้าร้านเบเกอรี่"
    for text in (zh, ja, th):
        prefix = dropout_prefix(text, 0.5)
        assert prefix and text.startswith(prefix) and 0.3 < len(prefix) / len(text) < 0.7, text
        out = dropout_pair(ITEM, text, "继续写下去的文字。" if text is zh else "ทดสอบ", 0.5, False)
        (row,) = out.pairs  # each makes a pair (whitespace splitting found no words to cut)
        assert row["rejected"].startswith(prefix) and " " not in row["rejected"][len(prefix) - 1:len(prefix) + 1]
    # Thai: a cut never leaves a combining vowel or tone mark without its consonant
    import unicodedata

    for ratio in (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9):
        rest = th[len(dropout_prefix(th, ratio)):]
        assert not rest or not unicodedata.category(rest[0]).startswith("M")


def test_dropout_cuts_by_the_policy_tokenizers_tokens(tokenizer):
    text = "图中有一只红色的公共汽车停在面包店旁边。A red bus waits by the bakery."
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    prefix = dropout_prefix(text, 0.5, tokenizer)
    assert text.startswith(prefix) and prefix
    cut = len(tokenizer(prefix, add_special_tokens=False)["input_ids"])
    assert abs(cut - len(ids) // 2) <= 2  # half the tokens (a re-tokenised prefix may merge at its edge)
    uneven = "a b c d e f g antidisestablishmentarianismusque"  # 8 words, the last one many tokens
    assert dropout_prefix(uneven, 0.5) == "a b c d"
    assert dropout_prefix(uneven, 0.5, tokenizer).startswith("a b c d e")  # half the tokens, not the words


def test_dropout_pair():
    chosen = "A red bus waits at a stop next to a small bakery."
    out = dropout_pair(ITEM, chosen, "parked near the river bank.", ratio=0.5, with_image=False)
    (row,) = out.pairs
    assert row["rejected"] == "A red bus waits at a parked near the river bank."
    assert row["method"] == "dropout_ntp" and row["rejected_meta"] == {"prefix_chars": 20, "ratio": 0.5,
                                                                       "with_image": False}
    same = dropout_pair(ITEM, chosen, "stop next to a small bakery.", 0.5, False)
    assert same.reason == "identical_pair"
    assert dropout_pair(ITEM, "", "x", 0.5, False).reason == "empty_response"


def test_pairs_record_the_policys_tiling_for_pack():
    from curation.mmpr.config import MmprConfig
    from curation.mmpr.pairs import MmprItem
    from curation.mmpr.pairs import dropout_pair
    from curation.mmpr.tasks import policy_tiling

    from curation.core.config import build
    cfg = build(MmprConfig, {"policy": {"backend": "model", "prompt": {"max_num": 6, "use_thumbnail": True}}}, "")
    tiling = policy_tiling(cfg)
    assert tiling == {"max_num": 6, "min_num": 1, "use_thumbnail": True}
    item = MmprItem("d0", ("images/a.jpg",), "<image>\nDescribe it.", tiling=tiling)
    out = dropout_pair(item, "A red bus on a quiet street at noon.", " in the rain", 0.5, False)
    assert out.pairs and all(p["tiling"] == tiling for p in out.pairs)
    text_only = MmprItem("t0", (), "What is 2 + 2?", tiling=tiling)
    assert all("tiling" not in p for p in dropout_pair(text_only, "2 + 2 is four, so 4.", " five", 0.5, False).pairs)
