"""Packed shards -> model inputs: one packed row per batch (batch size 1, as InternVL's packed training).

A pack's stored images are decoded, re-tiled from their stored grids (packing.tiling.cut_tiles,
the packer's own tiling) and normalised into one pixel_values tensor, each stored image once even
when a preference pair's two segments use it. Position ids restart per segment, cu_seqlens bound
the segments, targets are the labels shifted within each segment (a segment never predicts the
next one's first token), and every `<IMG_CONTEXT>` position is mapped to its image feature row.

Two InternVL recipe options, both off by default: V2PE position ids (`data.v2pe_delta` < 1: an
`<IMG_CONTEXT>` token advances the position by delta, a text token by 1) and, when the training
loader passes its epoch, JPEG re-encoding of every tile at a seeded quality (`data.jpeg_augment`).
`curate check` passes no epoch: it always sees the stored pixels.
"""

from __future__ import annotations

import io
import random
from dataclasses import dataclass, field
from typing import Any, Iterator, Sequence

import numpy as np
import torch
from PIL import Image

from curation.core.images import to_rgb
from curation.core.shardset import ShardSet
from model.config import DataConfig
from packing.format import PackedSample, iter_packs
from packing.tiling import TOKENS_PER_TILE, Tiling, cut_tiles
from packing.tokens import IGNORE_INDEX
from packing.validate import LAYOUT_CHECKS, TokenIds, pack_problems


class PackError(ValueError):
    """A pack that cannot be turned into model inputs; names the pack and what is wrong."""


@dataclass
class PackedBatch:
    """Model inputs of one packed row (tensors on CPU until `.to(device)`)."""

    key: str
    input_ids: torch.Tensor  # (L,) long
    labels: torch.Tensor  # (L,) long, unshifted, -100 = not supervised
    targets: torch.Tensor  # (L,) long: labels[t + 1] within t's segment, else -100
    position_ids: torch.Tensor  # (L,) restarting at 0 per segment: long, or float32 under V2PE (delta < 1)
    segment_ids: torch.Tensor  # (L,) segment index of each position
    cu_seqlens: torch.Tensor  # (S + 1,) int32
    max_seqlen: int
    pixel_values: torch.Tensor  # (tiles, 3, 448, 448)
    image_positions: torch.Tensor  # (n,) positions of <IMG_CONTEXT> tokens, in row order
    feature_rows: torch.Tensor  # (n,) row of the flat (tiles x 256) image features for each of them
    segments: list[dict[str, Any]] = field(default_factory=list)  # the pack json's segments
    shard: str = ""
    index: int = 0  # pack number within its shard

    def to(self, device: torch.device | str, dtype: torch.dtype | None = None) -> "PackedBatch":
        moved = {k: (v.to(device) if isinstance(v, torch.Tensor) else v) for k, v in self.__dict__.items()}
        if dtype is not None:
            moved["pixel_values"] = moved["pixel_values"].to(dtype)
        return PackedBatch(**moved)

    @property
    def tokens(self) -> int:
        return int(self.input_ids.numel())


def decode_image(data: bytes, max_pixels: int) -> Image.Image:
    """Stored bytes -> RGB (first frame), refusing decompression bombs before decoding any pixel."""
    img = Image.open(io.BytesIO(data))
    if img.width * img.height > max_pixels:
        raise PackError(f"{img.width}x{img.height} image over max_pixels {max_pixels}")
    img.seek(0)
    img.load()
    return to_rgb(img)


def jpeg_reencode(tile: Image.Image, quality: int) -> Image.Image:
    """One JPEG round trip at `quality` with Pillow's other defaults, as InternVL's training transform
    does to every tile (internvl_chat/internvl/train/dataset.py: simulate_jpeg_degradation)."""
    buf = io.BytesIO()
    tile.save(buf, format="JPEG", quality=quality)
    out = Image.open(io.BytesIO(buf.getvalue()))
    out.load()
    return out


def jpeg_qualities(bounds: tuple[int, int], seed: int, epoch: int, key: str, image: str, tiles: int) -> list[int]:
    """Per-tile JPEG qualities U[low, high] (InternVL 2.5 / 3 SFT: 75..100, one draw per tile as its
    RandomChoice per transformed tile), a function of (run seed, epoch, pack key, image) only: the
    same pack in the same epoch gets the same bytes in any DataLoader worker, on any rank, resumed
    or not. `random.Random` seeds a str through sha512, never Python's per-process salted hash."""
    rng = random.Random(f"jpeg:{seed}:{epoch}:{key}:{image}")
    return [rng.randint(bounds[0], bounds[1]) for _ in range(tiles)]


