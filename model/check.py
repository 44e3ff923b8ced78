"""`curate check`: stream packed shards through the model and fail on any inconsistency.

Per pack: segments contiguous and within l_max / t_max; every image span is `<img>` + 256 x tiles
`<IMG_CONTEXT>` + `</img>` and no image token strays outside one; labels only on supervised text
(equal to the ids there, never on image tokens, counts as the json says); ids inside the vocabulary
and decodable; stored images decode and re-tile; the derived position ids restart at 0 per segment,
never decrease and advance 1 per text token and `data.v2pe_delta` per `<IMG_CONTEXT>` token; a finite
loss. On every `verify_every`-th pack the per-segment losses of the packed row must equal those of
each segment run alone (isolation). Check never augments: it sees the stored pixels.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np
import torch

from curation.core.shardset import ShardSet
from model.batches import PackError, assemble, build_batch, packs_in, unpack
from model.build import Loaded
from model.config import DataConfig
from model.forward import forward_logps
from packing.format import PackedSample, iter_packs
from packing.tokens import IGNORE_INDEX
from packing.validate import LAYOUT_CHECKS, TokenIds, pack_problems

CHECKS = ("segments", "image_tokens", "labels", "ids", "images", "positions", "loss", "isolation")


@dataclass
class CheckReport:
    folder: str
    packs: int = 0
    segments: int = 0
    images: int = 0
    tiles: int = 0
    tokens: int = 0
    supervised: int = 0
    verified: int = 0  # packs compared packed vs unpacked
    max_isolation_error: float = 0.0
    mean_loss: float = 0.0
    failures: list[dict[str, str]] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.failures and self.packs > 0

    def counts(self) -> dict[str, int]:
        c = Counter(f["check"] for f in self.failures)
        return {k: c.get(k, 0) for k in CHECKS}

    def to_json(self) -> dict[str, Any]:
        return {"folder": self.folder, "ok": self.ok, "packs": self.packs, "segments": self.segments,
                "images": self.images, "tiles": self.tiles, "tokens": self.tokens, "supervised": self.supervised,
                "verified": self.verified, "max_isolation_error": self.max_isolation_error, "mean_loss": self.mean_loss,
                "failures_by_check": self.counts(), "failures": self.failures[:100]}


def _decodes(tokenizer: Any, ids: np.ndarray, img_ctx: int) -> str | None:
    try:
        tokenizer.decode(ids[ids != img_ctx].tolist())
    except Exception as err:  # noqa: BLE001 - any tokenizer failure is a failed check, not a crash
        return f"{type(err).__name__}: {err}"
    return None


def position_problems(positions: torch.Tensor, ids: np.ndarray, bounds: Sequence[int], img_context: int,
                      delta: float) -> list[str]:
    """What is wrong with a row's position ids, judged from the ids alone: in each segment the first
    sits at 0, none decreases, and each token advances exactly 1 (text) or `delta` (`<IMG_CONTEXT>`)."""
    pos = positions.detach().cpu().double().numpy()
    out = []
    for k, (s, e) in enumerate(zip(bounds[:-1], bounds[1:])):
        if e <= s:
            continue
        if pos[s] != 0:
            out.append(f"segment {k} starts at position {pos[s]:g}, not 0")
        steps = np.diff(pos[s:e])
        if (steps < 0).any():
            out.append(f"segment {k}: position decreases at token {s + 1 + int(np.argmax(steps < 0))}")
        want = np.where(ids[s + 1:e] == img_context, delta, 1.0)
        bad = np.flatnonzero(steps != want)
        if bad.size:
            t = int(bad[0])
            out.append(f"segment {k}: token {s + 1 + t} advances the position by {steps[t]:g}, expected {want[t]:g} "
                       f"({bad.size} such tokens)")
    return out


@torch.no_grad()
def check_packs(folder: str, loaded: Loaded, data: DataConfig = DataConfig(), *, verify_every: int = 10,
                tolerance: float = 1e-4, limit: int | None = None, progress: bool = True) -> CheckReport:
    """Stream every pack of `folder` (or the first `limit`) through the checks and the model."""
    ss = ShardSet.open(folder)
    if ss.kind != "packed":
        raise PackError(f"{folder} holds {ss.kind} shards; curate check reads packed shards (curate pack)")
    report = CheckReport(str(folder))
    tokens = loaded.token_ids
    loaded.model.eval()
    losses: list[float] = []
    total = sum(packs_in(e) for e in ss.shards) if limit is None else limit
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=total, desc="check", unit="pack")
    seen = 0
    for entry in ss.shards:
        with ss.open_tar(entry) as f:
            for j, sample in enumerate(iter_packs(f)):
                if limit is not None and seen >= limit:
                    break
                seen += 1
                _check_one(report, sample, loaded, data, tokens, losses,
                           verify=verify_every > 0 and (seen - 1) % verify_every == 0, tolerance=tolerance)
                if bar is not None:
                    bar.update(1)
    if bar is not None:
        bar.close()
    report.mean_loss = float(np.mean(losses)) if losses else float("nan")
    return report


def _check_one(report: CheckReport, sample: PackedSample, loaded: Loaded, data: DataConfig, tokens: TokenIds,
               losses: list[float], *, verify: bool, tolerance: float) -> None:
    key = sample.key
    meta = sample.meta
    report.packs += 1
    report.segments += len(meta["segments"])
    report.images += len(meta["images"])
    report.tiles += sum(im["tiles"] for im in meta["images"])
    report.tokens += len(sample.input_ids)
    report.supervised += int(np.sum(sample.labels != IGNORE_INDEX))

    def fail(check: str, detail: str) -> None:
        report.failures.append({"pack": key, "check": check, "detail": detail})

    problems = pack_problems(meta, sample.input_ids, sample.labels, members={"json", "input_ids.npy", "labels.npy", *sample.images},
                             tokens=tokens)
    for check, detail in problems:
        fail(check, detail)
    if any(c in LAYOUT_CHECKS for c, _ in problems):
        return  # the model cannot run this row meaningfully
    bad = _decodes(loaded.tokenizer, sample.input_ids, tokens.img_context)
    if bad:
        fail("ids", f"tokenizer cannot decode: {bad}")
    try:
        batch = assemble(sample, tokens, data)  # its layout was just checked; no epoch: never augmented
    except PackError as err:
        fail("images", str(err))
        return
    for detail in position_problems(batch.position_ids, sample.input_ids, batch.cu_seqlens.tolist(),
                                    tokens.img_context, data.v2pe_delta):
        fail("positions", detail)
    batch = batch.to(loaded.device)
    tl = forward_logps(loaded, batch)
    sums, counts = tl.per_segment()
    per_segment = sums / counts.clamp(min=1)
    if not torch.isfinite(per_segment).all():
        fail("loss", f"non-finite loss in segments {torch.nonzero(~torch.isfinite(per_segment)).flatten().tolist()}")
        return
    losses.append(float(-sums.sum() / counts.sum().clamp(min=1)))
    if not verify:
        return
    report.verified += 1
    for k, sub in enumerate(unpack(sample)):
        s_sum, s_count = forward_logps(loaded, build_batch(sub, tokens, data).to(loaded.device)).per_segment()
        err = abs(float(s_sum[0] / s_count[0].clamp(min=1)) - float(per_segment[k]))
        report.max_isolation_error = max(report.max_isolation_error, err)
        if err > tolerance or int(s_count[0]) != int(counts[k]):
            seg = meta["segments"][k]
            fail("isolation", f"segment {seg['id']} ({seg['role']}): packed loss {-float(per_segment[k]):.6f} vs alone "
                              f"{-float(s_sum[0] / s_count[0].clamp(min=1)):.6f} (|diff| {err:.2e} > {tolerance:g})")
