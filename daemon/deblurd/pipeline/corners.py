"""Harris corners that persist across pyramid levels, spread over the image (stage 4a).

A corner is worth tracking when it is a structure of the scene, not a noise blip or a
fine texture that blur removes. Corners are local maxima of the Harris response
(``cv2.cornerHarris``, non-maximum suppression over ``min_distance_px``) above a
threshold: ``quality`` times the strongest response of the base level (the finest
level that is tracked). The response is computed on every level of the reference
pyramid, and the **same absolute threshold** is used on all of them.

**Persistence.** A base-level corner ``p`` is confirmed by level ``k`` (``2**k`` times
coarser) when level ``k`` has a corner ``q`` (3x3 local maximum above the threshold)
with ``|p / 2**k - q| <= radius_px``: the tolerance is ``radius_px`` pixels *of the
coarser level*, ``radius_px * 2**k`` base pixels, because corners drift by about a
pixel of their level as the pyramid blurs them. A corner's *depth* is the number of
consecutive coarser levels that confirm it; corners with a depth below
``persistence_levels`` are dropped. Pixel noise loses 2x of its amplitude per level and
16x of its Harris response, so its corners do not reach the threshold two levels up,
while the corners of shapes do (``tests/unit/test_registration.py`` measures both: with
the test, no corner of a noisy flat region is kept; without it, noise takes most of the
budget).

Persistent corners are then spread over the image with a grid (each cell gives its
best corner in turn, deeper corners first, then stronger ones, so one textured region
cannot take the whole budget), capped at ``max_corners``, and refined to sub-pixel
accuracy with ``cv2.cornerSubPix``.

All coordinates are ``(x, y)`` pixel coordinates of the base level, ``float32 (N, 2)``.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np
import numpy.typing as npt

from deblurd.imaging import F32, U8, Mask

__all__ = [
    "HARRIS_K",
    "CornerParams",
    "harris_corners",
    "harris_response",
    "persistence_depth",
    "persistent_corners",
    "persists",
    "refine_subpix",
    "select_persistent",
    "spread",
]

#: The Harris detector's ``k`` (every backend's response uses it).
HARRIS_K = 0.04
_SUBPIX_CRITERIA = (cv2.TERM_CRITERIA_EPS | cv2.TERM_CRITERIA_COUNT, 20, 0.01)


@dataclass(frozen=True)
class CornerParams:
    """How corners are detected, filtered and spread (see the module docstring).

    ``max_corners``: corners returned at most. ``quality``: Harris response threshold
    relative to the strongest base-level response. ``min_distance_px``: non-maximum
    suppression radius, base-level pixels. ``margin_px``: base-level
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


def harris_response(image: U8) -> F32:
    """Harris corner response ``float32 (h, w)`` of one ``uint8`` level (3x3 Sobel, 3x3
    block, ``k = 0.04``), in that level's own pixel units."""
    return np.asarray(cv2.cornerHarris(image, 3, 3, HARRIS_K), np.float32)


def harris_corners(
    response: F32, threshold: float, nms_radius: int, margin: int, max_count: int = 0
) -> F32:
    """Local maxima of a Harris ``response`` above ``threshold``, strongest first.

    A corner is the largest response within ``nms_radius`` pixels (a square window) and
    lies at least ``margin`` pixels from the border. ``max_count > 0`` keeps the
    strongest that many. Returns ``float32 (N, 2)`` integer ``(x, y)`` pixels.
    """
    h, w = response.shape
    if h <= 2 * margin + 2 or w <= 2 * margin + 2 or not threshold < float(response.max()):
        return np.empty((0, 2), np.float32)
    size = 2 * nms_radius + 1
    peaks = cv2.dilate(response, cv2.getStructuringElement(cv2.MORPH_RECT, (size, size)))
    is_max = (response >= peaks) & (response > threshold)
    inner = is_max[margin : h - margin, margin : w - margin]
    ys, xs = np.nonzero(inner)
    strength = response[ys + margin, xs + margin]
    order = np.argsort(-strength, kind="stable")
    if max_count > 0:
        order = order[:max_count]
    out: F32 = np.stack([xs[order] + margin, ys[order] + margin], axis=1).astype(np.float32)
    return out


