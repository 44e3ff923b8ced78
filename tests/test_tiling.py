"""InternVL dynamic high resolution from width/height: hand-computed grids and the tie rule."""

import pytest

from packing.tiling import TOKENS_PER_TILE, candidate_grids, closest_grid, tile_budget, tile_image, tile_sample


@pytest.mark.parametrize("w,h,max_num,grid,tiles", [
    (800, 1300, 12, (2, 3), 7),      # aspect 0.615 -> 2x3 (0.667), + thumbnail
    (448, 448, 12, (1, 1), 1),       # square -> one tile, no thumbnail
    (1920, 1080, 12, (4, 2), 9),     # tie 2:1 vs 4:2, area > 0.5*448^2*8 -> larger grid
    (1000, 500, 12, (2, 1), 3),      # tie 2:1 vs 4:2, area 500k < 0.5*448^2*8=803k -> smaller grid
    (4000, 100, 12, (12, 1), 13),    # extreme panorama -> widest grid allowed
    (100, 4000, 6, (1, 6), 7),       # extreme portrait under max_num 6
    (1300, 800, 1, (1, 1), 1),       # max_num 1: always one tile
])
def test_hand_computed_grids(w, h, max_num, grid, tiles):
    t = tile_image(w, h, max_num)
    assert (t.columns, t.rows) == grid and t.tiles == tiles and t.tokens == tiles * TOKENS_PER_TILE


def test_candidates_respect_bounds():
    grids = candidate_grids(2, 6)
    assert all(2 <= i * j <= 6 for i, j in grids) and (1, 1) not in grids and (2, 3) in grids
    assert [i * j for i, j in grids] == sorted(i * j for i, j in grids)


def test_grid_respects_min_num():
    assert closest_grid(448, 448, min_num=4, max_num=12) == (2, 2)


def test_multi_image_budget_and_video():
    assert tile_budget(1, 12) == 12 and tile_budget(5, 12) == 2 and tile_budget(30, 12) == 1
    tilings = tile_sample([(1920, 1080), (800, 1300), (448, 448)], max_num=12)
    assert all(t.columns * t.rows <= 4 for t in tilings)
    assert [t.tiles for t in tile_sample([(1920, 1080)] * 8, video=True)] == [1] * 8


def test_bad_size():
    with pytest.raises(ValueError):
        tile_image(0, 10)
