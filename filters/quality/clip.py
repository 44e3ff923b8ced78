"""Image-text similarity on the downloaded pixels: a CLIP or SigLIP model (transformers' AutoModel
and AutoProcessor, from a hub id or a local folder) scores each stored image against its caption,
as InternVL 1.0 and DataComp's baselines filter, instead of trusting the metadata's `similarity`
column, which goes stale as images change behind their URLs.

`clip_pixel_similarity` is the cosine of the model's normalised image and text embeddings. It
rejects (`low_clip_pixel_similarity`, below `min_similarity`) only once the model has earned it on
the recipe's probe pairs (`calibration.probes`: images with same-named .txt captions, img2dataset's
`files` layout): each image's own caption must score above the other probes' captions (ROC-AUC >=
`min_auc`) and at most `max_clean_reject` of the matched pairs may fall below the threshold.

LAION's aesthetic predictor v2 (an MLP on normalised CLIP ViT-L/14 image embeddings, loaded from
`aesthetic.weights`) rides on the same image embeddings: `aesthetic_pixels`, rejecting
`low_aesthetic` below `aesthetic.min_score` only once it separates a labelled probe folder
(`aesthetic.calibration.probes`: `good/` and `bad/` images) as the NSFW gate does."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Sequence

from curation.core.config import ConfigError


@dataclass(frozen=True)
class ClipGateConfig:
    """The probe pairs the model is measured on before `min_similarity` may reject."""

    probes: str | None = None  # a folder of images, each with a same-named .txt caption; null: scores recorded only
    min_auc: float = 0.9  # ROC-AUC of matched pairs above mismatched ones (each image against the other captions)
    max_clean_reject: float = 0.1  # most of the matched probe pairs min_similarity may reject


@dataclass(frozen=True)
class AestheticGateConfig:
    """The labelled probe folder the predictor is measured on before `min_score` may reject."""

    probes: str | None = None  # a folder with good/ and bad/ images; null: scores recorded, nothing rejected
    min_auc: float = 0.8  # ROC-AUC (good above bad) the predictor must reach on the probes
    max_clean_reject: float = 0.1  # most of the good probes it may reject at min_score


@dataclass(frozen=True)
class AestheticConfig:
    """LAION's aesthetic predictor v2 on the CLIP image embedding (it expects ViT-L/14's 768 dims)."""

    weights: str | None = None  # its state dict (.pth, read with weights_only, or .safetensors); null: not scored
    # reject `low_aesthetic` below it (LAION-Aesthetics used 5, 6 and 6.5) once the gate is earned; null: record only
    min_score: float | None = None
    calibration: AestheticGateConfig = field(default_factory=AestheticGateConfig)


@dataclass(frozen=True)
class ClipConfig:
    """A CLIP / SigLIP model scoring every stored image against its caption, batched on workers."""

    model: str | None = None  # hub id or local folder (openai/clip-vit-large-patch14, google/siglip-so400m-patch14-384); null: off
    engine: Literal["transformers"] = "transformers"  # AutoModel + AutoProcessor (CLIP, SigLIP, SigLIP 2)
    batch_size: int = 32  # images per model call
    device: str = "auto"  # auto: cuda when the worker has one, else cpu
    dtype: Literal["auto", "float32", "float16", "bfloat16"] = "auto"  # auto: float16 on cuda, float32 on cpu
    accelerator: str | None = None  # Beam resource hint for the scoring step on Dataflow
    share_across_processes: bool = False  # one model per worker VM for all its SDK processes (docs/runbook.md)
    min_similarity: float | None = None  # reject below it (`low_clip_pixel_similarity`) once the gate is earned
    # keep the image embedding (float16, base64) in each json as `clip_embedding`, for `curate dedup`'s semantic_image
    store_embedding: bool = False
    calibration: ClipGateConfig = field(default_factory=ClipGateConfig)
    aesthetic: AestheticConfig = field(default_factory=AestheticConfig)

    def __post_init__(self) -> None:
        if self.batch_size < 1:
            raise ConfigError("pixels.clip.batch_size: at least 1")
        if self.min_similarity is not None and not -1.0 <= self.min_similarity <= 1.0:
            raise ConfigError(f"pixels.clip.min_similarity: a cosine in [-1, 1], got {self.min_similarity}")
        if self.aesthetic.weights and not self.model:
            raise ConfigError("pixels.clip.aesthetic.weights: needs pixels.clip.model (the predictor reads its embeddings)")
        if not 0.5 <= self.calibration.min_auc <= 1.0 or not 0.0 <= self.calibration.max_clean_reject <= 1.0:
            raise ConfigError("pixels.clip.calibration: min_auc in [0.5, 1], max_clean_reject in [0, 1]")

    @property
    def enabled(self) -> bool:
        return bool(self.model)


@dataclass(frozen=True)
class PixelScore:
    """One image's scores (rounded as the json stores them), or why it could not be scored."""

    similarity: float | None = None
    aesthetic: float | None = None
    error: str | None = None
    embedding: bytes | None = None  # the unit image embedding as float16 bytes, when asked for