def tiles_tensor(img: Image.Image, tiling: Tiling, mean: Sequence[float], std: Sequence[float],
                 qualities: Sequence[int] | None = None) -> torch.Tensor:
    """(tiles, 3, 448, 448) float32, normalised, in InternVL's tile order (grid row-major, thumbnail last);
    with `qualities`, each tile JPEG re-encoded at its own quality first (training augmentation)."""
    tiles = cut_tiles(img, tiling)
    if qualities is not None:
        if len(qualities) != len(tiles):
            raise ValueError(f"{len(qualities)} JPEG qualities for {len(tiles)} tiles")
        tiles = [jpeg_reencode(t, q) for t, q in zip(tiles, qualities)]
    arr = np.stack([np.asarray(t, dtype=np.float32) for t in tiles]) / 255.0
    arr = (arr - np.asarray(mean, np.float32)) / np.asarray(std, np.float32)
    return torch.from_numpy(arr.transpose(0, 3, 1, 2).copy())


def segment_positions(ids: np.ndarray, bounds: Sequence[int], img_context: int, delta: float = 1.0) -> np.ndarray:
    """Position ids of a packed row, restarting at 0 in each segment [bounds[k], bounds[k+1]).

    delta 1: int64 0, 1, ..., L_k - 1 per segment. delta < 1 is V2PE (InternVL 3, Ge et al. 2024):
    inside a segment each `<IMG_CONTEXT>` token advances the position by delta and every other token
    (text, `<img>`, `</img>`) by 1, as InternVL's get_rope_pos_id 'v2pe_fix' builds them
    (internvl_chat/internvl/v2pe_utils.py: `rope_pos_id_stride / num_image_token` per image token,
    linspace over the span, then ceil). With delta = 1/2^k (k <= 8) and 256 x tiles tokens per span
    the span ends on a whole position, so that ceil is the identity and the positions are exact
    dyadic numbers (float32 holds them exactly below 2^24 * delta)."""
    bounds = np.asarray(bounds, dtype=np.int64)
    lengths = np.diff(bounds)
    starts = np.repeat(bounds[:-1], lengths)
    if delta == 1:
        return np.arange(len(ids)) - starts
    step = np.where(ids == img_context, delta, 1.0)
    step[bounds[:-1][lengths > 0]] = 0.0  # each segment's first token sits at 0
    run = np.cumsum(step)  # float64: sums of dyadic steps are exact
    return (run - run[starts]).astype(np.float32)


def build_batch(sample: PackedSample, tokens: TokenIds, data: DataConfig = DataConfig(), shard: str = "",
                index: int = 0, *, epoch: int | None = None, seed: int = 0) -> PackedBatch:
    """One pack read back -> PackedBatch; PackError when its layout is inconsistent with its own json.
    `epoch` (with the run `seed`): the training loader's epoch, which turns on `data.jpeg_augment`."""
    fatal = [detail for check, detail in pack_problems(sample.meta, sample.input_ids, sample.labels, tokens=tokens)
             if check in LAYOUT_CHECKS]
    if fatal:
        raise PackError(f"{sample.key}: {'; '.join(fatal)}")
    return assemble(sample, tokens, data, shard, index, epoch=epoch, seed=seed)


