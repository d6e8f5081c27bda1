"""Stage 4a on the GPU: the :class:`~deblurd.pipeline.registration.Registrar` interface over
the CUDA kernels (pyramid, Harris + persistence, pyramidal LK, warp).

Same method and results as :class:`~deblurd.pipeline.registration.OpenCVRegistrar`
(see that module): the kernels reproduce OpenCV's arithmetic (``pyrDown``, ``cornerHarris``,
``calcOpticalFlowPyrLK``), the decisions in between are the same, and what is cheap or
inherently sequential stays on the host:

* per job (:meth:`GpuRegistrar.set_reference`): picking, spreading and sub-pixel
  refinement of the few hundred persistent corners (``cv2.cornerSubPix`` on the base
  level, downloaded once);
* per frame (:meth:`GpuRegistrar.register`): the global shift by phase correlation on the
  coarsest level (a few kB downloaded), the homography fit (MAGSAC++) and the quality
  gate on the tracked points (a few kB).

Frames are uploaded once and stay on the device through pyramid, tracking both ways and
the forward-backward check's inputs. Device buffers come from the backend's pool: they
are allocated for the first frame of a resolution and reused after.
"""

from __future__ import annotations

import math
import time

import cv2
import numpy as np
import numpy.typing as npt

from deblurd.errors import RegistrationError
from deblurd.gpu.backend import Backend, Buffer, grid_1d, grid_2d, shared_backend
from deblurd.pipeline.corners import _HARRIS_K, _SUBPIX_CRITERIA, CornerParams, spread
from deblurd.pipeline.pyramid import PyramidBuilder, coarsest_level, level_shape, tracking_level
from deblurd.pipeline.registration import (
    Registration,
    TrackedCorners,
    _check_gray,
    _rejected,
    fit_tracked,
    global_shift,
)
from deblurd.settings.registration import RegistrationSettings

F32 = npt.NDArray[np.float32]
F64 = npt.NDArray[np.float64]
U8 = npt.NDArray[np.uint8]
Mask = npt.NDArray[np.bool_]

#: cornerHarris' gradient scale for uint8 input, blockSize 3, ksize 3: 1 / (4 * 3 * 255).
HARRIS_SCALE = 1.0 / (4 * 3 * 255)
_STATS_STEP = 4  # PyramidBuilder normalises on img[::4, ::4]
_P = "reg/"  # pool key prefix


def _i(v: int) -> np.int32:
    return np.int32(v)


def _f(v: float) -> np.float32:
    return np.float32(v)


