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
  gate on the tracked points (a few kB);
* per frame, as the settings ask: the dense fallback (a frame whose corners fail) and the
  local refinement (a residual flow on top of the homography), the OpenCV registrar's
  own code (``TrackedCorners._refined``, :mod:`deblurd.pipeline.refine`: DIS flow at a
  working scale of at most 640 px) on the host's gray of the frame (the frame is on the
  host anyway; the reference's working scale is built once per job). Only the warp of a
  refined frame differs: the ``warp_map`` kernel samples at ``H⁻¹(p + r(p))`` from a
  coarse sampling map computed on the host and uploaded (:func:`warp_device`).

Two ways in and out (the pipeline uses the second):

* *host handoff*, the :class:`~deblurd.pipeline.registration.Registrar` interface:
  :meth:`GpuRegistrar.register` uploads a gray image, :meth:`GpuRegistrar.warp` uploads a
  linear image and downloads the warped image and its valid mask;
* *device-resident* (:mod:`deblurd.gpu.resident`): :meth:`GpuRegistrar.register_frame`
  uploads the camera's ``uint8`` RGB frame once and derives the gray image on the device;
  :meth:`GpuRegistrar.warp_resident` decodes that same upload to linear light, warps it,
  and returns a :class:`~deblurd.gpu.resident.DeviceAlignedFrame` for the fuser: per
  frame one ``H * W * 3``-byte upload and only small downloads (coarsest level, tracked
  points). Same results: the conversions are bit-identical to the host's.

Either way the frame stays on the device through pyramid, tracking both ways and the
forward-backward check's inputs. Device buffers come from the backend's pool: they are
allocated for the first frame of a resolution and reused after.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable

import cv2
import numpy as np