def aesthetic_mlp(dim: int):
    """LAION's improved-aesthetic-predictor MLP (its state dict's `layers.N` names and shapes)."""
    from torch import nn

    return nn.Sequential(nn.Linear(dim, 1024), nn.Dropout(0.2), nn.Linear(1024, 128), nn.Dropout(0.2),
                         nn.Linear(128, 64), nn.Dropout(0.1), nn.Linear(64, 16), nn.Linear(16, 1))


def load_aesthetic(path: str, dim: int):
    """The predictor from its weights file, checked against the CLIP embedding size."""
    import torch

    if path.endswith(".safetensors"):
        from safetensors.torch import load_file

        state = load_file(path)
    else:  # never unpickle a downloaded file: tensors only
        state = torch.load(path, map_location="cpu", weights_only=True)
    state = {k.removeprefix("layers."): v for k, v in state.items()}
    first = state.get("0.weight")
    if first is None:
        raise ConfigError(f"pixels.clip.aesthetic.weights: {path} is not an aesthetic predictor state dict (no layers.0.weight)")
    if first.shape[1] != dim:
        raise ConfigError(f"pixels.clip.aesthetic.weights: {path} reads {first.shape[1]}-dim embeddings, "
                          f"the CLIP model gives {dim} (the predictor v2 expects ViT-L/14)")
    mlp = aesthetic_mlp(dim)
    mlp.load_state_dict(state)
    return mlp.eval()


