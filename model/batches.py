"""Packed shards -> model inputs: one packed row per batch (batch size 1, as InternVL's packed training).

A pack's stored images are decoded, re-tiled from their stored grids (packing.tiling.cut_tiles,
the packer's own tiling) and normalised into one pixel_values tensor, each stored image once even
when a preference pair's two segments use it. Position ids restart per segment, cu_seqlens bound
the segments, targets are the labels shifted within each segment (a segment never predicts the
next one's first token), and every `<IMG_CONTEXT>` position is mapped to its image feature row.
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
    position_ids: torch.Tensor  # (L,) restarting at 0 per segment
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


def tiles_tensor(img: Image.Image, tiling: Tiling, mean: Sequence[float], std: Sequence[float]) -> torch.Tensor:
    """(tiles, 3, 448, 448) float32, normalised, in InternVL's tile order (grid row-major, thumbnail last)."""
    arr = np.stack([np.asarray(t, dtype=np.float32) for t in cut_tiles(img, tiling)]) / 255.0
    arr = (arr - np.asarray(mean, np.float32)) / np.asarray(std, np.float32)
    return torch.from_numpy(arr.transpose(0, 3, 1, 2).copy())


def build_batch(sample: PackedSample, tokens: TokenIds, data: DataConfig = DataConfig(), shard: str = "",
                index: int = 0) -> PackedBatch:
    """One pack read back -> PackedBatch; PackError when its layout is inconsistent with its own json."""
    fatal = [detail for check, detail in pack_problems(sample.meta, sample.input_ids, sample.labels, tokens=tokens)
             if check in LAYOUT_CHECKS]
    if fatal:
        raise PackError(f"{sample.key}: {'; '.join(fatal)}")
    return assemble(sample, tokens, data, shard, index)


def assemble(sample: PackedSample, tokens: TokenIds, data: DataConfig = DataConfig(), shard: str = "",
             index: int = 0) -> PackedBatch:
    """The tensors of a pack whose layout `pack_problems` passed; PackError for an image that
    is missing, does not decode or does not re-tile as its json says."""
    meta, key = sample.meta, sample.key
    ids = sample.input_ids.astype(np.int64)
    labels = sample.labels.astype(np.int64)
    n = len(ids)
    segs = meta["segments"]
    bounds = [0] + [s["offset"] + s["length"] for s in segs]
    lengths = np.diff(bounds)
    seg_of = np.repeat(np.arange(len(segs)), lengths)
    positions = np.arange(n) - np.repeat(np.asarray(bounds[:-1]), lengths)
    targets = np.full(n, IGNORE_INDEX, dtype=np.int64)
    targets[:-1] = labels[1:]
    targets[np.asarray(bounds[1:]) - 1] = IGNORE_INDEX  # a segment's last token predicts nothing

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
        pixels.append(tiles_tensor(img, tiling, data.mean, data.std))

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


# -- streaming over a shard folder, resumable --------------------------------------------------------

@dataclass(frozen=True)
class Position:
    """Where an epoch stands: packs consumed from the start of each shard (shards are read in order)."""

    epoch: int = 0
    consumed: dict[str, int] = field(default_factory=dict)


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


def plan_epoch(shards: list[dict[str, Any]], workers: int, position: Position, seed: int, shuffle: bool
               ) -> list[list[tuple[str, int]]]:
    """Per DataLoader worker, the (shard, pack) items it yields for the rest of the epoch.

    Shards go whole to streams (shard k of the epoch order to stream k mod W), so each worker reads
    only its own tars; the global order is the DataLoader's round robin over the streams. A resumed
    epoch drops what was consumed and rotates the streams so that the same round robin continues
    exactly where it stopped: with the same worker count, training after a resume is bit-identical.
    """
    w = max(1, workers)
    order = epoch_order(shards, position.epoch, seed, shuffle)
    streams: list[list[tuple[str, int]]] = [[] for _ in range(w)]
    for k, entry in enumerate(order):
        streams[k % w] += [(entry["name"], j) for j in range(packs_in(entry))]
    full = round_robin(streams)
    rest = [(s, name, j) for s, name, j in full if j >= position.consumed.get(name, 0)]
    slot = {s: i for i, s in enumerate(dict.fromkeys(s for s, _, _ in rest))}  # streams by first appearance
    per_worker: list[list[tuple[str, int]]] = [[] for _ in range(w)]
    for s, name, j in rest:
        per_worker[slot[s]].append((name, j))
    return per_worker


class PackedDataset(torch.utils.data.IterableDataset):
    """Streams PackedBatches of one epoch from a packed shard folder, tar by tar (never a whole shard set)."""

    def __init__(self, folder: str, tokens: TokenIds, data: DataConfig, seed: int = 0,
                 position: Position = Position(), workers: int = 0) -> None:
        super().__init__()
        self.folder = str(folder)
        self.shardset = ShardSet.open(self.folder)
        if self.shardset.kind != "packed":
            raise PackError(f"{folder} holds {self.shardset.kind} shards; train and check read packed shards (curate pack)")
        self.tokens = tokens
        self.data = data
        self.seed = seed
        self.position = position
        self.plan = plan_epoch(self.shardset.shards, workers, position, seed, data.shuffle_shards)

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
        entries = {e["name"]: e for e in self.shardset.shards}
        wanted: dict[str, set[int]] = {}
        shard_order: list[str] = []
        for name, j in items:
            if name not in wanted:
                wanted[name] = set()
                shard_order.append(name)
            wanted[name].add(j)
        for name in shard_order:
            with self.shardset.open_tar(entries[name]) as f:
                for j, sample in enumerate(iter_packs(f)):
                    if j in wanted[name]:
                        yield build_batch(sample, self.tokens, self.data, name, j)


def loader(dataset: PackedDataset, workers: int) -> torch.utils.data.DataLoader:
    """A DataLoader yielding PackedBatch rows one by one (batch size 1: the row is the batch).
    Workers are spawned, never forked: a fork of a process whose OpenMP / engine threads are running
    (vLLM, PaddlePaddle and onnxruntime all start them) can deadlock in the child."""
    return torch.utils.data.DataLoader(dataset, batch_size=None, num_workers=workers,
                                       persistent_workers=False, prefetch_factor=2 if workers else None,
                                       multiprocessing_context="spawn" if workers else None)
