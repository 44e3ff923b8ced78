"""Dedup keys without Beam: ranked node ids, exact keys, decisions and how a shard applies them.

Every record becomes a `DupKey` whose `node` string sorts best-representative first (highest quality
score, then smallest uid), so "the representative of a group" is always the minimum node and every
step is a min - independent of arrival order. The buckets leave as star edges (filters/dedup/
caption_lsh.py, image_lsh.py) and the components over them (filters/dedup/components.py) decide.
"""

from __future__ import annotations

import hashlib
import math
import struct
from typing import Any, Callable, Iterable, Iterator, NamedTuple

from filters.dedup.exact import normalize_url
from filters.dedup.minhash import normalize_caption

SEP = "\x00"  # sorts below every uid character, so "a" < "a-b" survives the suffix
_NO_SCORE = "1" + "0" * 16

# reason -> the words before the representative's uid in `detail`
DETAIL = {
    "dup_url": "same URL as",
    "dup_caption": "same normalised caption as",
    "dup_image": "same image bytes as",
    "dup_uid": "same uid as",
    "near_dup_caption": "caption near-duplicate of",
    "near_dup_image": "image near-duplicate of",
    "semantic_dup_caption": "caption embedding near",
    "semantic_dup_image": "image embedding near",
}


def node_id(uid: str, score: float | None, tiebreak: str = "") -> str:
    """A string whose order is the representative order: score descending, then uid, then tiebreak."""
    if score is None or not math.isfinite(score):
        head = _NO_SCORE
    else:
        bits = struct.unpack(">Q", struct.pack(">d", -float(score)))[0]
        bits = bits ^ 0xFFFFFFFFFFFFFFFF if bits >> 63 else bits | (1 << 63)  # IEEE order -> unsigned order
        head = f"0{bits:016x}"
    return f"{head}{uid}{SEP}{tiebreak}"


def node_uid(node: str) -> str:
    return node[17:].split(SEP, 1)[0]


def representative_of(detail: str) -> str:
    """The representative's uid from a dedup rejection's detail (its last word)."""
    return detail.rsplit(" ", 1)[-1]


class DupKey(NamedTuple):
    """What dedup needs of one record: light, so only these travel through the shuffles."""

    node: str
    url: str | None  # a 96-bit hash of the normalised URL (equality is all the URL step asks)
    caption: str
    sha256: str | None  # the image's sha256, its first 128 bits
    phash: str | None  # 16 hex digits


class Decision(NamedTuple):
    """The record `node` is a `reason` duplicate of the record `rep` (a node). `via` is the node it
    matched when that one was itself removed by a later step of the cascade: `rep` is then the
    record kept for the whole chain (`resolve_chain`)."""

    node: str
    reason: str
    rep: str
    via: str = ""

    @property
    def uid(self) -> str:
        return node_uid(self.node)

    @property
    def detail(self) -> str:
        """`{words} {uid}` naming the kept representative last (`representative_of`), with the
        record it matched first when that one is a duplicate too."""
        if self.via:
            return f"{DETAIL[self.reason]} {node_uid(self.via)}, a duplicate of {node_uid(self.rep)}"
        return f"{DETAIL[self.reason]} {node_uid(self.rep)}"


def resolve_chain(decision: Decision, later: Decision | None) -> Decision:
    """A decision whose representative a later cascade step removed (`later`, that
    representative's own decision, already resolved) -> the same decision onto the record that
    step kept; unchanged when its representative survives."""
    if later is None:
        return decision
    return decision._replace(rep=later.rep, via=decision.via or decision.rep)


class Row(NamedTuple):
    """A record with the dedup node that names it: unique per input row even where uids repeat
    (overlapping inputs, one folder given twice, `uid.namespace: none`), so a Decision removes
    exactly the row it was made for."""

    node: str
    record: Any


def score_of(pair, field: str | None) -> float | None:
    """The quality score used to rank representatives: a Pair attribute or an `extra` column."""
    if not field:
        return None
    value = getattr(pair, field, None)
    if value is None:
        value = (pair.extra or {}).get(field)
    try:
        return None if value is None else float(value)
    except (TypeError, ValueError):
        return None


def origin_tiebreak(*parts: object) -> str:
    """A short stable hash of what tells one input row from every other (its file and row within
    one input; its input, shard and position where several inputs may repeat rows)."""
    text = "\x00".join(str(p) for p in parts)
    return hashlib.blake2b(text.encode("utf-8", "surrogatepass"), digest_size=8).hexdigest()


HOME = "@"  # in a node's tiebreak: the output shard its row is written to, and its position there


PIXEL_SCORE_FIELDS = ("clip_similarity", "clip_pixel_similarity")  # score fields the pixel score stands in for


