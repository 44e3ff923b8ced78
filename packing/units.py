"""What the packer places: a conversation or a whole preference pair, tiled and tokenized.

A `PackUnit` holds its images (path, size, InternVL tiling) and one token segment per sequence:
one for a conversation, two (chosen, rejected) for a preference pair, which share the images and
always land in the same pack. Over-long conversations are cut in text only; preference pairs and
samples over the tile limit are rejected, with a reason. An image a sample names twice (the same
path, or the same bytes where the reader gives a content key) is stored once and its spans share it;
with `blank_tile`, a unit with no image counts InternVL's one blank 448x448 tile (its loader feeds
pure-text samples a dummy tile with image_flags=0) toward t_max, its token ids unchanged.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Callable, Sequence

import numpy as np

from curation.core.conversations import Conversation, PreferencePair, Turn
from packing.tiling import Tiling, tile_budget, tile_image
from packing.tokens import ChatEncoder, EncodeError, Encoded, truncate


@dataclass(frozen=True, slots=True)
class ImageRef:
    path: str
    width: int
    height: int
    ext: str  # jpg | png | webp | ...: the stored bytes' own format
    tiling: Tiling
    max_num: int = 12  # the per-image tile budget and minimum the grid was chosen under
    min_num: int = 1


@dataclass(frozen=True, slots=True)
class Segment:
    """One sequence of a unit: `role` is sft, pretrain, chosen or rejected."""

    role: str
    input_ids: np.ndarray
    labels: np.ndarray
    image_spans: tuple[tuple[int, int, int], ...]  # (start, end, image index within the unit)
    truncated: bool = False

    @property
    def supervised(self) -> int:
        return int(np.count_nonzero(self.labels != -100))


@dataclass(frozen=True, slots=True)
class PackUnit:
    uid: str
    source_file: str
    source_row: int
    kind: str  # conversation | preference
    images: tuple[ImageRef, ...]
    segments: tuple[Segment, ...]
    method: str = ""
    blank_tiles: int = 0  # InternVL's dummy tile of a sample with no image, when the recipe counts it

    @property
    def tokens(self) -> int:
        return sum(len(s.input_ids) for s in self.segments)

    @property
    def tiles(self) -> int:
        """Tiles counted against t_max: each stored image once, even when two segments or two
        placeholders use it, plus the blank tile of an image-less unit where the recipe counts it."""
        return sum(im.tiling.tiles for im in self.images) + self.blank_tiles

    @property
    def truncated(self) -> bool:
        return any(s.truncated for s in self.segments)

    @property
    def text_only(self) -> bool:
        """No stored image (a blank tile does not make a sample multimodal)."""
        return not self.images

    @property
    def order_key(self) -> tuple[str, int]:
        return self.source_file, self.source_row


@dataclass(frozen=True)
class UnitLimits:
    l_max: int
    t_max: int
    max_num: int = 12
    min_num: int = 1
    use_thumbnail: bool = True
    truncate: bool = True
    blank_tile: bool = False  # count InternVL's blank tile for a unit with no image (pack.yaml text_only_blank_tile)


def tile_images(sizes: Sequence[tuple[int, int]], limits: UnitLimits) -> list[Tiling]:
    """InternVL tiling of every image with the shared per-image budget of multi-image samples."""
    budget = tile_budget(len(sizes), limits.max_num)
    return [tile_image(w, h, budget, min(limits.min_num, budget), limits.use_thumbnail) for w, h in sizes]


def unit_limits(rec: "Conversation | PreferencePair", limits: UnitLimits) -> UnitLimits:
    """The recipe's limits, with a record's own `tiling` in place of the recipe's: a preference
    pair's (the view its policy sampled under, so the model trains on the image that produced the
    answers) or a meta dataset's `max_dynamic_patch`."""
    tiling = getattr(rec, "tiling", None)
    if not tiling:
        return limits
    return dataclasses.replace(limits, max_num=tiling["max_num"], min_num=tiling["min_num"],
                               use_thumbnail=tiling["use_thumbnail"])