class ClipScorer:
    """The loaded model: scores (image, caption) pairs in batches. Thread-safe (one call at a time)."""

    def __init__(self, cfg: ClipConfig) -> None:
        import torch
        from transformers import AutoModel, AutoProcessor

        if not cfg.model:
            raise ConfigError("pixels.clip.model: not set")
        self.cfg = cfg
        self.device = ("cuda" if torch.cuda.is_available() else "cpu") if cfg.device == "auto" else cfg.device
        dtype = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}.get(
            cfg.dtype, torch.float16 if self.device.startswith("cuda") else torch.float32)
        self.model = AutoModel.from_pretrained(cfg.model, dtype=dtype).to(self.device).eval()
        self.processor = AutoProcessor.from_pretrained(cfg.model)
        if not hasattr(self.model, "get_text_features") or not hasattr(self.model, "get_image_features"):
            raise ConfigError(f"pixels.clip.model: {cfg.model} is a {type(self.model).__name__}, not a CLIP / SigLIP "
                              "dual encoder")
        text_cfg = getattr(self.model.config, "text_config", None)
        self.max_length = int(getattr(text_cfg, "max_position_embeddings", 77))
        # SigLIP was trained on text padded to its full length, CLIP on the longest in the batch
        self.padding = "max_length" if "siglip" in self.model.config.model_type else "longest"
        self.dtype = dtype
        self.lock = threading.Lock()
        self.name = cfg.model.rstrip("/").split("/")[-1] if Path(cfg.model).exists() else cfg.model
        self.aesthetic = None
        if cfg.aesthetic.weights:
            dim = int(getattr(self.model.config, "projection_dim", 0) or getattr(text_cfg, "hidden_size", 0))
            self.aesthetic = load_aesthetic(cfg.aesthetic.weights, dim).to(self.device)

    def info(self) -> dict[str, Any]:
        return {"name": self.name, "device": self.device}

    def _embed(self, images: Sequence[Any], captions: Sequence[str]):
        import torch

        inputs = self.processor(text=list(captions), images=list(images), return_tensors="pt", padding=self.padding,
                                truncation=True, max_length=self.max_length)
        inputs = {k: (v.to(self.device, self.dtype) if k == "pixel_values" else v.to(self.device))
                  for k, v in inputs.items()}
        with torch.inference_mode():
            out = self.model(**inputs)
        img = torch.nn.functional.normalize(out.image_embeds.float(), dim=-1)
        txt = torch.nn.functional.normalize(out.text_embeds.float(), dim=-1)
        return img, txt

    def score(self, images: Sequence[Any], captions: Sequence[str]) -> list[PixelScore]:
        """Each image (RGB PIL) against its own caption. A failing batch is scored one by one, so
        one bad element gets its own error and the others their scores."""
        with self.lock:
            try:
                return self._score(images, captions)
            except Exception as e:  # noqa: BLE001 - narrowed below, element by element
                if len(images) == 1:
                    return [PixelScore(error=f"{type(e).__name__}: {e}"[:300])]
            out = []
            for image, caption in zip(images, captions):
                try:
                    out.extend(self._score([image], [caption]))
                except Exception as e:  # noqa: BLE001 - recorded as the element's reason, the batch goes on
                    out.append(PixelScore(error=f"{type(e).__name__}: {e}"[:300]))
            return out

    def _score(self, images: Sequence[Any], captions: Sequence[str]) -> list[PixelScore]:
        import torch

        img, txt = self._embed(images, captions)
        sims = (img * txt).sum(-1).tolist()
        aes = [None] * len(sims)
        if self.aesthetic is not None:
            with torch.inference_mode():
                aes = self.aesthetic(img.to(next(self.aesthetic.parameters()).dtype)).squeeze(-1).tolist()
        embeddings = img.cpu().numpy().astype("<f2") if self.cfg.store_embedding else [None] * len(sims)
        return [PixelScore(round(s, 4), None if a is None else round(a, 4),
                           embedding=None if e is None else e.tobytes())
                for s, a, e in zip(sims, aes, embeddings)]

    def matrix(self, images: Sequence[Any], captions: Sequence[str]) -> list[list[float]]:
        """Cosine of every image against every caption (the gate's matched and mismatched pairs)."""
        with self.lock:
            img, txt = self._embed(images, captions)
            return (img @ txt.T).tolist()


_MODELS: dict[ClipConfig, ClipScorer] = {}
_LOCK = threading.Lock()


def clip_scorer(cfg: ClipConfig) -> ClipScorer:
    """The process's one scorer for `cfg` (loaded on first use)."""
    with _LOCK:
        if cfg not in _MODELS:
            _MODELS[cfg] = ClipScorer(cfg)
        return _MODELS[cfg]


def read_probes(folder: str) -> list[tuple[Path, str]]:
    """(image path, caption) for every image in `folder` with a same-named non-empty .txt."""
    root = Path(folder)
    if not root.is_dir():
        raise ConfigError(f"pixels.clip.calibration.probes: {root} is not a folder")
    from filters.quality.gates import probe_paths

    pairs = []
    for path in probe_paths(root):
        txt = path.with_suffix(".txt")
        if txt.is_file() and (caption := txt.read_text(encoding="utf-8", errors="replace").strip()):
            pairs.append((path, caption))
    if len(pairs) < 2:
        raise ConfigError(f"pixels.clip.calibration.probes: {root} holds {len(pairs)} captioned images; "
                          "at least 2 are needed (each image's caption against the others')")
    return pairs