def record_score(rec, field: str | None) -> float | None:
    """A pair-shard record's representative score: with a CLIP `field`, its CLIP score on the
    stored pixels when it has one (fresher than the metadata's, which goes stale as images change),
    else `score_of`. One dedup job should hold one `clip_model`'s scores: cosines of different
    models are not comparable."""
    from curation.core.records import record_pair

    pixel = getattr(getattr(rec, "image", None), "clip_pixel_similarity", None)
    if field in PIXEL_SCORE_FIELDS and pixel is not None:
        return float(pixel)
    return score_of(record_pair(rec), field)


def pair_node(pair, score_field: str | None, origin: tuple[int, int] | None = None,
              score: float | None = None) -> str:
    """The node of a pair: its score and uid, then its source file and row, then `origin` (where
    one input row can arrive more than once: the shard it was read from, numbered across every
    input, and its position there, which is also its home: the output shard that writes it).
    `score` (`record_score`) replaces the pair's own when given."""
    tiebreak = origin_tiebreak(pair.source_file, pair.source_row)
    if origin is not None:
        tiebreak += f"{HOME}{origin[0]:x}.{origin[1]:x}"
    return node_id(pair.uid, score_of(pair, score_field) if score is None else score, tiebreak)


def node_home(node: str) -> int:
    """The output shard a node's row is written to (the shard number `pair_node` got with its origin)."""
    tiebreak = node.split(SEP, 1)[1]
    if HOME not in tiebreak:
        raise ValueError(f"node {node!r} carries no home shard (made without an origin)")
    return int(tiebreak.rsplit(HOME, 1)[1].split(".", 1)[0], 16)


def origin_row(item: tuple[tuple[int, int], Any], score_field: str | None) -> Row:
    """((shard, position), pair-shard record) as a shard reader tags it -> the record's `Row`."""
    from curation.core.records import record_pair

    origin, rec = item
    return Row(pair_node(record_pair(rec), score_field, origin, record_score(rec, score_field)), rec)


def dup_key(pair, score_field: str | None, sha256: str | None = None, phash: str | None = None,
            node: str | None = None) -> DupKey:
    """The DupKey of a pair under `node` (default `pair_node`: the tiebreak tells rows apart that
    share a uid)."""
    url = _hash_normalized(normalize_url(pair.url)) if pair.url else None
    return DupKey(node or pair_node(pair, score_field), url, pair.caption or "", sha256[:32] if sha256 else None, phash)


def caption_hash(caption: str) -> str:
    """Exact-caption key: case, punctuation and spacing do not count."""
    return _hash_normalized(normalize_caption(caption))


def _hash_normalized(norm: str) -> str:
    return hashlib.blake2b(norm.encode("utf-8", "surrogatepass"), digest_size=12).hexdigest()


def _caption_key(key: DupKey) -> str | None:
    """caption_hash, or None for a caption with nothing left after normalisation."""
    norm = normalize_caption(key.caption)
    return _hash_normalized(norm) if norm else None


EXACT_KEYS = {
    "url": ("dup_url", lambda k: k.url),
    "caption": ("dup_caption", _caption_key),
    "image": ("dup_image", lambda k: k.sha256),
    "uid": ("dup_uid", lambda k: node_uid(k.node)),  # rows of one uid in different shards (dedup's last exact step)
}


def star(group: Iterable[str]) -> tuple[str, Iterator[str]]:
    """(minimum, the others as a lazy second pass) of a re-iterable group, without sorting or a
    list: O(1) memory, so a key shared by millions of members streams through."""
    center = min(group)
    return center, (n for n in group if n != center)


def split_decisions(elements: Iterable, key: Callable[[Decision], str]) -> tuple[dict[str, Decision], list]:
    """One shard's elements -> (its Decisions by `key`, the other records in order)."""
    decided: dict[str, Decision] = {}
    records = []
    for element in elements:
        if isinstance(element, Decision):
            decided[key(element)] = element
        else:
            records.append(element)
    return decided, records


def apply_decisions(elements: Iterable) -> list:
    """One shard's `Row`s mixed with the Decisions for them -> the records in node order, each kept
    sample whose node a Decision names turned into a `dedup` Rejection (detail ends with the
    representative). Matched by node, never by uid: two rows sharing a uid are two rows. A Decision
    that names no kept row of the shard is a ValueError: it was keyed to the wrong shard, or its row
    changed, and the row it meant would stay."""
    from curation.core.records import Rejection, Sample

    decided, rows = split_decisions(elements, lambda d: d.node)
    rows.sort(key=lambda r: r.node)
    out = []
    applied = 0
    for row in rows:
        rec = row.record
        d = decided.get(row.node) if isinstance(rec, Sample) else None
        applied += d is not None
        out.append(Rejection(rec.pair, "dedup", d.reason, d.detail) if d is not None else rec)
    if applied != len(decided):
        missing = sorted(set(decided) - {r.node for r in rows if isinstance(r.record, Sample)})
        raise ValueError(f"{len(missing)} dedup decisions name no kept row of this shard, "
                         f"e.g. {node_uid(missing[0])} ({decided[missing[0]].reason})")
    return out


