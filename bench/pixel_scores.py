"""Throughput of the models that look at the downloaded pixels (filters/quality/pixel_models.py),
on CPU, as ingest runs them: one image at a time per download thread, on the image to be stored
(`--size` px on the shorter side). Input: scikit-image's 18 sample photos, resized, cycled to
`--images`. Prints one JSON line per scorer with `model`, `images_per_s` and `ms_per_image`:

- `open_nsfw`: `nsfw_score` (one onnxruntime session, `--threads` intra-op threads), one image per
  call as ingest calls it; `open_nsfw_batch8`: the wheel's own batched API (`score_images`, 8 per
  call), its recommended way for throughput, on the same images;
- `haar_faces`: `detect_faces` (OpenCV's frontal face cascade, the recipe's settings);
- `ingest_image_step`: `process_image` with both on (decode, resize, NSFW, faces, blur, JPEG
  encode) against the same step with neither, so the models' share of the step is in view;
- `clip_vit_b16`: the CLIP step's scorer (`ClipScorer.score`: preprocessing, both towers, cosine),
  `--clip-batch` images and captions per call, on a randomly initialised model of ViT-B/16's
  architecture (curation/samples/tiny_clip.py: no CLIP weights ship offline; throughput does not
  depend on the weights), on CPU, and on the GPU in float16 when there is one (`device`).

    python bench/pixel_scores.py --images 200 --size 512 [--clip-images 256 --clip-batch 32]
"""

from __future__ import annotations

import argparse
import io
import json
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

PHOTOS = ["astronaut", "coffee", "chelsea", "rocket", "camera", "horse", "coins", "page", "text", "brick", "grass",
          "gravel", "colorwheel", "logo", "moon", "retina", "immunohistochemistry", "hubble_deep_field"]


def photos(n: int, size: int):
    import skimage.data
    from PIL import Image

    base = []
    for name in PHOTOS:
        img = Image.fromarray(getattr(skimage.data, name)()).convert("RGB")
        scale = size / min(img.size)
        base.append(img.resize((round(img.width * scale), round(img.height * scale))))
    return [base[i % len(base)] for i in range(n)]


def timed(model: str, n: int, fn, **extra) -> dict:
    t0 = time.perf_counter()
    fn()
    s = time.perf_counter() - t0
    return {"bench": "pixel_scores", "model": model, "images": n, "images_per_s": round(n / s, 1),
            "ms_per_image": round(1000 * s / n, 2), "cores": os.cpu_count(), **extra}


def clip_lines(args) -> None:
    import tempfile

    import torch

    from curation.samples.tiny_clip import save_random_clip
    from filters.quality.clip import ClipConfig, ClipScorer

    imgs = photos(args.clip_images, args.size)
    captions = [f"a photo of the {PHOTOS[i % len(PHOTOS)]} sample, number {i}" for i in range(len(imgs))]
    devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    with tempfile.TemporaryDirectory() as folder:
        model = str(save_random_clip(folder, vit_b16=True))
        for device in devices:
            scorer = ClipScorer(ClipConfig(model=model, device=device, batch_size=args.clip_batch))
            b = args.clip_batch
            scorer.score(imgs[:b], captions[:b])  # warm
            line = timed("clip_vit_b16", len(imgs),
                         lambda: [scorer.score(imgs[i:i + b], captions[i:i + b]) for i in range(0, len(imgs), b)],
                         size=args.size, batch=b, device=device, dtype=str(scorer.dtype).removeprefix("torch."),
                         torch_threads=torch.get_num_threads(), weights="random (ViT-B/16 architecture)")
            if device == "cuda":
                line["gpu"] = torch.cuda.get_device_name()
            print(json.dumps(line), flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=int, default=200)
    ap.add_argument("--size", type=int, default=512)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--clip-images", type=int, default=256, help="images for the CLIP lines (0: none)")
    ap.add_argument("--clip-batch", type=int, default=32)
    args = ap.parse_args()
    if args.clip_images:
        clip_lines(args)

    from curation.ingest.config import ImageConfig
    from curation.ingest.images import process_image
    from filters.quality.faces import FacesConfig, detect_faces
    from filters.quality.nsfw import NsfwConfig, nsfw_model, nsfw_score
    from filters.quality.pixel_models import PixelModelsConfig

    imgs = photos(args.images, args.size)
    model = nsfw_model(args.threads)
    nsfw_score(imgs[0], args.threads)  # warm
    print(json.dumps(timed("open_nsfw", len(imgs), lambda: [nsfw_score(im, args.threads) for im in imgs],
                           threads=args.threads, size=args.size)), flush=True)
    print(json.dumps(timed("open_nsfw_batch8", len(imgs),
                           lambda: [model.score_images(imgs[i:i + 8]) for i in range(0, len(imgs), 8)],
                           threads=args.threads, size=args.size)), flush=True)
    faces = FacesConfig(detect=True)
    print(json.dumps(timed("haar_faces", len(imgs), lambda: [detect_faces(im, faces) for im in imgs], size=args.size)),
          flush=True)
    encoded = []
    for im in imgs:
        buf = io.BytesIO()
        im.save(buf, "JPEG", quality=95)
        encoded.append(buf.getvalue())
    image_cfg = ImageConfig(image_size=args.size)
    both = (PixelModelsConfig(nsfw=NsfwConfig(enabled=True, threads=args.threads), faces=FacesConfig(detect=True, blur=True)),
            False)
    plain = timed("ingest_image_step_without_models", len(encoded), lambda: [process_image(d, image_cfg) for d in encoded],
                  size=args.size)
    print(json.dumps(plain), flush=True)
    print(json.dumps(timed("ingest_image_step_with_nsfw_and_faces", len(encoded),
                           lambda: [process_image(d, image_cfg, (), both) for d in encoded], size=args.size,
                           threads=args.threads)), flush=True)


if __name__ == "__main__":
    main()
