"""Scenes for the simulator: a procedural default scene, or a photo.

A scene is a *linear image* ``float32 (H, W, 3)`` in [0, 1] (radiance relative to the
level that the auto-exposure maps to white). The procedural scene is composed in 8-bit
sRGB and decoded, so it survives a round trip through an 8-bit sRGB PNG exactly.
"""

from __future__ import annotations

import math
import os
import string
from collections.abc import Callable

import cv2
import numpy as np
import numpy.typing as npt

from deblurd.errors import ImageError, SimulationError
from deblurd.imaging import F32, U8, read_rgb8, srgb_to_linear

_AA = cv2.LINE_AA
_SHIFT = 4  # sub-pixel bits for cv2 drawing
_ONE = 1 << _SHIFT

# Classic colour-checker patches, sRGB 8-bit.
_CHECKER = [
    (115, 82, 68),
    (194, 150, 130),
    (98, 122, 157),
    (87, 108, 67),
    (133, 128, 177),
    (103, 189, 170),
    (214, 126, 44),
    (80, 91, 166),
    (193, 90, 99),
    (94, 60, 108),
    (157, 188, 64),
    (224, 163, 46),
    (56, 61, 150),
    (70, 148, 73),
    (175, 54, 60),
    (231, 199, 31),
    (187, 86, 149),
    (8, 133, 161),
    (243, 243, 242),
    (200, 200, 200),
    (160, 160, 160),
    (122, 122, 121),
    (85, 85, 85),
    (52, 52, 52),
]
_FACADES = [
    (176, 84, 62),
    (214, 196, 160),
    (150, 150, 145),
    (196, 170, 120),
    (120, 140, 160),
    (230, 220, 200),
    (160, 110, 90),
    (110, 120, 100),
]
_FONTS = [
    cv2.FONT_HERSHEY_SIMPLEX,
    cv2.FONT_HERSHEY_DUPLEX,
    cv2.FONT_HERSHEY_COMPLEX,
    cv2.FONT_HERSHEY_TRIPLEX,
    cv2.FONT_HERSHEY_PLAIN,
]


def fractal_noise(
    rng: np.random.Generator, height: int, width: int, cell_px: float, octaves: int = 4
) -> F32:
    """Smooth 1/f-like noise ``float32 (H, W)`` of about unit standard deviation: white
    noise on grids of ``cell_px``, ``cell_px/2`` … px, upsampled bicubically and summed."""
    out = np.zeros((height, width), np.float32)
    total = 0.0
    cell = max(cell_px, 1.0)
    for k in range(octaves):
        gh = max(2, math.ceil(height / cell) + 2)
        gw = max(2, math.ceil(width / cell) + 2)
        grid = rng.standard_normal((gh, gw)).astype(np.float32)
        up = cv2.resize(grid, (int(gw * cell), int(gh * cell)), interpolation=cv2.INTER_CUBIC)
        amp = 0.6**k
        out += amp * up[:height, :width]
        total += amp * amp
        cell = max(cell / 2.0, 1.0)
    std = float(out.std()) or 1.0
    return (out / std).astype(np.float32)


def _pts(points: npt.ArrayLike) -> npt.NDArray[np.int32]:
    """Float px coordinates → cv2's fixed-point int32 points (``shift`` = _SHIFT)."""
    return np.round(np.asarray(points, np.float64) * _ONE).astype(np.int32).reshape(-1, 1, 2)


def _pt(x: float, y: float) -> tuple[int, int]:
    """A float px point → cv2's fixed-point point (``shift`` = _SHIFT)."""
    return round(float(x) * _ONE), round(float(y) * _ONE)


Fill = Callable[[int, int, int, int], npt.NDArray[np.floating]]


def _blend(canvas: F32, mask: U8, fill: npt.ArrayLike | Fill) -> None:
    """Paint ``fill`` through ``mask`` (uint8 alpha, anti-aliased) onto the float sRGB
    ``canvas``, in place. ``fill``: an RGB colour in [0, 1], or a function of the mask's
    bounding box ``(x, y, w, h)`` returning that box's texture ``(h, w, 3)``."""
    x, y, w, h = cv2.boundingRect(mask)
    if w == 0 or h == 0:
        return
    a = mask[y : y + h, x : x + w, None].astype(np.float32) * np.float32(1.0 / 255.0)
    src = np.asarray(fill(x, y, w, h) if callable(fill) else fill, np.float32)
    roi = canvas[y : y + h, x : x + w]
    roi += a * (np.clip(src, 0.0, 1.0) - roi)


