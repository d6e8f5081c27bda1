"""Harris corners that persist across pyramid levels, spread over the image (stage 4a).

A corner is worth tracking when it is a real structure of the scene, not a noise blip
or a fine texture that blur removes. Harris corners are found on every level of the
reference pyramid; a corner on the base level (the finest level that is tracked) is
**persistent** when each of the next ``persistence_levels`` coarser levels has a Harris
corner within ``radius_px`` of it, measured in that coarser level's pixels (the base
point ``p`` is compared with corners ``q`` of level ``k`` as ``|p / 2**k - q| <= r``:
the same tolerance of ``r`` coarse pixels, ``r * 2**k`` base pixels). Noise corners do
not survive the low-pass of the pyramid; corners of the scene do, shifted by at most a
pixel or so as the blur grows.

Persistent corners are then spread over the image with a grid (each cell gives its
best corners in turn, so one textured region cannot take the whole budget), capped,
and refined to sub-pixel accuracy with ``cv2.cornerSubPix``.

All coordinates are ``(x, y)`` pixel coordinates of the base level, ``float32 (N, 2)``.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np
import numpy.typing as npt

F32 = npt.NDArray[np.float32]
U8 = npt.NDArray[np.uint8]

_HARRIS_K = 0.04
_SUBPIX_CRITERIA = (cv2.TERM_CRITERIA_EPS | cv2.TERM_CRITERIA_COUNT, 20, 0.01)


@dataclass(frozen=True)
class CornerParams:
    """How corners are detected, filtered and spread (see the module docstring).

    ``max_corners``: corners returned at most. ``quality``: Harris response relative to
    the strongest one in the level (``goodFeaturesToTrack``'s ``qualityLevel``).
    ``min_distance_px``: base-level pixels between corners. ``margin_px``: base-level
    pixels kept free at the border (the tracking window must fit). ``persistence_levels``:
    coarser levels that must confirm a corner (0 = no persistence test).
    ``radius_px``: confirmation tolerance, in the coarser level's pixels. ``grid``: cells
    along the longer image side.
    """

    max_corners: int
    quality: float
    min_distance_px: float
    margin_px: int
    persistence_levels: int
    radius_px: float
    grid: int
    subpix_window_px: int = 5


def harris_corners(
    image: U8, max_count: int, quality: float, min_distance: float, margin: int
) -> F32:
    """Harris corners of one level, strongest first, as ``float32 (N, 2)`` integer pixels.

    Non-maximum suppression and the relative quality threshold are
    ``cv2.goodFeaturesToTrack``'s (``useHarrisDetector=True``, ``k=0.04``, 3x3 block).
    ``max_count <= 0`` means no limit. Pixels within ``margin`` of the border are skipped.
    """
    h, w = image.shape
    if h <= 2 * margin + 2 or w <= 2 * margin + 2:
        return np.empty((0, 2), np.float32)
    mask = np.zeros((h, w), np.uint8)
    mask[margin : h - margin, margin : w - margin] = 255
    found = cv2.goodFeaturesToTrack(
        image,
        maxCorners=max(0, max_count),
        qualityLevel=quality,
        minDistance=min_distance,
        mask=mask,
        blockSize=3,
        useHarrisDetector=True,
        k=_HARRIS_K,
    )
    if found is None:
        return np.empty((0, 2), np.float32)
    out: F32 = found.reshape(-1, 2).astype(np.float32)
    return out


def persists(points: F32, coarse: F32, coarse_shape: tuple[int, int], scale: float,
             radius: float) -> npt.NDArray[np.bool_]:
    """Which ``points`` have a ``coarse`` corner within ``radius`` coarse pixels.

    ``points``: base-level ``(N, 2)``; ``coarse``: integer-pixel corners ``(M, 2)`` of a
    level ``scale`` times coarser, of size ``coarse_shape = (h, w)``. Exact distance test
    on an occupancy grid (coarse corners are integer pixels), ``O(N * r**2)``.
    """
    h, w = coarse_shape
    occupied = np.zeros((h, w), np.bool_)
    if len(coarse):
        cx = np.clip(coarse[:, 0].astype(np.intp), 0, w - 1)
        cy = np.clip(coarse[:, 1].astype(np.intp), 0, h - 1)
        occupied[cy, cx] = True
    q = points.astype(np.float64) / scale
    ix, iy = np.rint(q[:, 0]).astype(np.intp), np.rint(q[:, 1]).astype(np.intp)
    reach = int(np.ceil(radius + 0.5))
    hit = np.zeros(len(points), np.bool_)
    for dy in range(-reach, reach + 1):
        for dx in range(-reach, reach + 1):
            x, y = ix + dx, iy + dy
            inside = (x >= 0) & (x < w) & (y >= 0) & (y < h)
            close = (x - q[:, 0]) ** 2 + (y - q[:, 1]) ** 2 <= radius * radius
            ok = inside & close
            hit[ok] |= occupied[y[ok], x[ok]]
    return hit


def spread(points: F32, shape: tuple[int, int], grid: int, cap: int) -> F32:
    """At most ``cap`` of ``points`` (strongest first), spread over a grid of cells.

    The image is cut into ``grid`` cells along its longer side (square cells). Cells
    give their strongest corner, then their second strongest, and so on, until ``cap``
    corners are taken: sparse regions keep what they have, textured regions cannot
    crowd them out, and the budget is still used when many cells are empty.
    """
    n = len(points)
    if n <= cap:
        return points
    h, w = shape
    cell = max(h, w) / max(1, grid)
    cols = int(np.ceil(w / cell))
    cell_id = (points[:, 1] // cell).astype(np.intp) * cols + (points[:, 0] // cell).astype(
        np.intp
    )
    order = np.argsort(cell_id, kind="stable")  # strength order kept inside each cell
    sorted_ids = cell_id[order]
    first = np.searchsorted(sorted_ids, sorted_ids, side="left")
    rank = np.empty(n, np.intp)
    rank[order] = np.arange(n) - first
    keep = np.lexsort((np.arange(n), rank))[:cap]  # by rank in cell, then strength
    out: F32 = points[np.sort(keep)]
    return out


def persistence_depth(points: F32, pyramid: list[U8], params: CornerParams) -> npt.NDArray[
    np.intp
]:
    """For each base-level point, how many consecutive coarser levels have a corner near it.

    ``pyramid[k]`` is ``2**k`` times coarser than the level of ``points``; a level
    confirms a point when one of its Harris corners lies within ``params.radius_px`` of
    it (that level's pixels). Returns ``intp (N,)`` in ``0 .. len(pyramid) - 1``.
    """
    depth = np.zeros(len(points), np.intp)
    alive = np.ones(len(points), np.bool_)
    for k in range(1, len(pyramid)):
        if not alive.any():
            break
        level = pyramid[k]
        coarse = harris_corners(level, 0, params.quality, 1.0, max(1, params.margin_px >> k))
        alive &= persists(points, coarse, level.shape[:2], float(2**k), params.radius_px)
        depth += alive
    return depth


def persistent_corners(pyramid: list[U8], params: CornerParams) -> F32:
    """Persistent, spread, sub-pixel Harris corners of ``pyramid[0]``, ``float32 (N, 2)``.

    ``pyramid`` is the reference pyramid from its base level on (element ``k`` is ``2**k``
    times coarser than element 0). Candidates at the base level are taken generously
    (8x the budget). A candidate's *depth* is the number of consecutive coarser levels
    that confirm it (see the module docstring); candidates with a depth below
    ``persistence_levels`` (clamped to the coarser levels there are) are dropped, and
    deeper ones go first when the grid spreads the budget (then the stronger ones).
    """
    base = pyramid[0]
    candidates = harris_corners(
        base, 8 * params.max_corners, params.quality, params.min_distance_px, params.margin_px
    )
    depth = persistence_depth(candidates, pyramid, params)
    required = min(params.persistence_levels, len(pyramid) - 1)
    keep = depth >= required
    candidates, depth = candidates[keep], depth[keep]
    candidates = candidates[np.argsort(-depth, kind="stable")]
    corners = spread(candidates, base.shape[:2], params.grid, params.max_corners)
    if not len(corners):
        return corners
    half = params.subpix_window_px // 2
    refined = cv2.cornerSubPix(
        base, corners.reshape(-1, 1, 2).copy(), (half, half), (-1, -1), _SUBPIX_CRITERIA
    ).reshape(-1, 2)
    # cornerSubPix can wander off a blob or an edge; such points keep their pixel position.
    moved = np.hypot(*(refined - corners).T) > half
    out: F32 = np.where(moved[:, None], corners, refined).astype(np.float32)
    return out