class GpuRegistrar(TrackedCorners):
    """Registrar on a :class:`~deblurd.gpu.backend.Backend` (``"cuda"``, ``"emulated"``).

    Not thread-safe: one job at a time (the reference is its state). ``stage_ms`` as in
    :class:`~deblurd.pipeline.registration.OpenCVRegistrar` (host wall time, including the
    waits for the device). :meth:`close` frees its device buffers.
    """

    def __init__(self, settings: RegistrationSettings, backend: Backend | str = "cuda") -> None:
        self.settings = settings
        self.backend = shared_backend(backend) if isinstance(backend, str) else backend
        self.stage_ms: dict[str, float] = {}
        self._shape: tuple[int, int] | None = None
        self._base = 0
        self._top = 0
        self._corners: F32 = np.empty((0, 2), np.float32)
        self._ref_top: U8 = np.zeros((1, 1), np.uint8)
        self._window: F32 = np.ones((1, 1), np.float32)

    # --- geometry ---------------------------------------------------------------------

    def _level(self, k: int) -> tuple[int, int]:
        if self._shape is None:
            raise RegistrationError("no reference set")
        return level_shape(self._shape, k)

    def close(self) -> None:
        """Free this registrar's device buffers (the backend stays open)."""
        self.backend.release(_P)
        self._shape = None

    def __enter__(self) -> GpuRegistrar:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- pyramid ----------------------------------------------------------------------

    def _pyramid(self, which: str, gray: F32) -> None:
        """Levels base..top of ``gray`` as uint8 buffers ``{which}/u8/k`` and their Scharr
        derivatives ``{which}/d/k`` (PyramidBuilder's method)."""
        b = self.backend
        h, w = self._level(0)
        src = b.upload_new(_P + "in", np.ascontiguousarray(gray, np.float32))
        for k in range(1, self._base + 1):
            dh, dw = self._level(k)
            dst = b.buffer(f"{_P}f32/{k}", (dh, dw), np.float32)
            b.launch("pyr_down_f32", *grid_2d(dw, dh), src, _i(w), _i(h), dst, _i(dw), _i(dh))
            src, h, w = dst, dh, dw
        rows = math.ceil(h / _STATS_STEP)
        count = rows * math.ceil(w / _STATS_STEP)
        stats = b.buffer(_P + "stats", (rows, 2), np.float64)
        params = b.buffer(_P + "norm", (2,), np.float32)
        b.launch("sample_row_stats", *grid_1d(rows), src, _i(w), _i(h), _i(_STATS_STEP), stats)
        b.launch("norm_params", (1, 1), (1, 1), stats, _i(rows), np.float64(count),
                 np.float64(PyramidBuilder.NORM_MEAN), np.float64(PyramidBuilder.NORM_STD),
                 np.float64(PyramidBuilder.MAX_GAIN), params)
        prev = b.buffer(f"{_P}{which}/u8/{self._base}", (h, w), np.uint8)
        b.launch("normalize_u8", *grid_2d(w, h), src, _i(w), _i(h), params, prev)
        for k in range(self._base, self._top + 1):
            kh, kw = self._level(k)
            cur = b.buffer(f"{_P}{which}/u8/{k}", (kh, kw), np.uint8)
            if k > self._base:
                ph, pw = self._level(k - 1)
                b.launch("pyr_down_u8", *grid_2d(kw, kh), prev, _i(pw), _i(ph), cur, _i(kw),
                         _i(kh))
            deriv = b.buffer(f"{_P}{which}/d/{k}", (kh, kw, 2), np.int16)
            b.launch("scharr_deriv", *grid_2d(kw, kh), cur, _i(kw), _i(kh), deriv)
            prev = cur

    def _u8(self, which: str, k: int) -> Buffer:
        return self.backend.buffer(f"{_P}{which}/u8/{k}", self._level(k), np.uint8)

    def _deriv(self, which: str, k: int) -> Buffer:
        return self.backend.buffer(f"{_P}{which}/d/{k}", (*self._level(k), 2), np.int16)

    # --- corners ----------------------------------------------------------------------

    def _corner_params(self) -> CornerParams:
        s = self.settings
        return CornerParams(
            max_corners=s.max_corners,
            quality=s.corner_quality,
            min_distance_px=s.corner_min_distance_px,
            margin_px=s.lk_window_px // 2 + 1,
            persistence_levels=s.persistence_levels,
            radius_px=s.persistence_radius_px,
            grid=s.grid_cells,
        )

    def _persistent_corners(self, params: CornerParams) -> F32:
        """corners.persistent_corners on the device pyramid ``ref``."""
        b = self.backend
        base = self._base
        h, w = self._level(base)
        responses: list[Buffer] = []
        for k in range(base, self._top + 1):
            kh, kw = self._level(k)
            resp = b.buffer(f"{_P}resp/{k}", (kh, kw), np.float32)
            b.launch("harris_response", *grid_2d(kw, kh), self._u8("ref", k), _i(kw), _i(kh),
                     _f(_HARRIS_K), _f(HARRIS_SCALE), resp)
            responses.append(resp)
        rowmax = b.buffer(_P + "rowmax", (h,), np.float32)
        thr = b.buffer(_P + "thr", (2,), np.float32)
        b.launch("row_max", *grid_1d(h), responses[0], _i(w), _i(h), rowmax)
        b.launch("harris_threshold", (1, 1), (1, 1), rowmax, _i(h), np.float64(params.quality),
                 thr)
        strength = b.buffer(_P + "strength", (h, w), np.float32)
        depth = b.buffer(_P + "depth", (h, w), np.uint8)
        nms = max(1, round(params.min_distance_px))
        b.launch("harris_nms", *grid_2d(w, h), responses[0], _i(w), _i(h), thr, _i(nms),
                 _i(params.margin_px), strength, None)
        for j in range(1, self._top - base + 1):
            ch, cw = self._level(base + j)
            flags: Buffer | None = None
            if ch > 4 and cw > 4:  # harris_corners(..., margin=1) needs h, w > 2 * 1 + 2
                flags = b.buffer(f"{_P}flags/{j}", (ch, cw), np.uint8)
                b.launch("harris_nms", *grid_2d(cw, ch), responses[j], _i(cw), _i(ch), thr,
                         _i(1), _i(1), None, flags)
            b.launch("persist_level", *grid_2d(w, h), strength, _i(w), _i(h), _i(j), flags,
                     _i(cw), _i(ch), _f(2.0**j), np.float64(params.radius_px), depth)
        thr_host = b.download(thr)
        strength_host = b.download(strength)
        depth_host = b.download(depth) if self._top > base else np.zeros((h, w), np.uint8)
        margin = params.margin_px
        if h <= 2 * margin + 2 or w <= 2 * margin + 2 or not thr_host[0] < thr_host[1]:
            return np.empty((0, 2), np.float32)
        ys, xs = np.nonzero(strength_host > 0.0)
        order = np.argsort(-strength_host[ys, xs], kind="stable")[: 8 * params.max_corners]
        candidates = np.stack([xs[order], ys[order]], axis=1).astype(np.float32)
        cand_depth = depth_host[ys[order], xs[order]].astype(np.intp)
        required = min(params.persistence_levels, self._top - base)
        keep = cand_depth >= required
        candidates, cand_depth = candidates[keep], cand_depth[keep]
        candidates = candidates[np.argsort(-cand_depth, kind="stable")]
        corners = spread(candidates, (h, w), params.grid, params.max_corners)
        if not len(corners):
            return corners
        half = params.subpix_window_px // 2
        base_img = b.download(self._u8("ref", base))
        refined = cv2.cornerSubPix(
            base_img, corners.reshape(-1, 1, 2).copy(), (half, half), (-1, -1),
            _SUBPIX_CRITERIA,
        ).reshape(-1, 2)
        moved = np.hypot(*(refined - corners).T) > half
        out: F32 = np.where(moved[:, None], corners, refined).astype(np.float32)
        return out

    # --- the Registrar interface ------------------------------------------------------

    def set_reference(self, gray: F32) -> None:
        """Build the reference pyramid and its persistent corners (once per job).

        ``gray``: ``float32 (H, W)`` in [0, 1]. Few or no corners is not an error (every
        :meth:`register` then rejects with that reason).
        """
        _check_gray(gray, "reference")
        s = self.settings
        self.stage_ms = {}
        t0 = time.perf_counter()
        shape = (int(gray.shape[0]), int(gray.shape[1]))
        if shape != self._shape:
            self.backend.release(_P)
            self._shape = shape
            self._base = tracking_level(shape, s.tracking_max_side_px, s.levels)
            self._top = coarsest_level(s.levels, self._base)
            top_h, top_w = level_shape(shape, self._top)
            self._window = np.asarray(
                cv2.createHanningWindow((top_w, top_h), cv2.CV_32F), np.float32
            )
        self._pyramid("ref", gray)
        self._ref_top = self.backend.download(self._u8("ref", self._top))
        t1 = time.perf_counter()
        self._corners = self._persistent_corners(self._corner_params())
        n = len(self._corners)
        if n:
            pts = np.zeros((s.max_corners, 2), np.float32)
            pts[:n] = self._corners
            self.backend.upload_new(_P + "corners", pts)
        self.stage_ms = {"pyramid": _ms(t0, t1), "corners": _ms(t1, time.perf_counter())}

    def _track(self, prev: str, nxt: str, points: Buffer, guess: Buffer, status: Buffer,
               n: int, prior: tuple[float, float]) -> None:
        """registration.track on the device: ``guess`` ends as the tracked positions."""
        s = self.settings
        b = self.backend
        top = self._top - self._base
        b.launch("lk_init", *grid_1d(n), points, _i(n), _f(2.0**top), _f(prior[0]),
                 _f(prior[1]), guess)
        for lvl in range(top, -1, -1):
            k = self._base + lvl
            kh, kw = self._level(k)
            eps = 0.05 if lvl else 0.01
            b.launch("lk_level", *grid_1d(n), self._u8(prev, k), self._deriv(prev, k),
                     self._u8(nxt, k), _i(kw), _i(kh), points, _i(n), _f(2.0**lvl), guess,
                     _f(1.0 if lvl == top else 2.0), status, _i(s.lk_window_px),
                     _i(min(max(s.lk_iterations, 0), 100)), np.float64(eps * eps),
                     _f(s.lk_min_eigen))

    def register(self, gray: F32) -> Registration:
        """Register ``gray`` (``float32 (H, W)`` in [0, 1], the reference's size).

        Returns the homography moving → reference and whether the frame may be fused.
        """
        if self._shape is None:
            raise RegistrationError("register() before set_reference()")
        _check_gray(gray, "frame", self._shape)
        s = self.settings
        scale = float(2**self._base)
        self.stage_ms = {}
        n = len(self._corners)
        if n < s.min_inliers:
            return _rejected(f"reference has {n} corners < {s.min_inliers}", 0, 0)
        b = self.backend
        t0 = time.perf_counter()
        self._pyramid("frm", gray)
        top = b.download(self._u8("frm", self._top))
        t1 = time.perf_counter()
        dx, dy = global_shift(self._ref_top, top, self._window)
        cap = s.max_corners
        corners = b.buffer(_P + "corners", (cap, 2), np.float32)
        fwd = b.buffer(_P + "fwd", (cap, 2), np.float32)
        back = b.buffer(_P + "back", (cap, 2), np.float32)
        st_f = b.buffer(_P + "status_f", (cap,), np.uint8)
        st_b = b.buffer(_P + "status_b", (cap,), np.uint8)
        self._track("ref", "frm", corners, fwd, st_f, n, (dx, dy))
        self._track("frm", "ref", fwd, back, st_b, n, (-dx, -dy))
        h, w = self._level(self._base)
        fwd_h = b.download(fwd)[:n]
        back_h = b.download(back)[:n]
        ok_f = _inside(fwd_h, b.download(st_f)[:n] != 0, w, h)
        ok_b = _inside(back_h, b.download(st_b)[:n] != 0, w, h)
        fb = np.hypot(*(back_h - self._corners).T)
        good = ok_f & ok_b & (fb <= s.fb_max_error_px)
        src, dst = fwd_h[good], self._corners[good]
        t2 = time.perf_counter()
        self.stage_ms = {"pyramid": _ms(t0, t1), "lk": _ms(t1, t2)}
        reg = fit_tracked(src, dst, n, scale, self._shape, s)
        self.stage_ms["homography"] = _ms(t2, time.perf_counter())
        return reg

    def warp(self, image: F32, reg: Registration) -> tuple[F32, F32]:
        """Resample ``image`` (``float32 (H, W)`` or ``(H, W, C)``, the reference's size)
        into the reference geometry; ``(warped, valid)`` as OpenCVRegistrar.warp."""
        self._check_warp_input(image)
        t0 = time.perf_counter()
        warped, valid = warp_on(self.backend, image, np.asarray(reg.homography, np.float64))
        self.stage_ms = {"warp": _ms(t0, time.perf_counter())}
        return warped, valid