def _new_mask(canvas: F32) -> U8:
    return np.zeros(canvas.shape[:2], np.uint8)


def _word(rng: np.random.Generator) -> str:
    letters = string.ascii_letters + string.digits
    return "".join(rng.choice(list(letters), size=int(rng.integers(2, 8))))


def _sky_and_ground(
    canvas: F32, rng: np.random.Generator, tex: np.random.Generator, horizon: int
) -> None:
    h, w = canvas.shape[:2]
    u = float(min(h, w))
    top = np.array(rng.choice([(0.25, 0.45, 0.80), (0.35, 0.50, 0.75), (0.45, 0.40, 0.65)]))
    low = np.array([0.85, 0.88, 0.92]) * rng.uniform(0.9, 1.0)
    rows = np.linspace(0.0, 1.0, max(horizon, 1), dtype=np.float32)[:, None, None]
    canvas[:horizon] = (top + (low - top) * rows**0.7).astype(np.float32)
    clouds = fractal_noise(tex, h, w, float(u) / 4, octaves=5)[:horizon, :, None]
    cover = np.clip((clouds - 0.4) * 0.8, 0.0, 1.0)
    canvas[:horizon] += cover * (np.float32(0.97) - canvas[:horizon])
    # Hills: a 1-D fractal profile above the horizon.
    prof = fractal_noise(tex, 1, w, w / 6, octaves=5)[0]
    ys = horizon - (0.06 + 0.04 * prof) * h
    poly = np.concatenate(
        [[[0, horizon + 1]], np.column_stack([np.arange(w), ys]), [[w - 1, horizon + 1]]]
    )
    mask = _new_mask(canvas)
    cv2.fillPoly(mask, [_pts(poly)], 255, _AA, _SHIFT)
    hill = np.array([0.42, 0.55, 0.50], np.float32)
    _blend(
        canvas,
        mask,
        lambda x, y, w, h: hill + 0.05 * fractal_noise(tex, h, w, u / 30, 3)[..., None],
    )
    # Ground: base colour with coarse-to-fine texture, darker towards the viewer.
    choice = [(0.40, 0.52, 0.25), (0.55, 0.50, 0.42), (0.45, 0.45, 0.47)]
    base = np.array(choice[int(rng.integers(len(choice)))], np.float32)
    g = h - horizon
    coarse = fractal_noise(tex, g, w, float(u) / 6, octaves=3)[..., None]
    mid = fractal_noise(tex, g, w, float(u) / 50, octaves=3)[..., None]
    fine = fractal_noise(tex, g, w, 2.0, octaves=1)[..., None]
    shade = np.linspace(1.05, 0.75, g, dtype=np.float32)[:, None, None]
    tint = np.array([0.015, -0.005, -0.01], np.float32) * coarse
    ground = base * shade * (1 + 0.08 * coarse + 0.1 * mid + 0.1 * fine) + tint
    canvas[horizon:] = np.clip(ground, 0, 1, out=ground)


def _building(
    canvas: F32,
    rng: np.random.Generator,
    tex: np.random.Generator,
    x0: float,
    x1: float,
    base: float,
) -> None:
    h = canvas.shape[0]
    top = base - rng.uniform(0.22, 0.45) * h
    colour = np.array(_FACADES[int(rng.integers(len(_FACADES)))], np.float32) / 255.0
    mask = _new_mask(canvas)
    cv2.fillPoly(mask, [_pts([[x0, top], [x1, top], [x1, base], [x0, base]])], 255, _AA, _SHIFT)
    course = max(3, round(h / 90))

    def facade(x: int, y: int, w: int, h: int) -> npt.NDArray[np.floating]:
        out = colour * (1 + 0.06 * fractal_noise(tex, h, w, 6.0, octaves=3)[..., None])
        out[(np.arange(h) + y) % course == 0] *= 0.85  # brick-like courses
        return out

    _blend(canvas, mask, facade)
    # Roof.
    roof = _new_mask(canvas)
    peak = top - rng.uniform(0.03, 0.08) * h
    cv2.fillPoly(
        roof, [_pts([[x0 - 2, top], [(x0 + x1) / 2, peak], [x1 + 2, top]])], 255, _AA, _SHIFT
    )
    _blend(canvas, roof, np.array(rng.choice([(0.45, 0.18, 0.12), (0.25, 0.25, 0.28)])))
    # Windows: a grid with frames and glass that reflects the sky.
    cols, rows = int(rng.integers(2, 5)), int(rng.integers(2, 5))
    bw, bh = (x1 - x0) / cols, (base - top) / (rows + 0.6)
    glass, frame = _new_mask(canvas), _new_mask(canvas)
    for r in range(rows):
        for c in range(cols):
            wx, wy = x0 + (c + 0.22) * bw, top + (r + 0.25) * bh
            ww, wh = 0.56 * bw, 0.5 * bh
            cv2.rectangle(
                frame,
                _pt(wx - 1.5, wy - 1.5),
                _pt(wx + ww + 1.5, wy + wh + 1.5),
                255,
                -1,
                _AA,
                _SHIFT,
            )
            cv2.rectangle(glass, _pt(wx, wy), _pt(wx + ww, wy + wh), 255, -1, _AA, _SHIFT)
    _blend(canvas, frame, (0.93, 0.92, 0.88))
    tint = np.array([0.8, 0.9, 1.1], np.float32)

    def reflection(x: int, y: int, w: int, h: int) -> npt.NDArray[np.floating]:
        sky = np.linspace(0.15, 0.45, h, dtype=np.float32)[:, None, None] * tint
        return sky + 0.05 * fractal_noise(tex, h, w, 8.0, 2)[..., None]

    _blend(canvas, glass, reflection)