def assemble(sample: PackedSample, tokens: TokenIds, data: DataConfig = DataConfig(), shard: str = "",
             index: int = 0, *, epoch: int | None = None, seed: int = 0) -> PackedBatch:
    """The tensors of a pack whose layout `pack_problems` passed; PackError for an image that
    is missing, does not decode or does not re-tile as its json says. Tiles are JPEG re-encoded
    only with `data.jpeg_augment` and an `epoch` (training); without one, the stored pixels."""
    meta, key = sample.meta, sample.key
    ids = sample.input_ids.astype(np.int64)
    labels = sample.labels.astype(np.int64)
    n = len(ids)
    segs = meta["segments"]
    bounds = [0] + [s["offset"] + s["length"] for s in segs]
    lengths = np.diff(bounds)
    seg_of = np.repeat(np.arange(len(segs)), lengths)
    positions = segment_positions(ids, bounds, tokens.img_context, data.v2pe_delta)
    targets = np.full(n, IGNORE_INDEX, dtype=np.int64)
    targets[:-1] = labels[1:]
    targets[np.asarray(bounds[1:]) - 1] = IGNORE_INDEX  # a segment's last token predicts nothing

    augment = data.jpeg_augment and epoch is not None
    images = meta["images"]
    tile_start = np.concatenate([[0], np.cumsum([im["tiles"] for im in images])]).astype(np.int64)
    pixels: list[torch.Tensor] = []
    for im in images:
        blob = sample.images.get(im["name"])
        if blob is None:
            raise PackError(f"{key}: image {im['name']} is not in the shard")
        try:
            img = decode_image(blob, data.max_pixels)
        except PackError as err:
            raise PackError(f"{key}: {im['name']}: {err}") from None
        except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as err:
            raise PackError(f"{key}: {im['name']} does not decode: {type(err).__name__}: {err}") from None
        tiling = Tiling(im["grid"][0], im["grid"][1], bool(im["thumbnail"]))
        if tiling.tiles != im["tiles"]:
            raise PackError(f"{key}: {im['name']} grid {im['grid']} gives {tiling.tiles} tiles, json says {im['tiles']}")
        qualities = jpeg_qualities(data.jpeg_quality, seed, epoch, key, im["name"], tiling.tiles) if augment else None
        pixels.append(tiles_tensor(img, tiling, data.mean, data.std, qualities))

    spans = [(start, end, i) for s in segs for start, end, i in s["image_spans"]]
    image_positions = np.concatenate([np.arange(a + 1, b - 1) for a, b, _ in spans]) if spans else np.zeros(0, np.int64)
    rows = [tile_start[i] * TOKENS_PER_TILE + np.arange(TOKENS_PER_TILE * images[i]["tiles"]) for _, _, i in spans]
    pixel_values = torch.cat(pixels) if pixels else torch.zeros(0, 3, 448, 448)
    return PackedBatch(
        key=key, input_ids=torch.from_numpy(ids), labels=torch.from_numpy(labels), targets=torch.from_numpy(targets),
        position_ids=torch.from_numpy(positions), segment_ids=torch.from_numpy(seg_of),
        cu_seqlens=torch.tensor(bounds, dtype=torch.int32), max_seqlen=int(lengths.max()), pixel_values=pixel_values,
        image_positions=torch.from_numpy(image_positions),
        feature_rows=torch.from_numpy(np.concatenate(rows) if rows else np.zeros(0, np.int64)),
        segments=segs, shard=shard, index=index)


def unpack(sample: PackedSample) -> list[PackedSample]:
    """Each segment of a pack as a pack of its own (its images only, renumbered): the unpacked reference."""
    out = []
    meta = sample.meta
    for k, s in enumerate(meta["segments"]):
        start, n = s["offset"], s["length"]
        used = sorted({i for _, _, i in s["image_spans"]})
        renumber = {old: new for new, old in enumerate(used)}
        images = [dict(meta["images"][i], name=f"img{renumber[i]}.{meta['images'][i]['name'].rsplit('.', 1)[-1]}") for i in used]
        blobs = {images[renumber[i]]["name"]: sample.images[meta["images"][i]["name"]] for i in used}
        seg = dict(s, offset=0, image_spans=[[a - start, b - start, renumber[i]] for a, b, i in s["image_spans"]])
        sub = dict(meta, pack=f"{sample.key}#{k}", tokens=n, tiles=sum(im["tiles"] for im in images), images=images, segments=[seg])
        out.append(PackedSample(f"{sample.key}#{k}", sub, sample.input_ids[start:start + n], sample.labels[start:start + n], blobs))
    return out


# -- streaming over a shard folder, resumable, split between ranks ----------------------------------

@dataclass(frozen=True)
class Position:
    """Where an epoch stands: how many packs of its global order (all ranks together) were consumed."""

    epoch: int = 0
    consumed: int = 0


def epoch_order(shards: list[dict[str, Any]], epoch: int, seed: int, shuffle: bool) -> list[dict[str, Any]]:
    order = list(shards)
    if shuffle:
        random.Random(f"{seed}:{epoch}").shuffle(order)
    return order


def round_robin(streams: list[list[tuple[str, int]]]) -> list[tuple[int, str, int]]:
    """(stream, shard, pack) in the order a DataLoader yields from one worker per stream: cyclic,
    skipping exhausted streams."""
    out: list[tuple[int, str, int]] = []
    cursors = [0] * len(streams)
    active = [i for i, s in enumerate(streams) if s]
    while active:
        still = []
        for i in active:
            out.append((i, *streams[i][cursors[i]]))
            cursors[i] += 1
            if cursors[i] < len(streams[i]):
                still.append(i)
        active = still
    return out


def packs_in(entry: dict[str, Any]) -> int:
    return int((entry.get("stats") or {}).get("packs", entry.get("count", 0)))


def epoch_items(shards: list[dict[str, Any]], streams: int, epoch: int, seed: int, shuffle: bool) -> list[tuple[str, int]]:
    """The epoch's global (shard, pack) order: shard k of the epoch's shard order goes whole to
    stream k mod `streams`, and the streams are read round robin. With `streams` a multiple of
    ranks x workers, each DataLoader worker of each rank reads its own tars (see `rank_plan`)."""
    lanes: list[list[tuple[str, int]]] = [[] for _ in range(max(1, streams))]
    for k, entry in enumerate(epoch_order(shards, epoch, seed, shuffle)):
        lanes[k % len(lanes)] += [(entry["name"], j) for j in range(packs_in(entry))]
    return [(name, j) for _, name, j in round_robin(lanes)]


