"""InternVL meta files: the dataset mixture a training run reads (`{name: {root, annotation,
data_augment, repeat_time, length, max_dynamic_patch}}`), as `curate pack --meta` takes them.

Per dataset: its annotation file, the root its image paths resolve under, its tile budget
(`max_dynamic_patch`, else the recipe's `tiling.max_num`) and `repeat_time`: below 1 a seeded,
deterministic subsample (a row is kept when a hash of its uid falls under the fraction; the others
are rejected `subsampled`), above 1 whole repeats plus a hashed share of one more, every copy with
its own uid (`{uid}_r{k}`). InternVL's loader repeats the same way in spirit (`repeat_time` rows
per row) but samples its fraction at random per run; this is a fixed one, so shards stay
deterministic. `data_augment` is recorded for training; packing does not change images.

A pack recipe's optional `target_ratio` (text-only : multimodal tokens; InternVL 3 trained at 1:3)
is reached the same way: a counting pass gives each dataset's text-only and multimodal tokens,
`ratio_weights` picks one weight per dataset (the over-represented side subsampled, or the scarce
side repeated), and each weight multiplies that dataset's `repeat_time` (`ratio_weight`).
"""

from __future__ import annotations

import hashlib
import json
import math
import posixpath
from dataclasses import dataclass
from typing import Any, Callable, Iterator

from curation.core.config import ConfigError

META_KEYS = {"root", "annotation", "data_augment", "repeat_time", "length", "max_dynamic_patch"}


@dataclass(frozen=True)
class MetaDataset:
    """One dataset of a meta file, paths resolved."""

    name: str  # the meta file's key (no '/'); its rows' files are named {name}/{file}
    annotation: str  # its annotation file (relative: from the meta file's folder)
    root: str  # where its image paths resolve (default: the annotation's folder)
    repeat_time: float = 1.0  # copies per row (> 0): below 1 a hashed subsample, above 1 more copies {uid}_r{k}
    max_dynamic_patch: int | None = None  # its tile budget per sample; null: the recipe's tiling.max_num
    data_augment: bool = False  # recorded for training; packing does not change images
    length: int | None = None  # the row count the meta file declares (kept as given; not checked)
    ratio_weight: float = 1.0  # the target ratio's factor on repeat_time (ratio_weights); 1 without one

    @property
    def copies_per_row(self) -> float:
        """What `copies` is given: repeat_time under the target ratio's weight."""
        return self.repeat_time * self.ratio_weight

    def __post_init__(self) -> None:
        if not self.name or "/" in self.name:
            raise ConfigError(f"meta: dataset name {self.name!r} must be non-empty without '/'")
        if not self.repeat_time > 0 or not self.ratio_weight > 0:
            raise ConfigError(f"meta.{self.name}.repeat_time (and its ratio weight): > 0")
        if self.max_dynamic_patch is not None and self.max_dynamic_patch < 1:
            raise ConfigError(f"meta.{self.name}.max_dynamic_patch: >= 1")


def _resolve(base: str, path: str) -> str:
    return path if "://" in path or posixpath.isabs(path) else posixpath.normpath(posixpath.join(base, path))


def load_meta(path: str, text: str | None = None) -> tuple[MetaDataset, ...]:
    """The datasets of a meta file; relative root / annotation paths resolve from its folder."""
    from curation.core.fs import open_binary

    if text is None:
        with open_binary(path) as f:
            text = f.read().decode("utf-8")
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as err:
        raise ConfigError(f"{path}: not JSON ({err.msg} at line {err.lineno})") from None
    if not isinstance(doc, dict) or not doc:
        raise ConfigError(f"{path}: a meta file is an object of datasets {{name: {{root, annotation, ...}}}}")
    base = posixpath.dirname(path)
    out = []
    for name, entry in doc.items():
        if not isinstance(entry, dict) or not isinstance(entry.get("annotation"), str):
            raise ConfigError(f"{path}: dataset {name!r} needs an `annotation` path")
        unknown = sorted(set(entry) - META_KEYS)
        if unknown:
            raise ConfigError(f"{path}: dataset {name!r}: unknown key {unknown[0]!r} (known: {', '.join(sorted(META_KEYS))})")
        root = entry.get("root") or posixpath.dirname(entry["annotation"])
        if not isinstance(root, str):
            raise ConfigError(f"{path}: dataset {name!r}: `root` must be a path")
        try:
            repeat = float(entry.get("repeat_time", 1))
        except (TypeError, ValueError):
            raise ConfigError(f"{path}: dataset {name!r}: `repeat_time` must be a number") from None
        patch, length = entry.get("max_dynamic_patch"), entry.get("length")
        for key, value in (("max_dynamic_patch", patch), ("length", length)):
            if value is not None and (isinstance(value, bool) or not isinstance(value, int)):
                raise ConfigError(f"{path}: dataset {name!r}: `{key}` must be an integer")
        out.append(MetaDataset(str(name), _resolve(base, entry["annotation"]), _resolve(base, root), repeat, patch,
                               bool(entry.get("data_augment", False)), length))
    if len({d.annotation for d in out}) != len(out):
        raise ConfigError(f"{path}: two datasets name the same annotation file")
    return tuple(out)