from deblurd.errors import RegistrationError
from deblurd.gpu.backend import Backend, Buffer, grid_1d, grid_2d, shared_backend
from deblurd.gpu.resident import DeviceAlignedFrame, Lease, gray_into, linear_into
from deblurd.imaging import F32, F64, U8, Mask, to_gray
from deblurd.pipeline.corners import HARRIS_K, CornerParams, refine_subpix, select_persistent
from deblurd.pipeline.pyramid import PyramidBuilder, coarsest_level, level_shape, tracking_level
from deblurd.pipeline.refine import WorkingScale, residual_map
from deblurd.pipeline.registration import (
    MIN_SIDE,
    Registration,
    TrackedCorners,
    check_gray,
    corner_misfit,
    corner_params,
    global_shift,
    rejected,
)
from deblurd.pipeline.timing import elapsed_ms
from deblurd.settings.registration import RegistrationSettings

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
    waits for the device; ``pyramid`` includes the upload and the gray conversion).
    :meth:`close` frees its device buffers.

    Device-resident use (see the module docstring): :meth:`set_reference_frame`, then per
    frame :meth:`register_frame` and, for accepted frames, :meth:`warp_resident`. One
    aligned frame exists at a time: the next warp (resident or not) overwrites its buffers
    and ends its lease, so hand it to the fuser first.
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
        self._scale: WorkingScale | None = None
        self._frame_ready = False  # buffer reg/frame holds the last register_frame() input
        self._lease = Lease()  # of the last aligned frame warp_resident() returned
        self._lease.end()

    # --- geometry ---------------------------------------------------------------------

    def _level(self, k: int) -> tuple[int, int]:
        if self._shape is None:
            raise RegistrationError("no reference set")
        return level_shape(self._shape, k)

    def close(self) -> None:
        """Free this registrar's device buffers (the backend stays open)."""
        self._lease.end()
        self.backend.release(_P)
        self._shape = None
        self._scale = None
        self._frame_ready = False

    def __enter__(self) -> GpuRegistrar:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- pyramid ----------------------------------------------------------------------

    def _pyramid(self, which: str, src: Buffer) -> None:
        """Levels base..top of the gray image ``src`` (``float32 (H, W)`` on the device) as
        uint8 buffers ``{which}/u8/k`` and their Scharr derivatives ``{which}/d/k``
        (PyramidBuilder's method)."""
        b = self.backend
        h, w = self._level(0)
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
        b.launch(
            "norm_params",
            (1, 1),
            (1, 1),
            stats,
            _i(rows),
            np.float64(count),
            np.float64(PyramidBuilder.NORM_MEAN),
            np.float64(PyramidBuilder.NORM_STD),
            np.float64(PyramidBuilder.MAX_GAIN),
            params,
        )
        prev = b.buffer(f"{_P}{which}/u8/{self._base}", (h, w), np.uint8)
        b.launch("normalize_u8", *grid_2d(w, h), src, _i(w), _i(h), params, prev)
        for k in range(self._base, self._top + 1):
            kh, kw = self._level(k)
            cur = b.buffer(f"{_P}{which}/u8/{k}", (kh, kw), np.uint8)
            if k > self._base:
                ph, pw = self._level(k - 1)
                b.launch("pyr_down_u8", *grid_2d(kw, kh), prev, _i(pw), _i(ph), cur, _i(kw), _i(kh))
            deriv = b.buffer(f"{_P}{which}/d/{k}", (kh, kw, 2), np.int16)
            b.launch("scharr_deriv", *grid_2d(kw, kh), cur, _i(kw), _i(kh), deriv)
            prev = cur

    def _u8(self, which: str, k: int) -> Buffer:
        return self.backend.buffer(f"{_P}{which}/u8/{k}", self._level(k), np.uint8)

    def _deriv(self, which: str, k: int) -> Buffer:
        return self.backend.buffer(f"{_P}{which}/d/{k}", (*self._level(k), 2), np.int16)

    # --- corners ----------------------------------------------------------------------

    def _persistent_corners(self, params: CornerParams) -> F32:
        """corners.persistent_corners on the device pyramid ``ref``."""
        b = self.backend
        base = self._base
        h, w = self._level(base)
        responses: list[Buffer] = []
        for k in range(base, self._top + 1):
            kh, kw = self._level(k)
            resp = b.buffer(f"{_P}resp/{k}", (kh, kw), np.float32)
            b.launch(
                "harris_response",
                *grid_2d(kw, kh),
                self._u8("ref", k),
                _i(kw),
                _i(kh),
                _f(HARRIS_K),
                _f(HARRIS_SCALE),
                resp,
            )
            responses.append(resp)
        rowmax = b.buffer(_P + "rowmax", (h,), np.float32)
        thr = b.buffer(_P + "thr", (2,), np.float32)
        b.launch("row_max", *grid_1d(h), responses[0], _i(w), _i(h), rowmax)
        b.launch("harris_threshold", (1, 1), (1, 1), rowmax, _i(h), np.float64(params.quality), thr)
        strength = b.buffer(_P + "strength", (h, w), np.float32)
        depth = b.buffer(_P + "depth", (h, w), np.uint8)
        nms = max(1, round(params.min_distance_px))
        b.launch(
            "harris_nms",
            *grid_2d(w, h),
            responses[0],
            _i(w),
            _i(h),
            thr,
            _i(nms),
            _i(params.margin_px),
            strength,
            None,
        )
        for j in range(1, self._top - base + 1):
            ch, cw = self._level(base + j)
            flags: Buffer | None = None
            if ch > 4 and cw > 4:  # harris_corners(..., margin=1) needs h, w > 2 * 1 + 2
                flags = b.buffer(f"{_P}flags/{j}", (ch, cw), np.uint8)
                b.launch(
                    "harris_nms",
                    *grid_2d(cw, ch),
                    responses[j],
                    _i(cw),
                    _i(ch),
                    thr,
                    _i(1),
                    _i(1),
                    None,
                    flags,
                )
            b.launch(
                "persist_level",
                *grid_2d(w, h),
                strength,
                _i(w),
                _i(h),
                _i(j),
                flags,
                _i(cw),
                _i(ch),
                _f(2.0**j),
                np.float64(params.radius_px),
                depth,
            )
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
        corners = select_persistent(candidates, cand_depth, self._top - base, (h, w), params)
        if not len(corners):
            return corners
        return refine_subpix(b.download(self._u8("ref", base)), corners, params)

    # --- inputs -------------------------------------------------------------------------

    def _prepare(self, shape: tuple[int, int]) -> None:
        """Levels and buffers for a reference of ``shape`` (freed and redone on a change)."""
        s = self.settings
        self._frame_ready = False  # set_reference* reuses the frame and gray buffers
        if shape == self._shape:
            return
        self._lease.end()
        self.backend.release(_P)
        self._shape = shape
        self._base = tracking_level(shape, s.tracking_max_side_px, s.levels)
        self._top = coarsest_level(s.levels, self._base)
        top_h, top_w = level_shape(shape, self._top)
        self._window = np.asarray(cv2.createHanningWindow((top_w, top_h), cv2.CV_32F), np.float32)

    def _upload_gray(self, gray: F32) -> Buffer:
        return self.backend.upload_new(_P + "in", np.ascontiguousarray(gray, np.float32))

    def _upload_frame(self, frame: U8) -> Buffer:
        """The frame's one upload (``uint8 (H, W, 3)``, into the pooled ``reg/frame``)."""
        h, w = frame.shape[:2]
        buf = self.backend.buffer(_P + "frame", (h, w, 3), np.uint8)
        self.backend.upload(buf, frame)
        return buf

    def _gray_of(self, frame_buf: Buffer, frame: U8) -> Buffer:
        """``to_gray(frame)`` on the device, from its upload ``frame_buf``."""
        return gray_into(self.backend, frame_buf, frame, _P + "in")

    # --- the Registrar interface ------------------------------------------------------

    def set_reference(self, gray: F32) -> None:
        """Build the reference pyramid and its persistent corners (once per job).

        ``gray``: ``float32 (H, W)`` in [0, 1]. Few or no corners is not an error (every
        :meth:`register` then rejects with that reason).
        """
        check_gray(gray, "reference")
        self.stage_ms = {}
        t0 = time.perf_counter()
        self._prepare((int(gray.shape[0]), int(gray.shape[1])))
        self._reference(self._upload_gray(gray), t0, lambda: gray)

    def set_reference_frame(self, frame: U8) -> None:
        """:meth:`set_reference` of ``to_gray(frame)``, converted on the device.

        ``frame``: ``uint8 (H, W, 3)`` sRGB RGB (for the pipeline: the first image encoded
        to sRGB); uploaded once, as it is.
        """
        _check_frame_u8(frame, "reference")
        self.stage_ms = {}
        t0 = time.perf_counter()
        self._prepare((int(frame.shape[0]), int(frame.shape[1])))
        self._reference(self._gray_of(self._upload_frame(frame), frame), t0, lambda: to_gray(frame))

    def _reference(self, gray: Buffer, t0: float, host_gray: Callable[[], F32]) -> None:
        """The reference's pyramid from ``gray`` (on the device), and its corners; the
        dense flow's working scale from ``host_gray()`` (the same image on the host, asked
        for only when the settings want the refinement or the dense fallback)."""
        s = self.settings
        self._pyramid("ref", gray)
        self._ref_top = self.backend.download(self._u8("ref", self._top))
        t1 = time.perf_counter()
        self._corners = self._persistent_corners(corner_params(self.settings))
        n = len(self._corners)
        if n:
            pts = np.zeros((s.max_corners, 2), np.float32)
            pts[:n] = self._corners
            self.backend.upload_new(_P + "corners", pts)
        t2 = time.perf_counter()
        self.stage_ms = {"pyramid": elapsed_ms(t0, t1), "corners": elapsed_ms(t1, t2)}
        self._set_working_scale(host_gray, t2)

    def _track(
        self,
        prev: str,
        nxt: str,
        points: Buffer,
        guess: Buffer,
        status: Buffer,
        n: int,
        prior: tuple[float, float],
    ) -> None:
        """registration.track on the device: ``guess`` ends as the tracked positions."""
        s = self.settings
        b = self.backend
        top = self._top - self._base
        b.launch(
            "lk_init", *grid_1d(n), points, _i(n), _f(2.0**top), _f(prior[0]), _f(prior[1]), guess
        )
        for lvl in range(top, -1, -1):
            k = self._base + lvl
            kh, kw = self._level(k)
            eps = 0.05 if lvl else 0.01
            b.launch(
                "lk_level",
                *grid_1d(n),
                self._u8(prev, k),
                self._deriv(prev, k),
                self._u8(nxt, k),
                _i(kw),
                _i(kh),
                points,
                _i(n),
                _f(2.0**lvl),
                guess,
                _f(1.0 if lvl == top else 2.0),
                status,
                _i(s.lk_window_px),
                _i(min(max(s.lk_iterations, 0), 100)),
                np.float64(eps * eps),
                _f(s.lk_min_eigen),
            )

    def register(self, gray: F32) -> Registration:
        """Register ``gray`` (``float32 (H, W)`` in [0, 1], the reference's size).

        Returns the homography moving → reference and whether the frame may be fused.
        """
        if self._shape is None:
            raise RegistrationError("register() before set_reference()")
        check_gray(gray, "frame", self._shape)
        return self._register(lambda: self._upload_gray(gray), lambda: gray, time.perf_counter())

    def register_frame(self, frame: U8) -> Registration:
        """:meth:`register` of ``to_gray(frame)``, converted on the device (the same result).

        ``frame``: ``uint8 (H, W, 3)`` sRGB RGB, the reference's size. Uploaded once (also
        when the reference has too few corners to try): :meth:`warp_resident` warps this
        upload.
        """
        if self._shape is None:
            raise RegistrationError("register_frame() before set_reference()")
        _check_frame_u8(frame, "frame", self._shape)
        t0 = time.perf_counter()
        buf = self._upload_frame(frame)
        self._frame_ready = True
        return self._register(lambda: self._gray_of(buf, frame), lambda: to_gray(frame), t0)

    def _register(
        self, gray: Callable[[], Buffer], host_gray: Callable[[], F32], t0: float
    ) -> Registration:
        """register() from the gray image ``gray()`` puts on the device (timed from ``t0``);
        the dense fallback and the local refinement (``_refined``, on the host, as the
        OpenCV registrar's) read the same image from ``host_gray()`` when they run."""
        if self._shape is None:
            raise RegistrationError("register() before set_reference()")
        s = self.settings
        scale = float(2**self._base)
        self.stage_ms = {}
        n = len(self._corners)
        if n < s.min_inliers:
            reg = rejected(f"reference has {n} corners < {s.min_inliers}", 0, 0)
            return self._refined(host_gray, reg)  # the dense fallback may still register it
        b = self.backend
        self._pyramid("frm", gray())
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
        reg, src, dst = self._fit_round_trip(
            fwd_h, back_h, ok_f & ok_b, scale, self._shape, s, t0, t1
        )
        return self._refined(host_gray, reg, corner_misfit(reg, src, dst, scale))

    def warp(self, image: F32, reg: Registration) -> tuple[F32, F32]:
        """Resample ``image`` (``float32 (H, W)`` or ``(H, W, C)``, the reference's size)
        into the reference geometry with ``reg.homography`` and ``reg.residual`` (when
        refined; with any number of channels, where OpenCVRegistrar.warp applies it up to 4);
        ``(warped, valid)`` as OpenCVRegistrar.warp."""
        self._check_warp_input(image)
        t0 = time.perf_counter()
        self._lease.end()  # the warp buffers are the resident frame's
        H = np.asarray(reg.homography, np.float64)
        warped, valid = warp_on(self.backend, image, H, residual=reg.residual)
        self.stage_ms = {"warp": elapsed_ms(t0)}
        return warped, valid

    def warp_resident(self, reg: Registration, weight: float = 1.0) -> DeviceAlignedFrame:
        """Warp the frame of the last :meth:`register_frame` into the reference geometry,
        on the device: nothing is uploaded (the frame is) and nothing downloaded.

        Decodes the uploaded ``uint8`` frame to linear light (as ``srgb_to_linear``) and
        warps it with ``reg.homography`` and, when refined, ``reg.residual`` (as
        :meth:`warp`, whatever ``reg.accepted`` says; a refined frame uploads only its
        coarse sampling map). Returns the warped ``float32 (H, W, 3)`` image and ``float32 (H, W)``
        valid mask as pooled device buffers, with ``weight`` and a live lease; they hold
        the frame until the next warp or :meth:`close` (see the class docstring). Waits
        for the device, so that ``stage_ms["warp"]`` is the warp's time.
        """
        if self._shape is None:
            raise RegistrationError("warp_resident() before set_reference()")
        if not self._frame_ready:
            raise RegistrationError(
                "warp_resident() needs a frame from register_frame() "
                "(set_reference* reuses its buffer)"
            )
        t0 = time.perf_counter()
        b = self.backend
        h, w = self._shape
        self._lease.end()
        linear = b.buffer(_P + "warp/src", (h, w, 3), np.float32)
        linear_into(b, b.buffer(_P + "frame", (h, w, 3), np.uint8), linear)
        H = np.asarray(reg.homography, np.float64)
        dst, valid = warp_device(b, linear, H, residual=reg.residual)
        b.synchronize()
        self._lease = Lease()
        self.stage_ms = {"warp": elapsed_ms(t0)}
        return DeviceAlignedFrame(dst, valid, float(weight), self._lease)


