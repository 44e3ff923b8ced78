"""InternVL dynamic high resolution, computed from width and height alone (no decode).

An image becomes a grid of i x j tiles of 448 px (min_num <= i*j <= max_num) whose aspect ratio is
closest to the image's; on a tie the larger grid wins only when the image area exceeds half the
grid's pixel area. A thumbnail tile is added when the grid has more than one tile. Each tile costs
256 tokens (448 / 14 patch = 32, pixel shuffle 0.5 -> 16 x 16).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

TILE_SIZE = 448
TOKENS_PER_TILE = 256


@lru_cache(maxsize=64)
def candidate_grids(min_num: int, max_num: int) -> tuple[tuple[int, int], ...]:
    """(i, j) grids with min_num <= i*j <= max_num, ordered as InternVL orders them (by tile count,
    ties in its set iteration order, which is deterministic for small int tuples)."""
    grids = set(
        (i, j) for n in range(min_num, max_num + 1) for i in range(1, n + 1) for j in range(1, n + 1)
        if min_num <= i * j <= max_num
    )
    return tuple(sorted(grids, key=lambda g: g[0] * g[1]))


def closest_grid(width: int, height: int, min_num: int = 1, max_num: int = 12, tile: int = TILE_SIZE) -> tuple[int, int]:
    """The (columns, rows) grid InternVL's find_closest_aspect_ratio picks."""
    aspect = width / height
    area = width * height
    best, best_diff = (1, 1), float("inf")
    for grid in candidate_grids(min_num, max_num):
        diff = abs(aspect - grid[0] / grid[1])
        if diff < best_diff:
            best, best_diff = grid, diff
        elif diff == best_diff and area > 0.5 * tile * tile * grid[0] * grid[1]:
            best = grid
    return best


@dataclass(frozen=True)
class Tiling:
    """How one image is cut: grid columns x rows, plus a thumbnail when more than one tile."""

    columns: int
    rows: int
    thumbnail: bool

    @property
    def tiles(self) -> int:
        return self.columns * self.rows + (1 if self.thumbnail else 0)

    @property
    def tokens(self) -> int:
        return self.tiles * TOKENS_PER_TILE


def tile_image(width: int, height: int, max_num: int = 12, min_num: int = 1, use_thumbnail: bool = True) -> Tiling:
    """Tiling of a width x height image under InternVL's dynamic high resolution."""
    if width <= 0 or height <= 0:
        raise ValueError(f"image size must be positive, got {width}x{height}")
    cols, rows = closest_grid(width, height, min_num, max_num)
    return Tiling(cols, rows, use_thumbnail and cols * rows > 1)


def tile_budget(n_images: int, max_num: int) -> int:
    """Per-image tile budget for multi-image samples, as InternVL: max(1, max_num // n_images)."""
    return max(1, max_num // max(1, n_images))


def tile_sample(sizes: list[tuple[int, int]], max_num: int = 12, video: bool = False) -> list[Tiling]:
    """Tilings for all images of a sample: one tile per video frame, else the shared budget."""
    if video:
        return [Tiling(1, 1, False) for _ in sizes]
    budget = tile_budget(len(sizes), max_num)
    return [tile_image(w, h, budget) for w, h in sizes]


def cut_tiles(image, tiling: Tiling, size: int = TILE_SIZE) -> list:
    """Pixels of InternVL's dynamic_preprocess for a stored grid: the image resized to
    (columns x size, rows x size), cut row-major into tiles, then the thumbnail (whole image at
    size x size) when the tiling has one. `image` is an RGB PIL image."""
    from PIL import Image

    cols, rows = tiling.columns, tiling.rows
    resized = image.resize((cols * size, rows * size), Image.Resampling.BICUBIC)
    tiles = [resized.crop((c * size, r * size, (c + 1) * size, (r + 1) * size)) for r in range(rows) for c in range(cols)]
    if tiling.thumbnail:
        tiles.append(image.resize((size, size), Image.Resampling.BICUBIC))
    return tiles