def hashed_fraction(uid: str, seed: int = 0) -> float:
    """A uid's fixed point in [0, 1): the seeded, deterministic draw behind subsamples and repeats."""
    digest = hashlib.blake2b(f"{seed}\x00{uid}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2**64


def copies(uid: str, repeat_time: float, seed: int = 0) -> list[str]:
    """The uids a row becomes under `repeat_time`: [] (subsampled out), [uid], or uid plus
    `{uid}_r1`, `{uid}_r2`, ... - floor(repeat_time) copies, one more for a hashed share."""
    whole = math.floor(repeat_time)
    n = whole + (1 if hashed_fraction(uid, seed) < repeat_time - whole else 0)
    return [uid if k == 0 else f"{uid}_r{k}" for k in range(n)]


def dataset_rows(rec: Any, ds: MetaDataset, tiling: Any, resolve: Callable[[Any], Any]) -> Iterator[Any]:
    """A meta dataset's row as pack reads it: its file named `{dataset}/{file}`, its tile budget
    (`max_dynamic_patch` over the recipe's `tiling`), and the copies `repeat_time` makes of it, or
    one `subsampled` rejection. `resolve` (image paths, embedded images) runs once, for kept rows."""
    import copy

    from curation.core.records import Rejection, RowRef

    if isinstance(rec, Rejection):
        yield Rejection(RowRef(rec.uid, f"{ds.name}/{rec.source_file}", rec.source_row), rec.stage, rec.reason, rec.detail)
        return
    rec.source_file = f"{ds.name}/{rec.source_file}"
    if ds.max_dynamic_patch and rec.tiling is None:
        rec.tiling = {"max_num": ds.max_dynamic_patch, "min_num": min(tiling.min_num, ds.max_dynamic_patch),
                      "use_thumbnail": tiling.use_thumbnail}
    uids = copies(rec.uid, ds.copies_per_row)
    if not uids:
        why = f" x target-ratio weight {ds.ratio_weight:.4g}" if ds.ratio_weight != 1 else ""
        yield Rejection(RowRef(rec.uid, rec.source_file, rec.source_row), "read", "subsampled",
                        f"{ds.name}: repeat_time {ds.repeat_time}{why} keeps this share of the rows")
        return
    rec = resolve(rec)  # images once, shared by the copies
    if isinstance(rec, Rejection):
        yield rec
        return
    for k, uid in enumerate(uids):
        row = rec if k == 0 else copy.copy(rec)
        row.uid = uid
        yield row


def dataset_of(source_file: str) -> str | None:
    """The dataset a record came from: pack names meta rows' files `{dataset}/{file}`."""
    return source_file.split("/", 1)[0] if "/" in source_file else None


def dataset_stats(records: Any) -> dict[str, int]:
    """Per dataset: rows (manifest rows, copies included), kept, tokens, tiles, as flat index stats
    `dataset.{name}.{count}` that shards sum."""
    out: dict[str, int] = {}
    for row in records:
        name = dataset_of(row["source_file"])
        if name is None:
            continue
        key = f"dataset.{name}."
        out[key + "rows"] = out.get(key + "rows", 0) + 1
        if row["status"] == "kept":
            out[key + "kept"] = out.get(key + "kept", 0) + 1
            out[key + "tokens"] = out.get(key + "tokens", 0) + int(row["tokens"] or 0)
            out[key + "tiles"] = out.get(key + "tiles", 0) + int(row["tiles"] or 0)
    return out


def datasets_from_stats(stats: dict[str, Any]) -> dict[str, dict[str, int]]:
    """`dataset.{name}.{count}` index stats back into {name: {rows, kept, tokens, tiles}}."""
    out: dict[str, dict[str, int]] = {}
    for key, value in stats.items():
        if key.startswith("dataset."):
            name, _, count = key[len("dataset."):].rpartition(".")
            out.setdefault(name, {"rows": 0, "kept": 0, "tokens": 0, "tiles": 0})[count] = value
    return out


@dataclass(frozen=True)
class RatioPlan:
    """The weights a target text : multimodal ratio chose, and the ratio they should give."""

    target: tuple[float, float]  # text-only : multimodal tokens
    weights: dict[str, float]  # dataset -> factor on its repeat_time
    before: float  # text / multimodal tokens under the meta file's repeat_times alone
    expected: float  # the same with the weights (the packs' own ratio differs by the hashed fractions)

    def record(self) -> dict[str, Any]:
        """What `_index.json` keeps under `ratio`."""
        return {"target": list(self.target), "weights": dict(sorted(self.weights.items())),
                "before": self.before, "expected": self.expected}


def ratio_weights(counts: dict[str, dict[str, int]], datasets: Any, target: Any, by: str = "subsample") -> RatioPlan:
    """Per-dataset weights that bring text-only : multimodal tokens to `target` (a, b).

    `counts`: per dataset its `text` and `multimodal` tokens with one copy per row. A dataset is on
    the text side when most of its tokens are text-only; one side's datasets all get the same
    weight f, solved from (f Tt + Tm) / (f Mt + Mm) = a / b. `by: subsample` scales the
    over-represented side down (no sample seen twice more than the meta file says), `repeat` the
    scarce side up. ValueError when one side has no tokens or the other side alone overshoots."""
    a, b = (float(x) for x in target)
    if not (a > 0 and b > 0):
        raise ValueError(f"target_ratio {target}: two positive numbers, text-only : multimodal")
    r = a / b
    side: dict[str, str] = {}
    sums = {("text", "text"): 0.0, ("text", "multimodal"): 0.0, ("multimodal", "text"): 0.0,
            ("multimodal", "multimodal"): 0.0}
    for ds in datasets:
        c = counts.get(ds.name, {})
        t, m = c.get("text", 0) * ds.repeat_time, c.get("multimodal", 0) * ds.repeat_time
        side[ds.name] = "text" if t > m else "multimodal"
        sums[side[ds.name], "text"] += t
        sums[side[ds.name], "multimodal"] += m
    tt, mt, tm, mm = (sums["text", "text"], sums["text", "multimodal"], sums["multimodal", "text"],
                      sums["multimodal", "multimodal"])
    if tt + tm <= 0 or mt + mm <= 0 or tt - r * mt <= 0 or r * mm - tm <= 0:
        raise ValueError(f"target_ratio {a:g}:{b:g} cannot be reached by weighting whole datasets: text-only datasets "
                         f"hold {tt:.0f} text / {mt:.0f} multimodal tokens, multimodal ones {tm:.0f} / {mm:.0f}")
    f = (r * mm - tm) / (tt - r * mt)  # the text side's factor; the multimodal side's alternative is 1 / f
    scale_text = f < 1 if by == "subsample" else f > 1
    weights = {name: (f if s == "text" else 1.0) if scale_text else (1.0 if s == "text" else 1 / f)
               for name, s in side.items()}
    wt, wm = (f, 1.0) if scale_text else (1.0, 1 / f)
    return RatioPlan((a, b), weights, (tt + tm) / (mt + mm), (wt * tt + wm * tm) / (wt * mt + wm * mm))


def token_sides(unit: Any) -> tuple[str, str, int] | None:
    """(dataset, text | multimodal, tokens) of a meta dataset's unit, for the counting pass."""
    name = dataset_of(unit.source_file)
    return None if name is None else (name, "multimodal" if unit.images else "text", unit.tokens)
