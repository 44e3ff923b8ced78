"""Dropout next-token prediction (MMPR): where a chosen answer is cut, at a ratio of its tokens (or of
its words, or characters where a script has no spaces); the policy continues the prefix without
the image and that continuation is the rejected answer (`pairs.dropout_pair`)."""

from __future__ import annotations

import math
from typing import Any



# Scripts written without spaces between words (Thai, Lao, Myanmar, Khmer, kana, CJK ideographs):
# without a tokenizer, each character there (with its combining marks) is one unit of the cut.
_UNSPACED = ((0x0E00, 0x0EFF), (0x1000, 0x109F), (0x1780, 0x17FF), (0x3040, 0x30FF), (0x31F0, 0x31FF),
             (0x3400, 0x4DBF), (0x4E00, 0x9FFF), (0xF900, 0xFAFF), (0xFF66, 0xFF9F), (0x20000, 0x2FA1F))


def unspaced(c: str) -> bool:
    o = ord(c)
    return any(lo <= o <= hi for lo, hi in _UNSPACED)


def unit_ends(text: str) -> list[int]:
    """Where each unit of `text` ends: words in spaced scripts, characters (with their combining
    marks) in scripts written without spaces, so "我喜欢猫 and dogs" has 6 units."""
    import unicodedata

    ends, i, n = [], 0, len(text)
    while i < n:
        if text[i].isspace():
            i += 1
            continue
        j = i + 1
        if unspaced(text[i]):
            while j < n and unicodedata.category(text[j]).startswith("M"):
                j += 1
        else:
            while j < n and not text[j].isspace() and not unspaced(text[j]):
                j += 1
        ends.append(j)
        i = j
    return ends


def token_ends(tokenizer: Any, text: str) -> list[int]:
    """Where each of the tokenizer's tokens of `text` ends, in characters (a fast tokenizer's
    offsets; byte pieces of one character end with it, so a cut never splits a character)."""
    enc = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    return [end for _, end in enc["offset_mapping"] if end > 0]


def dropout_prefix(response: str, ratio: float, tokenizer: Any = None) -> str:
    """The first floor(ratio x units) units of `response`, its own spacing kept: the policy
    tokenizer's tokens when given, else words (characters where a script has no spaces)."""
    ends = token_ends(tokenizer, response) if tokenizer is not None else unit_ends(response)
    k = math.floor(ratio * len(ends))
    return response[: ends[k - 1]] if k > 0 else ""