def _tree(
    canvas: F32,
    rng: np.random.Generator,
    tex: np.random.Generator,
    x: float,
    base: float,
    size: float,
) -> None:
    trunk = _new_mask(canvas)
    cv2.fillPoly(
        trunk,
        [
            _pts(
                [
                    [x - size * 0.06, base],
                    [x - size * 0.04, base - size * 0.8],
                    [x + size * 0.04, base - size * 0.8],
                    [x + size * 0.06, base],
                ]
            )
        ],
        255,
        _AA,
        _SHIFT,
    )
    _blend(canvas, trunk, (0.35, 0.24, 0.15))
    crown = _new_mask(canvas)
    for _ in range(9):
        cx = x + rng.normal(0, size * 0.18)
        cy = base - size * 0.95 + rng.normal(0, size * 0.12)
        cv2.circle(
            crown, _pt(cx, cy), int(size * rng.uniform(0.15, 0.3) * _ONE), 255, -1, _AA, _SHIFT
        )
    green = np.array([0.22, 0.38, 0.16], np.float32)
    _blend(
        canvas,
        crown,
        lambda x, y, w, h: green * (1 + 0.3 * fractal_noise(tex, h, w, 4.0, 3)[..., None]),
    )


def _sign(canvas: F32, rng: np.random.Generator, x: float, y: float, sw: float, sh: float) -> None:
    """A panel on two posts, with lines of text-like words."""
    dark = bool(rng.integers(2))
    ink = (0.95, 0.85, 0.2) if dark else (0.08, 0.08, 0.1)
    paper = (0.1, 0.2, 0.45) if dark else (0.93, 0.92, 0.86)
    posts = _new_mask(canvas)
    for px in (x + 0.15 * sw, x + 0.85 * sw):
        cv2.rectangle(
            posts, _pt(px - 0.02 * sw, y), _pt(px + 0.02 * sw, y + 1.6 * sh), 255, -1, _AA, _SHIFT
        )
    _blend(canvas, posts, (0.3, 0.3, 0.32))
    panel = _new_mask(canvas)
    cv2.rectangle(panel, _pt(x, y), _pt(x + sw, y + sh), 255, -1, _AA, _SHIFT)
    _blend(canvas, panel, paper)
    text = _new_mask(canvas)
    lines = int(rng.integers(3, 6))
    line_h = sh / (lines + 1)
    font = _FONTS[int(rng.integers(len(_FONTS)))]
    for i in range(lines):
        words = " ".join(_word(rng) for _ in range(int(rng.integers(2, 5))))
        (tw, th), _ = cv2.getTextSize(words, font, 1.0, 1)
        scale = min(0.7 * line_h / max(th, 1), 0.92 * sw / max(tw, 1))
        thick = max(1, round(scale * 1.6))
        org = (int(x + 0.04 * sw), int(y + (i + 1) * line_h + 0.35 * th * scale))
        cv2.putText(text, words, org, font, scale, 255, thick, _AA)
    _blend(canvas, text, ink)