def warp_on(backend: Backend, image: F32, H: F64, key: str = _P + "warp/") -> tuple[F32, F32]:
    """``warp_homography`` with the ``warp_perspective`` kernel: bilinear, replicated
    border, ``valid`` 1 where the source point lies in the frame inset by one pixel."""
    h, w = image.shape[:2]
    c = 1 if image.ndim == 2 else int(image.shape[2])
    src = backend.upload_new(key + "src", np.ascontiguousarray(image).reshape(h, w, c))
    dst = backend.buffer(key + "dst", (h, w, c), np.float32)
    valid = backend.buffer(key + "valid", (h, w), np.float32)
    m = np.linalg.inv(H).reshape(-1)
    backend.launch("warp_perspective", *grid_2d(w, h), src, _i(w), _i(h), _i(c),
                   *[_f(float(v)) for v in m], dst, valid)
    out: F32 = backend.download(dst).reshape(image.shape)
    mask: F32 = backend.download(valid)
    return out, mask


def _inside(points: F32, ok: Mask, w: int, h: int) -> Mask:
    """track()'s last test: finite and inside the base level."""
    ok = ok & np.isfinite(points).all(axis=1)
    inside: Mask = ok & (points[:, 0] >= 0) & (points[:, 0] <= w - 1) & (points[:, 1] >= 0) & (
        points[:, 1] <= h - 1
    )
    return inside


def _ms(t0: float, t1: float) -> float:
    return (t1 - t0) * 1000.0