def clip_gate(cfg: ClipConfig) -> dict[str, Any]:
    """Measure the model on the probe pairs and decide whether `min_similarity` may reject; the
    document goes into `_index.json` as `clip_gate` (with the aesthetic predictor's own gate under
    `aesthetic`). Without probes or a threshold: recorded only."""
    from filters.quality.gates import decide_gate, load_rgb

    gate: dict[str, Any] = {"model": cfg.model, "min_similarity": cfg.min_similarity,
                            "min_auc": cfg.calibration.min_auc, "max_clean_reject": cfg.calibration.max_clean_reject}
    if cfg.aesthetic.weights:
        gate["aesthetic"] = aesthetic_gate(cfg)
    if cfg.min_similarity is None:
        return {**gate, "enforced": False, "why": "no min_similarity: scores recorded, nothing rejected"}
    if not cfg.calibration.probes:
        return {**gate, "enforced": False,
                "why": "no probe pairs (pixels.clip.calibration.probes): scores recorded, nothing rejected"}
    probes = read_probes(cfg.calibration.probes)
    images = [load_rgb(path) for path, _ in probes]
    scorer = clip_scorer(cfg)
    sims: list[list[float]] = []
    for i in range(0, len(images), cfg.batch_size):
        sims.extend(scorer.matrix(images[i:i + cfg.batch_size], [c for _, c in probes]))
    matched = [row[i] for i, row in enumerate(sims)]
    mismatched = [s for i, row in enumerate(sims) for j, s in enumerate(row) if i != j]
    # a matched pair should score high: the "clean" side is the matched pairs, rejected when below
    figures = decide_gate([-s for s in matched], [-s for s in mismatched], -cfg.min_similarity, cfg.calibration.min_auc,
                          cfg.calibration.max_clean_reject, "matched", "mismatched", f"below {cfg.min_similarity:g}")
    return {**gate, "probes": len(probes), **figures}


def aesthetic_gate(cfg: ClipConfig) -> dict[str, Any]:
    """Measure the aesthetic predictor on its labelled probes (`good/`, `bad/`) and decide whether
    `min_score` may reject; the document goes into `clip_gate.aesthetic`."""
    from filters.quality.gates import decide_gate, load_rgb, probe_paths

    a = cfg.aesthetic
    gate: dict[str, Any] = {"weights": a.weights, "min_score": a.min_score, "min_auc": a.calibration.min_auc,
                            "max_clean_reject": a.calibration.max_clean_reject}
    if a.min_score is None:
        return {**gate, "enforced": False, "why": "no min_score: scores recorded, nothing rejected"}
    if not a.calibration.probes:
        return {**gate, "enforced": False,
                "why": "no labelled probes (pixels.clip.aesthetic.calibration.probes): scores recorded, nothing rejected"}
    root = Path(a.calibration.probes)
    if not (root / "good").is_dir() or not (root / "bad").is_dir():
        raise ConfigError(f"pixels.clip.aesthetic.calibration.probes: {root} needs good/ and bad/ folders of images")
    scorer = clip_scorer(cfg)
    scores = {}
    for side in ("good", "bad"):
        images = [load_rgb(path) for path in probe_paths(root / side)]
        scores[side] = [s.aesthetic for i in range(0, len(images), cfg.batch_size)
                        for s in scorer.score(images[i:i + cfg.batch_size], [""] * len(images[i:i + cfg.batch_size]))]
    # badness is the negated score: rejected below min_score
    return {**gate, **decide_gate([-s for s in scores["good"]], [-s for s in scores["bad"]], -a.min_score,
                                  a.calibration.min_auc, a.calibration.max_clean_reject, "good", "bad",
                                  f"below {a.min_score:g}")}


def judge(sample: Any, score: PixelScore, model: str, cfg: ClipConfig, enforced: bool,
          aesthetic_enforced: bool = False) -> Any:
    """The sample with its scores in its json, or the Rejection they earn: `pixel_score_error`,
    `low_clip_pixel_similarity` (only with the CLIP gate `enforced`), `low_aesthetic` (only with
    the aesthetic gate `aesthetic_enforced`)."""
    from curation.core.records import Rejection

    if score.error is not None or score.similarity is None:
        return Rejection(sample.pair, "pixel_scores", "pixel_score_error", score.error or "no score")
    im = sample.image
    im.clip_pixel_similarity, im.clip_model, im.aesthetic_pixels = score.similarity, model, score.aesthetic
    if score.embedding is not None:
        import base64

        im.clip_embedding = base64.b64encode(score.embedding).decode("ascii")
    if enforced and cfg.min_similarity is not None and score.similarity < cfg.min_similarity:
        return Rejection(sample.pair, "pixel_scores", "low_clip_pixel_similarity",
                         f"{model} cosine {score.similarity:.4f} < {cfg.min_similarity:g}")
    low = cfg.aesthetic.min_score
    if aesthetic_enforced and low is not None and score.aesthetic is not None and score.aesthetic < low:
        return Rejection(sample.pair, "pixel_scores", "low_aesthetic", f"aesthetic {score.aesthetic:.3f} < {low:g}")
    return sample