def persists(
    points: F32, coarse: F32, coarse_shape: tuple[int, int], scale: float, radius: float
) -> Mask:
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
    """At most ``cap`` of ``points`` (given best first), spread over a grid of cells.

    The image is cut into ``grid`` cells along its longer side (square cells). Cells
    give their best corner, then their second best, and so on, until ``cap``
    corners are taken: sparse regions keep what they have, textured regions cannot
    crowd them out, and the budget is still used when many cells are empty.
    """
    n = len(points)
    if n <= cap:
        return points
    h, w = shape
    cell = max(h, w) / max(1, grid)
    cols = int(np.ceil(w / cell))
    cell_id = (points[:, 1] // cell).astype(np.intp) * cols + (points[:, 0] // cell).astype(np.intp)
    order = np.argsort(cell_id, kind="stable")  # priority order kept inside each cell
    sorted_ids = cell_id[order]
    first = np.searchsorted(sorted_ids, sorted_ids, side="left")
    rank = np.empty(n, np.intp)
    rank[order] = np.arange(n) - first
    keep = np.lexsort((np.arange(n), rank))[:cap]  # by rank in cell, then priority
    out: F32 = points[np.sort(keep)]
    return out


def persistence_depth(
    points: F32, pyramid: list[U8], threshold: float, params: CornerParams
) -> npt.NDArray[np.intp]:
    """For each base-level point, how many consecutive coarser levels have a corner near it.

    ``pyramid[k]`` is ``2**k`` times coarser than the level of ``points``. Level ``k``
    confirms a point when one of its Harris corners (3x3 local maxima of the response
    above the *same absolute* ``threshold`` as the base level) lies within
    ``params.radius_px`` of it, in that level's pixels. Returns ``intp (N,)`` in
    ``0 .. len(pyramid) - 1``.
    """
    depth = np.zeros(len(points), np.intp)
    alive = np.ones(len(points), np.bool_)
    for k in range(1, len(pyramid)):
        if not alive.any():
            break
        level = pyramid[k]
        coarse = harris_corners(harris_response(level), threshold, 1, 1)
        alive &= persists(points, coarse, level.shape[:2], float(2**k), params.radius_px)
        depth += alive
    return depth


def persistent_corners(pyramid: list[U8], params: CornerParams) -> F32:
    """Persistent, spread, sub-pixel Harris corners of ``pyramid[0]``, ``float32 (N, 2)``.

    ``pyramid`` is the reference pyramid from its base level on (element ``k`` is ``2**k``
    times coarser than element 0). The response threshold is ``params.quality`` times
    the strongest base-level response, and the same absolute value on every coarser
    level. Candidates (``8 * max_corners`` at most) whose depth
    (:func:`persistence_depth`) is below ``persistence_levels`` (clamped to the coarser
    levels there are) are dropped; deeper ones go first when the grid spreads the budget,
    then the stronger ones.
    """
    base = pyramid[0]
    response = harris_response(base)
    threshold = params.quality * max(float(response.max()), 0.0)
    candidates = harris_corners(
        response,
        threshold,
        max(1, round(params.min_distance_px)),
        params.margin_px,
        8 * params.max_corners,
    )
    depth = persistence_depth(candidates, pyramid, threshold, params)
    corners = select_persistent(candidates, depth, len(pyramid) - 1, base.shape[:2], params)
    if not len(corners):
        return corners
    return refine_subpix(base, corners, params)


def select_persistent(
    candidates: F32,
    depth: npt.NDArray[np.intp],
    levels: int,
    shape: tuple[int, int],
    params: CornerParams,
) -> F32:
    """The candidates (best first) whose ``depth`` reaches ``persistence_levels`` (clamped
    to the ``levels`` coarser levels there are), deeper ones first, then :func:`spread`
    over the base level of ``shape``."""
    required = min(params.persistence_levels, levels)
    keep = depth >= required
    candidates, depth = candidates[keep], depth[keep]
    candidates = candidates[np.argsort(-depth, kind="stable")]
    return spread(candidates, shape, params.grid, params.max_corners)


def refine_subpix(base: U8, corners: F32, params: CornerParams) -> F32:
    """``corners`` (``float32 (N, 2)``, N > 0) of the base level ``base`` refined to
    sub-pixel accuracy (``cv2.cornerSubPix``, ``params.subpix_window_px``)."""
    half = params.subpix_window_px // 2
    refined = cv2.cornerSubPix(
        base, corners.reshape(-1, 1, 2).copy(), (half, half), (-1, -1), _SUBPIX_CRITERIA
    ).reshape(-1, 2)
    # cornerSubPix can wander off a blob or an edge; such points keep their pixel position.
    moved = np.hypot(*(refined - corners).T) > half
    out: F32 = np.where(moved[:, None], corners, refined).astype(np.float32)
    return out