def _checker(canvas: F32, x: float, y: float, cell: float) -> None:
    board = _new_mask(canvas)
    cv2.rectangle(
        board,
        _pt(x - cell * 0.3, y - cell * 0.3),
        _pt(x + cell * 6.3, y + cell * 4.3),
        255,
        -1,
        _AA,
        _SHIFT,
    )
    _blend(canvas, board, (0.05, 0.05, 0.05))
    for i, rgb in enumerate(_CHECKER):
        r, c = divmod(i, 6)
        m = _new_mask(canvas)
        p0 = [x + c * cell + 0.08 * cell, y + r * cell + 0.08 * cell]
        p1 = [x + (c + 1) * cell - 0.08 * cell, y + (r + 1) * cell - 0.08 * cell]
        cv2.rectangle(m, _pt(*p0), _pt(*p1), 255, -1, _AA, _SHIFT)
        _blend(canvas, m, np.array(rgb) / 255.0)


def _star(canvas: F32, cx: float, cy: float, r: float, spokes: int = 18) -> None:
    """A Siemens star on a white disc: radial edges of every orientation."""
    disc = _new_mask(canvas)
    cv2.circle(disc, _pt(cx, cy), int(r * 1.08 * _ONE), 255, -1, _AA, _SHIFT)
    _blend(canvas, disc, (0.92, 0.92, 0.9))
    wedges = _new_mask(canvas)
    for k in range(spokes):
        a0, a1 = 2 * np.pi * k / spokes, 2 * np.pi * (k + 0.5) / spokes
        arc = np.linspace(a0, a1, 8)
        poly = np.vstack([[cx, cy], np.column_stack([cx + r * np.cos(arc), cy + r * np.sin(arc)])])
        cv2.fillPoly(wedges, [_pts(poly)], 255, _AA, _SHIFT)
    _blend(canvas, wedges, (0.06, 0.06, 0.08))


def _ball(canvas: F32, rng: np.random.Generator, cx: float, cy: float, r: float) -> None:
    lx, ly = cx - 0.35 * r, cy - 0.4 * r
    colour = rng.uniform(0.2, 0.95, 3).astype(np.float32)

    def shaded(x: int, y: int, w: int, h: int) -> npt.NDArray[np.floating]:
        yy, xx = np.mgrid[y : y + h, x : x + w].astype(np.float32)
        d2 = (xx - lx) ** 2 + (yy - ly) ** 2
        shade = np.clip(1.1 - np.sqrt(d2) / (1.6 * r), 0.15, 1.0)[..., None] ** 1.3
        out: npt.NDArray[np.floating] = (
            colour * shade + 0.6 * np.exp(-d2 / (0.04 * r * r))[..., None]
        )
        return out

    mask = _new_mask(canvas)
    cv2.circle(mask, _pt(cx, cy), int(r * _ONE), 255, -1, _AA, _SHIFT)
    _blend(canvas, mask, shaded)


def _fence(
    canvas: F32, rng: np.random.Generator, x0: float, x1: float, base: float, hgt: float
) -> None:
    mask = _new_mask(canvas)
    step = max(hgt * 0.28, 3.0)
    thick = max(step * 0.25, 1.0)
    x = x0
    while x < x1:
        cv2.rectangle(mask, _pt(x, base - hgt), _pt(x + thick, base), 255, -1, _AA, _SHIFT)
        x += step
    for f in (0.3, 0.75):
        y = base - f * hgt
        cv2.line(
            mask,
            _pt(x0, y),
            _pt(x1, y - 0.02 * (x1 - x0)),
            255,
            max(1, int(thick * 0.7)),
            _AA,
            _SHIFT,
        )
    _blend(canvas, mask, np.array(rng.choice([(0.92, 0.9, 0.85), (0.45, 0.3, 0.2)])))