class UnitBuilder:
    """Conversation / PreferencePair + image (width, height, ext) -> PackUnit, or EncodeError."""

    def __init__(self, encoder: ChatEncoder, limits: UnitLimits) -> None:
        self.encoder = encoder
        self.limits = limits

    def build(self, rec: Conversation | PreferencePair, headers: Sequence[tuple[int, int, str]],
              keys: Sequence[str] | None = None) -> PackUnit:
        """`keys`: one identity per image (default its path); images with one key are stored once.
        The per-image budget still counts every placeholder, as InternVL's loader does."""
        lim = unit_limits(rec, self.limits)
        tilings = tile_images([(w, h) for w, h, _ in headers], lim)
        budget = tile_budget(len(headers), lim.max_num)
        first: dict[str, int] = {}
        slot = [first.setdefault(k, len(first)) for k in (keys if keys is not None else rec.images)]
        images = [ImageRef(rec.images[k], w, h, ext, t, budget, min(lim.min_num, budget))  # first use of each key
                  for k, ((w, h, ext), t) in enumerate(zip(headers, tilings)) if slot[k] not in slot[:k]]
        blank = 1 if lim.blank_tile and not images else 0
        tiles = sum(im.tiling.tiles for im in images) + blank
        if tiles > lim.t_max:
            raise EncodeError("too_many_tiles", f"{tiles} tiles > t_max {lim.t_max}")
        counts = [t.tiles for t in tilings]
        if isinstance(rec, PreferencePair):
            return self._pair(rec, images, counts, slot, blank)
        enc = _shared(self.encoder.encode(rec.turns, counts), slot)
        if enc.supervised == 0:
            raise EncodeError("no_supervised_tokens", "no assistant or pretrain text")
        role = "pretrain" if all(t.role == "pretrain" for t in rec.turns) else "sft"
        truncated = False
        if len(enc) > lim.l_max:
            if not lim.truncate:
                raise EncodeError("too_long", f"{len(enc)} tokens > l_max {lim.l_max}")
            enc, images = _cut(enc, images, lim.l_max)
            truncated = True
            if enc.supervised == 0:
                raise EncodeError("too_long", f"nothing supervised left within l_max {lim.l_max} (images are never cut)")
        seg = Segment(role, enc.input_ids, enc.labels, enc.image_spans, truncated)
        return PackUnit(rec.uid, rec.source_file, rec.source_row, "conversation", tuple(images), (seg,),
                        blank_tiles=blank)

    def _pair(self, rec: PreferencePair, images: list[ImageRef], counts: list[int], slot: list[int],
              blank: int) -> PackUnit:
        segments = []
        for role, answer in (("chosen", rec.chosen), ("rejected", rec.rejected)):
            enc = _shared(self.encoder.encode([Turn("user", rec.question), Turn("assistant", answer)], counts), slot)
            segments.append(Segment(role, enc.input_ids, enc.labels, enc.image_spans))
        tokens = sum(len(s.input_ids) for s in segments)
        if tokens > self.limits.l_max:
            raise EncodeError("too_long", f"chosen + rejected = {tokens} tokens > l_max {self.limits.l_max} "
                                          "(a preference pair is never truncated)")
        return PackUnit(rec.uid, rec.source_file, rec.source_row, "preference", tuple(images), tuple(segments), rec.method,
                        blank)


def _shared(enc: Encoded, slot: list[int]) -> Encoded:
    """Spans pointing at stored images: placeholder k's span names image slot[k]."""
    return Encoded(enc.input_ids, enc.labels, tuple((s, e, slot[i]) for s, e, i in enc.image_spans))


def _cut(enc: Encoded, images: list[ImageRef], limit: int) -> tuple[Encoded, list[ImageRef]]:
    """Text-only truncation; images whose span no longer fits are dropped and the rest renumbered."""
    cut = truncate(enc, limit)
    kept = sorted({i for _, _, i in cut.image_spans})
    renumber = {old: new for new, old in enumerate(kept)}
    spans = tuple((s, e, renumber[i]) for s, e, i in cut.image_spans)
    return Encoded(cut.input_ids, cut.labels, spans), [images[i] for i in kept]


_EXT = {"JPEG": "jpg", "PNG": "png", "WEBP": "webp", "GIF": "gif", "BMP": "bmp", "TIFF": "tiff", "MPO": "jpg"}


def read_header(f, max_pixels: int) -> tuple[int, int, str]:
    """(width, height, ext) from an image file's header alone; EncodeError for what cannot be used."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(f) as im:  # lazy: reads the header, decodes nothing
            width, height, fmt = im.width, im.height, im.format or ""
    except Image.DecompressionBombError as err:
        raise EncodeError("decompression_bomb", str(err)[:200]) from None
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as err:
        raise EncodeError("decode_error", f"{type(err).__name__}: {str(err)[:200]}") from None
    if width * height > max_pixels:
        raise EncodeError("decompression_bomb", f"{width}x{height} > {max_pixels} pixels")
    if width < 1 or height < 1:
        raise EncodeError("decode_error", f"image size {width}x{height}")
    return width, height, _EXT.get(fmt, fmt.lower() or "bin")


def resolve_image(root: str, path: str) -> str:
    """`root/path` for a relative path that stays inside root; EncodeError otherwise."""
    import posixpath

    norm = posixpath.normpath(path.replace("\\", "/"))
    if posixpath.isabs(norm) or norm == ".." or norm.startswith("../") or "://" in path:
        raise EncodeError("local_file_error", f"{path!r} is outside the image root")
    return posixpath.join(root.rstrip("/"), norm)


def look_image(path: str, max_pixels: int, by_content: bool, open_file: Callable[[str], Any],
               read_member: Callable[[str], bytes]) -> tuple[tuple[int, int, str], str]:
    """((width, height, ext) from an image's header, its identity within its sample): its path, or
    (`by_content`, a multi-image sample) a hash of its bytes, so a repeat is stored once. A tar
    member ref (`shard.tar!/uid.jpg@offset:size`) is read by its byte range (`read_member`), any
    other path opened with `open_file`; a missing or unreadable file is `local_file_error`."""
    import hashlib
    import io
    import posixpath

    from curation.core.image_refs import parse_member_ref

    try:
        if parse_member_ref(path) is not None:
            data = read_member(path)
            return read_header(io.BytesIO(data), max_pixels), (
                hashlib.blake2b(data, digest_size=16).hexdigest() if by_content else path)
        with open_file(path) as f:
            if not by_content:
                return read_header(f, max_pixels), path
            data = f.read()
        return read_header(io.BytesIO(data), max_pixels), hashlib.blake2b(data, digest_size=16).hexdigest()
    except EncodeError:
        raise
    except Exception as err:  # noqa: BLE001 - missing or unreadable file: that row's problem
        raise EncodeError("local_file_error", f"{posixpath.basename(path)}: {type(err).__name__}") from None