def warp_device(
    backend: Backend,
    src: Buffer,
    H: F64,
    key: str = _P + "warp/",
    residual: F32 | None = None,
) -> tuple[Buffer, Buffer]:
    """The ``warp_perspective`` kernel on a device image: ``src`` ``float32 (h, w, c)``
    warped through ``H`` (moving → reference) into the pooled ``{key}dst`` (same shape)
    and ``{key}valid`` (``float32 (h, w)``, 1 where the source point lies in the frame
    inset by one pixel). Bilinear, replicated border. Queued, not waited for.

    With a ``residual`` (a refined :class:`~deblurd.pipeline.registration.Registration`'s
    working-scale field) the ``warp_map`` kernel samples at ``H⁻¹(p + r(p))`` instead, as
    :func:`~deblurd.pipeline.refine.warp_with_residual`: the coarse sampling map
    (:func:`~deblurd.pipeline.refine.residual_map`, ``float32 (rh, rw, 2)``, at most
    640 px on its longer side by default: 2.5 MB) is computed on the host and uploaded
    into ``{key}map``; the device upsamples it per pixel. ``valid`` then is 1 where the
    sampling position lies in the frame inset by one pixel."""
    h, w, c = src.shape
    dst = backend.buffer(key + "dst", (h, w, c), np.float32)
    valid = backend.buffer(key + "valid", (h, w), np.float32)
    if residual is not None:
        smap = residual_map((h, w), H, residual)
        mh, mw = smap.shape[:2]
        mbuf = backend.upload_new(key + "map", smap)
        backend.launch(
            "warp_map",
            *grid_2d(w, h),
            src,
            _i(w),
            _i(h),
            _i(c),
            mbuf,
            _i(mw),
            _i(mh),
            np.float64(1.0 / (w / mw)),  # cv2.resize's scale, as it computes it
            np.float64(1.0 / (h / mh)),
            dst,
            valid,
        )
        return dst, valid
    m = np.linalg.inv(H).reshape(-1)
    backend.launch(
        "warp_perspective",
        *grid_2d(w, h),
        src,
        _i(w),
        _i(h),
        _i(c),
        *[_f(float(v)) for v in m],
        dst,
        valid,
    )
    return dst, valid