def procedural_scene_srgb(height: int, width: int, seed: int) -> U8:
    """The procedural scene as an 8-bit sRGB frame ``uint8 (H, W, 3)``
    (see :func:`procedural_scene`)."""
    if height < 8 or width < 8:
        raise SimulationError(f"scene size {width}x{height} is too small (at least 8x8)")
    if seed < 0:
        raise SimulationError(f"seed must be ≥ 0, got {seed}")
    rng = np.random.default_rng([seed, 0, 0])  # layout: independent of the resolution
    tex = np.random.default_rng([seed, 0, 1])  # textures: draws depend on the size
    canvas = np.zeros((height, width, 3), np.float32)
    h, w = float(height), float(width)
    horizon = int(h * rng.uniform(0.34, 0.42))
    _sky_and_ground(canvas, rng, tex, horizon)
    street = horizon + rng.uniform(0.12, 0.2) * h
    xs = np.sort(rng.uniform(0.0, 0.85, 3)) * w
    for x in xs:
        _building(canvas, rng, tex, x, x + rng.uniform(0.12, 0.24) * w, street)
    _tree(
        canvas, rng, tex, rng.uniform(0.05, 0.95) * w, street + 0.05 * h, rng.uniform(0.3, 0.45) * h
    )
    _fence(
        canvas,
        rng,
        rng.uniform(0.0, 0.3) * w,
        rng.uniform(0.6, 1.0) * w,
        street + 0.12 * h,
        0.1 * h,
    )
    left = bool(rng.integers(2))
    sw = rng.uniform(0.26, 0.34) * w
    sx = (rng.uniform(0.03, 0.1) if left else rng.uniform(0.58, 0.66)) * w
    _sign(canvas, rng, sx, rng.uniform(0.45, 0.52) * h, sw, 0.17 * h)
    cell = 0.045 * min(h, w * 0.9)
    cxs = (rng.uniform(0.62, 0.7) if left else rng.uniform(0.05, 0.12)) * w
    _checker(canvas, cxs, rng.uniform(0.74, 0.8) * h, cell)
    _star(canvas, rng.uniform(0.42, 0.55) * w, rng.uniform(0.78, 0.86) * h, 0.1 * h)
    for _ in range(2):
        r = rng.uniform(0.03, 0.06) * h
        _ball(canvas, rng, rng.uniform(0.05, 0.95) * w, rng.uniform(0.88, 0.97) * h, r)
    # Gentle illumination fall-off and a fine texture so nothing is perfectly flat.
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    rr = ((xx - w / 2) ** 2 + (yy - h / 2) ** 2) / (w * w / 4 + h * h / 4)
    grain = fractal_noise(tex, height, width, 2.0, octaves=2)
    canvas *= ((1.0 - 0.12 * rr) * (1.0 + 0.015 * grain))[..., None]
    return np.round(np.clip(canvas, 0.0, 1.0) * 255.0).astype(np.uint8)


def procedural_scene(height: int, width: int, seed: int) -> F32:
    """A deterministic natural-looking scene, linear ``float32 (H, W, 3)`` in [0, 1].

    Sky with clouds, hills, textured ground, buildings with window grids (straight edges,
    repeated structure), a tree (organic texture), a fence (thin lines), a sign with
    text-like strokes, a colour checker, a Siemens star (edges of every orientation) and
    shaded balls (smooth gradients). Same ``(height, width, seed)`` → same image.
    Objects are placed in fractions of the frame, so sizes scale with resolution.
    """
    return srgb_to_linear(procedural_scene_srgb(height, width, seed))


def load_scene(path: str | os.PathLike[str]) -> F32:
    """Read an 8-bit RGB photo as a linear scene ``float32 (H, W, 3)`` in [0, 1].

    Raises :class:`SimulationError` (cause chained) when the file cannot be used.
    """
    try:
        return srgb_to_linear(read_rgb8(path))
    except ImageError as exc:
        raise SimulationError(f"cannot use {path} as a scene: {exc}") from exc


def fit_scene(scene: F32, height: int, width: int, margin: float) -> F32:
    """Fit a scene to a view of ``width × height`` px with ``margin`` (fraction of the
    larger side) of spare scene around it, so shake rarely shows the reflected border.

    A scene larger than the view plus margin is downscaled (aspect kept, INTER_AREA) to
    cover it and centre-cropped; a scene smaller than the view is upscaled to cover the
    view (bilinear); a scene in between is centre-cropped to at most view + margin.
    """
    if scene.ndim != 3 or scene.shape[2] != 3 or scene.dtype != np.float32:
        raise SimulationError(f"a scene must be float32 (H, W, 3), got {scene.dtype} {scene.shape}")
    m = round(margin * max(height, width))
    need_h, need_w = height + 2 * m, width + 2 * m
    sh, sw = scene.shape[:2]
    out = scene
    down = max(need_h / sh, need_w / sw)
    if down < 1.0:
        size = (max(need_w, math.ceil(sw * down)), max(need_h, math.ceil(sh * down)))
        out = np.asarray(cv2.resize(scene, size, interpolation=cv2.INTER_AREA), np.float32)
    elif sh < height or sw < width:
        up = max(height / sh, width / sw)
        size = (max(width, math.ceil(sw * up)), max(height, math.ceil(sh * up)))
        out = np.asarray(cv2.resize(scene, size, interpolation=cv2.INTER_LINEAR), np.float32)
    oh, ow = out.shape[:2]
    ch, cw = min(oh, need_h), min(ow, need_w)
    y0, x0 = (oh - ch) // 2, (ow - cw) // 2
    return np.ascontiguousarray(out[y0 : y0 + ch, x0 : x0 + cw], dtype=np.float32)
