"""Tiling with overlap and blending, so a network runs on any image size in bounded memory.

Tiles of side ``tile`` overlap by ``overlap`` px; each tile's output is weighted by a
separable ramp across the overlap: zero over its outer quarter (where the tile's network
saw the least context: those pixels come from the neighbour alone), rising linearly over
the middle half, one over the inner quarter. Seams vanish, and every blended pixel was
computed with at least ``overlap / 4`` px of context on that side.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import numpy.typing as npt

from deblurd.imaging import F32


def _starts(length: int, tile: int, overlap: int) -> list[int]:
    if length <= tile:
        return [0]
    step = tile - overlap
    starts = list(range(0, length - tile, step))
    starts.append(length - tile)
    return starts


def _ramp(n: int, overlap: int, at_start: bool, at_end: bool) -> npt.NDArray[np.float32]:
    w = np.ones(n, dtype=np.float32)
    if overlap <= 0:
        return w
    margin = overlap // 4
    ramp = np.clip(
        (np.arange(overlap, dtype=np.float32) + 0.5 - margin) / max(overlap - 2 * margin, 1),
        0.0,
        1.0,
    ).astype(np.float32)
    if not at_start:
        w[:overlap] = np.minimum(w[:overlap], ramp)
    if not at_end:
        w[n - overlap :] = np.minimum(w[n - overlap :], ramp[::-1])
    return w


def run_tiled(
    image: F32, fn: Callable[[F32], F32], tile: int, overlap: int = 32, multiple: int = 1
) -> F32:
    """Apply ``fn`` to ``image`` ``(H, W, C) float32`` in overlapping tiles; blend the outputs.

    ``fn`` maps ``(h, w, C)`` to ``(h, w, C')``. ``multiple``: tile sides are kept
    multiples of it (networks with downsampling need, e.g., 16); the image itself must
    already be padded to a multiple. An image no larger than one tile runs whole.
    """
    h, w = image.shape[:2]
    tile = max(multiple, (tile // multiple) * multiple)
    if h <= tile and w <= tile:
        return fn(image)
    overlap = min(overlap, tile // 2)
    out: F32 | None = None
    weight = np.zeros((h, w, 1), dtype=np.float32)
    ys, xs = _starts(h, tile, overlap), _starts(w, tile, overlap)
    for y in ys:
        th = min(tile, h)
        wy = _ramp(th, overlap, y == 0, y + th >= h)
        for x in xs:
            tw = min(tile, w)
            wx = _ramp(tw, overlap, x == 0, x + tw >= w)
            result = fn(np.ascontiguousarray(image[y : y + th, x : x + tw]))
            if out is None:
                out = np.zeros((h, w, result.shape[2]), dtype=np.float32)
            wt = (wy[:, None] * wx[None, :])[..., None]
            out[y : y + th, x : x + tw] += result * wt
            weight[y : y + th, x : x + tw] += wt
    if out is None:  # pragma: no cover - loops always run at least once
        raise ValueError("empty image")
    result_img: F32 = (out / np.maximum(weight, np.float32(1e-8))).astype(np.float32)
    return result_img


def run_padded_tiled(
    image: F32, fn: Callable[[F32], F32], tile: int, overlap: int, multiple: int
) -> F32:
    """:func:`run_tiled` on ``image`` reflect-padded by ``multiple`` px (and up to a
    multiple of it), cropped back: tiles at the image's edges then see the same context
    as one whole-image run, so tiled and whole outputs agree there too."""
    h, w = image.shape[:2]
    m = multiple
    pad_h = (m, m + (-(h + 2 * m)) % m)
    pad_w = (m, m + (-(w + 2 * m)) % m)
    padded = np.pad(image, (pad_h, pad_w, (0, 0)), mode="reflect")
    out = run_tiled(padded, fn, tile, overlap, m)
    return np.ascontiguousarray(out[m : m + h, m : m + w])