def rank_plan(items: list[tuple[str, int]], rank: int, world: int, workers: int, multiple: int | None = 1
              ) -> list[list[tuple[str, int]]]:
    """Per DataLoader worker of `rank`, the packs it yields: the rank takes every `world`-th item
    (global item i to rank i mod world), only as many as make whole optimizer steps on every rank
    (`multiple` rows per rank and step; None: every item, for scoring), and deals them to its
    workers in turn, so that the DataLoader's round robin over the workers yields them back in
    exactly this order."""
    usable = len(items) if multiple is None else len(items) // (world * multiple) * world * multiple
    mine = items[rank:usable:world]
    w = max(1, workers)
    return [mine[j::w] for j in range(w)]


class PackedDataset(torch.utils.data.IterableDataset):
    """Streams one rank's PackedBatches of one epoch from a packed shard folder, tar by tar (never a
    whole shard set in memory). `position` skips what the run already consumed, so a resumed run
    continues the same global order exactly; `limit` keeps the first packs of that order only;
    `augment`: training's JPEG re-encoding (data.jpeg_augment), never for evaluation or scoring."""

    def __init__(self, folder: str, tokens: TokenIds, data: DataConfig, seed: int = 0,
                 position: Position = Position(), workers: int = 0, *, rank: int = 0, world: int = 1,
                 streams: int | None = None, multiple: int | None = 1, limit: int | None = None,
                 augment: bool = False) -> None:
        super().__init__()
        self.folder = str(folder)
        self.shardset = ShardSet.open(self.folder)
        if self.shardset.kind != "packed":
            raise PackError(f"{folder} holds {self.shardset.kind} shards; train and check read packed shards (curate pack)")
        self.tokens = tokens
        self.data = data
        self.seed = seed
        self.position = position
        self.epoch = position.epoch if augment else None  # JPEG augmentation draws by epoch; None: stored pixels
        self.streams = streams or world * max(1, workers)
        items = epoch_items(self.shardset.shards, self.streams, position.epoch, seed, data.shuffle_shards)
        self.epoch_packs = len(items) if limit is None else min(limit, len(items))
        self.plan = rank_plan(items[position.consumed:self.epoch_packs], rank, world, workers, multiple)

    def __len__(self) -> int:
        return sum(len(p) for p in self.plan)

    def __iter__(self) -> Iterator[PackedBatch]:
        info = torch.utils.data.get_worker_info()
        if info is not None:
            if info.num_workers != len(self.plan):
                raise RuntimeError(f"dataset planned for {len(self.plan)} workers, DataLoader has {info.num_workers}")
            items = self.plan[info.id]
        else:
            items = [(name, j) for _, name, j in round_robin(self.plan)]
        yield from self._read(items)

    def _read(self, items: list[tuple[str, int]]) -> Iterator[PackedBatch]:
        """The packs `items` names, in that order: each tar is read once, front to back, and stays
        open only while items still need it (items of a shard always come in pack order)."""
        entries = {e["name"]: e for e in self.shardset.shards}
        last = {name: k for k, (name, _) in enumerate(items)}
        readers: dict[str, tuple[Any, Iterator[PackedSample], list[int]]] = {}  # file, packs, cursor
        try:
            for k, (name, j) in enumerate(items):
                if name not in readers:
                    f = self.shardset.open_tar(entries[name])
                    readers[name] = (f, iter(iter_packs(f)), [-1])
                _, packs, cursor = readers[name]
                for sample in packs:
                    cursor[0] += 1
                    if cursor[0] == j:
                        yield build_batch(sample, self.tokens, self.data, name, j, epoch=self.epoch, seed=self.seed)
                        break
                else:
                    raise PackError(f"{name}: pack {j} is not in the shard (the index lists more packs than the tar holds)")
                if last[name] == k:
                    readers.pop(name)[0].close()
        finally:
            for f, _, _ in readers.values():
                f.close()


def loader(dataset: PackedDataset, workers: int) -> torch.utils.data.DataLoader:
    """A DataLoader yielding PackedBatch rows one by one (batch size 1: the row is the batch).
    Workers are spawned, never forked: a fork of a process whose OpenMP / engine threads are running
    (vLLM, PaddlePaddle and onnxruntime all start them) can deadlock in the child."""
    return torch.utils.data.DataLoader(dataset, batch_size=None, num_workers=workers,
                                       persistent_workers=False, prefetch_factor=2 if workers else None,
                                       multiprocessing_context="spawn" if workers else None)