def warp_on(
    backend: Backend,
    image: F32,
    H: F64,
    key: str = _P + "warp/",
    residual: F32 | None = None,
) -> tuple[F32, F32]:
    """``warp_homography`` with the ``warp_perspective`` kernel (``warp_with_residual``
    with ``warp_map`` when a ``residual`` is given), host in and out: the image is
    uploaded, the warped image and the valid mask downloaded (see :func:`warp_device`)."""
    h, w = image.shape[:2]
    c = 1 if image.ndim == 2 else int(image.shape[2])
    src = backend.upload_new(key + "src", np.ascontiguousarray(image).reshape(h, w, c))
    dst, valid = warp_device(backend, src, H, key, residual)
    out: F32 = backend.download(dst).reshape(image.shape)
    mask: F32 = backend.download(valid)
    return out, mask


def _check_frame_u8(frame: U8, what: str, shape: tuple[int, int] | None = None) -> None:
    """Raise :class:`RegistrationError` unless ``frame`` is ``uint8 (H, W, 3)`` (of
    ``shape`` when given; each side at least the registration's minimum)."""
    if (
        not isinstance(frame, np.ndarray)
        or frame.dtype != np.uint8
        or frame.ndim != 3
        or frame.shape[2] != 3
    ):
        raise RegistrationError(
            f"{what} must be a uint8 (H, W, 3) RGB frame, got "
            f"{getattr(frame, 'dtype', type(frame).__name__)} {getattr(frame, 'shape', '')}"
        )
    if min(frame.shape[:2]) < MIN_SIDE:
        raise RegistrationError(f"{what} {frame.shape} is smaller than {MIN_SIDE} px")
    if shape is not None and frame.shape[:2] != shape:
        raise RegistrationError(f"{what} is {frame.shape[:2]}, the reference is {shape}")


def _inside(points: F32, ok: Mask, w: int, h: int) -> Mask:
    """track()'s last test: finite and inside the base level."""
    ok = ok & np.isfinite(points).all(axis=1)
    inside: Mask = (
        ok
        & (points[:, 0] >= 0)
        & (points[:, 0] <= w - 1)
        & (points[:, 1] >= 0)
        & (points[:, 1] <= h - 1)
    )
    return inside
