"""Rendering an exposure: the scene integrated over the exposure window under shake.

A frame exposed over ``[t, t + T]`` is the time average of the scene seen through the
moving camera. The renderer approximates the integral by ``N`` sub-steps at the
midpoints of ``N`` equal slices of the window, each a bilinear ``cv2.warpPerspective``
of the scene (``BORDER_REFLECT``), with ``N`` chosen per frame so that no probe point
(frame centre and corners, the subject's centre and corners) moves more than
``max_substep_px`` between consecutive sub-steps. A moving subject is composited over
the background at every sub-step, so its blur combines its motion with the camera's.

Ground truth of an exposure: the noiseless sharp scene at the **mean pose** over the
window (camera and subject), so the blurred frame has no shift against it (to first
order in the small rotations).

The PSF of an exposure is the blur kernel of the static scene at the frame centre, in
convolution convention: ``blurred(x) ≈ Σ_d psf[c + d] · truth(x − d)`` with
``c = (k // 2, k // 2)`` the kernel centre ((row, col) = (y, x) offsets). For
``cv2.filter2D`` (a correlation) flip it: ``psf[::-1, ::-1]``.

``fast=True`` renders with one warp at the mean pose convolved with the centre PSF (and
the subject layer with its own PSF): exact for pure yaw/pitch at the centre, it ignores
the spatial variation of the blur (roll, perspective), which is small at preview
exposures.

**Rolling shutter** (``readout_s`` > 0): row ``r`` of an ``H``-row frame starts its
exposure ``readout_s · r / H`` after the first. The frame is rendered in horizontal
bands, each over its own window (that of its centre row), with as many bands as keep
the motion between neighbouring bands' windows under ``max_substep_px`` (at least 2,
at most ``H / 4``): straight lines lean and bend as on a real CMOS sensor. Each band's
truth is the sharp view at that band's mean pose, so the truth has the frame's
rolling-shutter geometry too. The PSF and the statistics are those of the band that
holds the centre row (``blur_extent_max_px``: the largest over all bands' probes).
"""

from __future__ import annotations

import dataclasses
import itertools
import math
from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np
import numpy.typing as npt

from deblurd.errors import SimulationError
from deblurd.imaging import F32, F64, U8
from deblurd.sim.subject import Subject
from deblurd.sim.trajectory import Pose, Trajectory, homographies

_PSF_STEP_PX = 0.1  # spacing of the dense path samples that rasterise the PSF
_MAX_DENSE = 4096


@dataclass(frozen=True)
class ExposureStats:
    """Facts of one rendered exposure.

    ``t_start_s``/``exposure_s``: the window, s. ``substeps``: warps averaged.
    ``mean_pose``: camera pose of the ground truth (yaw, pitch, roll; rad).
    ``blur_path_px``: length of the path of the frame centre during the exposure, px.
    ``blur_extent_px``: diameter of the centre PSF's support (largest distance between
    two positions of the centre), px. ``blur_extent_max_px``: the largest such diameter
    over the centre and the four corners, px (roll blurs the corners more).
    ``subject_pose``: the subject's mean pose (dx, dy px, angle rad) or None;
    ``subject_blur_px``: diameter of the subject centre's path in the frame, px, or None.
    """

    t_start_s: float
    exposure_s: float
    substeps: int
    mean_pose: Pose
    blur_path_px: float
    blur_extent_px: float
    blur_extent_max_px: float
    subject_pose: tuple[float, float, float] | None = None
    subject_blur_px: float | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "t_start_s": self.t_start_s,
            "exposure_s": self.exposure_s,
            "substeps": self.substeps,
            "mean_pose_rad": list(self.mean_pose),
            "mean_pose_deg": [math.degrees(v) for v in self.mean_pose],
            "blur_path_px": self.blur_path_px,
            "blur_extent_px": self.blur_extent_px,
            "blur_extent_max_px": self.blur_extent_max_px,
            "subject_pose": None if self.subject_pose is None else list(self.subject_pose),
            "subject_blur_px": self.subject_blur_px,
        }

    @classmethod
    def from_json(cls, doc: dict[str, Any]) -> ExposureStats:
        sp = doc.get("subject_pose")
        return cls(
            t_start_s=float(doc["t_start_s"]),
            exposure_s=float(doc["exposure_s"]),
            substeps=int(doc["substeps"]),
            mean_pose=_pose3(doc["mean_pose_rad"]),
            blur_path_px=float(doc["blur_path_px"]),
            blur_extent_px=float(doc["blur_extent_px"]),
            blur_extent_max_px=float(doc["blur_extent_max_px"]),
            subject_pose=None if sp is None else _pose3(sp),
            subject_blur_px=None
            if doc.get("subject_blur_px") is None
            else float(doc["subject_blur_px"]),
        )


def _pose3(v: Any) -> tuple[float, float, float]:
    a, b, c = (float(x) for x in v)
    return a, b, c


@dataclass(frozen=True)
class Exposure:
    """One noiseless exposure: ``blurred`` and ``truth`` linear ``float32 (H, W, 3)``,
    ``mask`` ``uint8 (H, W)`` (255 where the subject is in the truth) or None, ``psf``
    ``float32 (k, k)`` summing to 1, and its :class:`ExposureStats`."""

    blurred: F32
    truth: F32
    mask: U8 | None
    psf: F32
    stats: ExposureStats


def _apply(mats: F64, pts: F64) -> F64:
    """Map points ``(P, 2)`` by homographies ``(N, 3, 3)`` → ``(N, P, 2)``."""
    hom = np.concatenate([pts, np.ones((pts.shape[0], 1))], axis=1)
    out = np.einsum("nij,pj->npi", mats, hom)
    res: F64 = out[..., :2] / out[..., 2:3]
    return res


def path_length(path: F64) -> F64:
    """Length of polylines ``(N, P, 2)`` along axis 0 → ``(P,)`` px."""
    out: F64 = np.linalg.norm(np.diff(path, axis=0), axis=-1).sum(axis=0)
    return out


def extent(points: F64, directions: int = 90) -> float:
    """Diameter of a point set ``(N, 2)``: the largest distance between two of its
    points (as the widest projection over ``directions`` angles; error < 0.02 %)."""
    ang = np.linspace(0.0, np.pi, directions, endpoint=False)
    proj = points @ np.stack([np.cos(ang), np.sin(ang)])
    return float(np.max(proj.max(axis=0) - proj.min(axis=0)))


def rasterise_psf(offsets: F64) -> F32:
    """A PSF ``float32 (k, k)`` (k odd, summing to 1) from equally weighted positions
    ``(N, 2)`` (x, y px relative to the kernel centre), splatted bilinearly."""
    radius = float(np.max(np.abs(offsets))) if offsets.size else 0.0
    k = 2 * math.ceil(radius) + 3
    c = k // 2
    x, y = offsets[:, 0] + c, offsets[:, 1] + c
    x0, y0 = np.floor(x).astype(np.intp), np.floor(y).astype(np.intp)
    fx, fy = x - x0, y - y0
    psf = np.zeros((k, k), np.float64)
    w = 1.0 / offsets.shape[0]
    np.add.at(psf, (y0, x0), (1 - fx) * (1 - fy) * w)
    np.add.at(psf, (y0, x0 + 1), fx * (1 - fy) * w)
    np.add.at(psf, (y0 + 1, x0), (1 - fx) * fy * w)
    np.add.at(psf, (y0 + 1, x0 + 1), fx * fy * w)
    psf /= psf.sum()
    return psf.astype(np.float32)


def convolve(image: F32, psf: F32, border: int = cv2.BORDER_REFLECT) -> F32:
    """``image`` (H, W[, C]) convolved with ``psf`` (convolution convention, see module)."""
    if psf.shape == (1, 1) or (psf.shape[0] == 3 and float(psf[1, 1]) == 1.0):
        return image.copy()
    kernel = np.ascontiguousarray(psf[::-1, ::-1])
    out = np.asarray(cv2.filter2D(image, -1, kernel, borderType=border), np.float32)
    return out


class ShakeRenderer:
    """Renders exposures of ``scene`` through a shaking camera (and a moving subject).

    ``scene``: linear ``float32 (Hs, Ws, 3)``, at least as large as the frame; at pose 0
    the frame sees its centre (offset ``((Ws−W)//2, (Hs−H)//2)``). ``focal_px``: focal
    length of the frame, px. Immutable after construction: calls may run concurrently.
    """

    def __init__(
        self,
        scene: F32,
        width: int,
        height: int,
        trajectory: Trajectory,
        focal_px: float,
        subject: Subject | None = None,
    ) -> None:
        if scene.dtype != np.float32 or scene.ndim != 3 or scene.shape[2] != 3:
            raise SimulationError(
                f"scene must be float32 (H, W, 3), got {scene.dtype} {scene.shape}"
            )
        if scene.shape[0] < height or scene.shape[1] < width:
            raise SimulationError(
                f"scene {scene.shape[1]}x{scene.shape[0]} is smaller than the frame "
                f"{width}x{height}"
            )
        if focal_px <= 0:
            raise SimulationError(f"focal length must be positive, got {focal_px} px")
        self.scene = np.ascontiguousarray(scene)
        self.width, self.height = width, height
        self.trajectory = trajectory
        self.focal_px = float(focal_px)
        self.subject = subject
        self.offset = ((scene.shape[1] - width) // 2, (scene.shape[0] - height) // 2)
        self._to_ref = np.array(
            [[1, 0, -self.offset[0]], [0, 1, -self.offset[1]], [0, 0, 1]], np.float64
        )
        self._probes_scene = self._band_probes(0, height)

    def _band_probes(self, r0: int, r1: int) -> F64:
        """Probe points (scene px) of rows ``[r0, r1)``: their centre and four corners."""
        w1, top, bottom = self.width - 1, float(r0), float(r1 - 1)
        mid = (top + bottom) / 2
        probes = np.array(
            [[w1 / 2, mid], [0, top], [w1, top], [0, bottom], [w1, bottom]], np.float64
        )
        out: F64 = probes + np.array(self.offset, np.float64)
        return out

    # -- geometry ---------------------------------------------------------------------
    def scene_to_frame(self, poses: npt.ArrayLike) -> F64:
        """Homographies ``(N, 3, 3)`` from scene px to frame px at camera poses ``(N, 3)``."""
        out: F64 = homographies(poses, self.focal_px, self.width, self.height) @ self._to_ref
        return out

    def _paths(
        self, times: F64, probes: F64 | None = None
    ) -> tuple[F64, F64, F64 | None, F64 | None]:
        """Camera poses, frame-probe paths ``(N, 5, 2)`` (of ``probes``, scene px;
        default the frame's), subject poses and subject-probe paths ``(N, 5, 2)`` at
        ``times``."""
        poses = self.trajectory.poses(times)
        g = self.scene_to_frame(poses)
        frame_paths = _apply(g, self._probes_scene if probes is None else probes)
        if self.subject is None:
            return poses, frame_paths, None, None
        sp = self.subject.poses(times)
        full = g @ self.subject.to_scene_many(sp)
        subj_paths = _apply(full, self.subject.outline())
        return poses, frame_paths, sp, subj_paths

    # -- rendering --------------------------------------------------------------------
    def _warp_scene(
        self, scene_to_frame: F64, dst: F32 | None = None, rows: tuple[int, int] | None = None
    ) -> F32:
        """The scene warped into the frame, or into its rows ``[r0, r1)`` only."""
        height = self.height
        if rows is not None:
            scene_to_frame = _row_shift(rows[0]) @ scene_to_frame
            height = rows[1] - rows[0]
        out = cv2.warpPerspective(
            self.scene,
            scene_to_frame,
            (self.width, height),
            dst=dst,
            flags=cv2.INTER_LINEAR,
            borderMode=cv2.BORDER_REFLECT,
        )
        return np.asarray(out, np.float32)

    def _composite(
        self,
        dst: F32,
        patch_to_frame: F64,
        *,
        pad: int = 0,
        psf: F32 | None = None,
        mask: U8 | None = None,
    ) -> None:
        """Composite the subject (premultiplied) over ``dst`` in place, warped by
        ``patch_to_frame``; optionally blurred by ``psf``; ``mask`` gets alpha ≥ 0.5."""
        if self.subject is None:
            return
        patch = self.subject.patch
        ph, pw = patch.shape[:2]
        corners = np.array([[0, 0], [pw - 1, 0], [0, ph - 1], [pw - 1, ph - 1]], np.float64)
        pts = _apply(patch_to_frame[None], corners)[0]
        x0 = max(math.floor(pts[:, 0].min()) - 2 - pad, 0)
        y0 = max(math.floor(pts[:, 1].min()) - 2 - pad, 0)
        x1 = min(math.ceil(pts[:, 0].max()) + 3 + pad, dst.shape[1])
        y1 = min(math.ceil(pts[:, 1].max()) + 3 + pad, dst.shape[0])
        if x1 <= x0 or y1 <= y0:
            return
        shift = np.array([[1, 0, -x0], [0, 1, -y0], [0, 0, 1]], np.float64)
        warped = cv2.warpPerspective(
            patch,
            shift @ patch_to_frame,
            (x1 - x0, y1 - y0),
            flags=cv2.INTER_LINEAR,
            borderMode=cv2.BORDER_CONSTANT,
            borderValue=0,
        )
        layer: F32 = np.asarray(warped, np.float32)
        if psf is not None:
            layer = convolve(layer, psf, cv2.BORDER_CONSTANT)
        alpha = layer[..., 3:4]
        roi = dst[y0:y1, x0:x1]
        roi *= 1.0 - alpha
        roi += layer[..., :3]
        if mask is not None:
            mask[y0:y1, x0:x1] = np.where(alpha[..., 0] >= 0.5, 255, 0).astype(np.uint8)

    def render_truth(
        self,
        pose: Pose | npt.ArrayLike,
        subject_pose: npt.ArrayLike | None = None,
        rows: tuple[int, int] | None = None,
    ) -> tuple[F32, U8 | None]:
        """The noiseless sharp view at camera ``pose`` (yaw, pitch, roll; rad) with the
        subject (if any) at ``subject_pose`` (dx, dy px, angle rad; default its pose 0):
        linear ``float32 (H, W, 3)`` and the subject mask ``uint8 (H, W)`` or None; with
        ``rows`` = ``(r0, r1)`` only those rows (``(r1 − r0, W, …)``)."""
        g = self.scene_to_frame(np.asarray(pose, np.float64).reshape(1, 3))[0]
        img = self._warp_scene(g, rows=rows)
        if self.subject is None:
            return img, None
        sp = np.zeros(3) if subject_pose is None else np.asarray(subject_pose, np.float64)
        mask = np.zeros(img.shape[:2], np.uint8)
        gs = g if rows is None else _row_shift(rows[0]) @ g
        self._composite(img, gs @ self.subject.to_scene(sp), mask=mask)
        return img, mask

    def render(
        self,
        t_start_s: float,
        exposure_s: float,
        *,
        max_substep_px: float = 0.5,
        max_substeps: int = 512,
        fast: bool = False,
        readout_s: float = 0.0,
    ) -> Exposure:
        """Render the exposure ``[t_start_s, t_start_s + exposure_s]`` (noiseless).

        ``max_substep_px``: largest motion of any probe point between sub-steps, px.
        ``max_substeps`` caps the work per frame. ``fast``: PSF-convolution path (module doc).
        ``readout_s``: rolling-shutter readout, first row to last, s (0: global shutter).
        """
        if not exposure_s > 0 or not max_substep_px > 0 or max_substeps < 1:
            raise SimulationError(
                f"bad exposure {exposure_s} s / sub-step {max_substep_px} px / cap {max_substeps}"
            )
        if not (math.isfinite(readout_s) and readout_s >= 0):
            raise SimulationError(f"bad rolling-shutter readout {readout_s} s")
        if readout_s == 0:
            return self._render_rows(t_start_s, exposure_s, max_substep_px, max_substeps, fast)
        return self._render_rolling(
            t_start_s, exposure_s, readout_s, max_substep_px, max_substeps, fast
        )

    def _bands(self, t_start_s: float, readout_s: float, max_substep_px: float) -> list[int]:
        """Row boundaries ``[0, …, H]`` of the rolling-shutter bands (module doc)."""
        coarse = t_start_s + readout_s * (np.arange(33) + 0.5) / 33
        _, fpaths, _, spaths = self._paths(coarse)
        longest = float(path_length(fpaths).max())
        if spaths is not None:
            longest = max(longest, float(path_length(spaths).max()))
        n = int(min(max(math.ceil(longest / max_substep_px), 2), max(self.height // 4, 1)))
        edges = np.round(np.linspace(0, self.height, n + 1)).astype(int)
        return sorted(set(edges.tolist()))

    def _render_rolling(
        self,
        t_start_s: float,
        exposure_s: float,
        readout_s: float,
        max_substep_px: float,
        max_substeps: int,
        fast: bool,
    ) -> Exposure:
        edges = self._bands(t_start_s, readout_s, max_substep_px)
        h, w = self.height, self.width
        blurred = np.empty((h, w, 3), np.float32)
        truth = np.empty((h, w, 3), np.float32)
        mask = None if self.subject is None else np.zeros((h, w), np.uint8)
        centre: Exposure | None = None
        worst = 0.0
        substeps = 0
        for r0, r1 in itertools.pairwise(edges):
            t_band = t_start_s + readout_s * ((r0 + r1 - 1) / 2) / h
            band = self._render_rows(
                t_band, exposure_s, max_substep_px, max_substeps, fast, rows=(r0, r1)
            )
            blurred[r0:r1] = band.blurred
            truth[r0:r1] = band.truth
            if mask is not None and band.mask is not None:
                mask[r0:r1] = band.mask
            worst = max(worst, band.stats.blur_extent_max_px)
            substeps = max(substeps, band.stats.substeps)
            if r0 <= (h - 1) // 2 < r1:
                centre = band
        if centre is None:  # unreachable: the bands cover every row
            raise SimulationError("rolling shutter: no band holds the centre row")
        stats = dataclasses.replace(
            centre.stats,
            t_start_s=float(t_start_s),
            substeps=substeps,
            blur_extent_max_px=worst,
        )
        return Exposure(blurred, truth, mask, centre.psf, stats)

    def _render_rows(
        self,
        t_start_s: float,
        exposure_s: float,
        max_substep_px: float,
        max_substeps: int,
        fast: bool,
        rows: tuple[int, int] | None = None,
    ) -> Exposure:
        """One exposure window for the whole frame, or for its rows ``[r0, r1)`` only
        (then the images are ``(r1 − r0, W, …)``, and the probes are the band's)."""
        probes = None if rows is None else self._band_probes(*rows)
        # A coarse look at the motion decides the sub-steps and the PSF sampling.
        coarse = t_start_s + exposure_s * (np.arange(33) + 0.5) / 33
        _, fpaths, _, spaths = self._paths(coarse, probes)
        moves = path_length(fpaths)
        longest = float(moves.max())
        if spaths is not None:
            longest = max(longest, float(path_length(spaths).max()))
        n = int(min(max(math.ceil(longest / max_substep_px), 1), max_substeps))
        dense_n = int(min(max(64, math.ceil(float(moves[0]) / _PSF_STEP_PX)), _MAX_DENSE))
        dense_t = t_start_s + exposure_s * (np.arange(dense_n) + 0.5) / dense_n
        dposes, dfp, dsp, dsubj = self._paths(dense_t, probes)

        # The truth's pose: the time average of the pose over the window (dense samples,
        # so it does not depend on the number of sub-steps or the render path).
        mean_pose = dposes.mean(axis=0)
        g_mean = self.scene_to_frame(mean_pose[None])[0]
        probe0 = (self._probes_scene if probes is None else probes)[:1]
        centre_mean = _apply(g_mean[None], probe0)[0, 0]
        offsets = dfp[:, 0, :] - centre_mean
        psf = rasterise_psf(offsets)
        sub_mean: F64 | None = None
        subj_blur: float | None = None
        if dsp is not None and dsubj is not None:
            sub_mean = dsp.mean(axis=0)
            subj_blur = extent(dsubj[:, 0, :])

        truth, mask = self.render_truth(mean_pose, sub_mean, rows)
        if fast and rows is not None:
            blurred = self._render_fast_rows(rows, psf, g_mean, sub_mean, dsubj)
        elif fast:
            blurred = self._render_fast(truth, psf, g_mean, sub_mean, dsubj)
        else:
            steps_t = t_start_s + exposure_s * (np.arange(n) + 0.5) / n
            blurred = self._render_steps(steps_t, self.trajectory.poses(steps_t), rows)
        stats = ExposureStats(
            t_start_s=float(t_start_s),
            exposure_s=float(exposure_s),
            substeps=1 if fast else n,
            mean_pose=_pose3(mean_pose),
            blur_path_px=float(path_length(dfp[:, :1])[0]),
            blur_extent_px=extent(offsets),
            blur_extent_max_px=max(extent(dfp[:, i]) for i in range(dfp.shape[1])),
            subject_pose=None if sub_mean is None else _pose3(sub_mean),
            subject_blur_px=subj_blur,
        )
        return Exposure(blurred, truth, mask, psf, stats)

    def _render_steps(self, times: F64, poses: F64, rows: tuple[int, int] | None = None) -> F32:
        g = self.scene_to_frame(poses)
        if rows is not None:
            g = _row_shift(rows[0]) @ g
        full = None
        if self.subject is not None:
            full = g @ self.subject.to_scene_many(self.subject.poses(times))
        height = self.height if rows is None else rows[1] - rows[0]
        acc = np.zeros((height, self.width, 3), np.float32)
        buf = np.empty_like(acc)
        for i in range(len(times)):
            view = self._warp_scene(g[i], buf, (0, height))
            if full is not None:
                self._composite(view, full[i])
            acc += view
        acc *= np.float32(1.0 / len(times))
        return acc

    def _render_fast(
        self, truth: F32, psf: F32, g_mean: F64, sub_mean: F64 | None, dsubj: F64 | None
    ) -> F32:
        if self.subject is None or sub_mean is None or dsubj is None:
            return convolve(truth, psf)
        blurred = convolve(self._warp_scene(g_mean), psf)
        centre = dsubj[:, 0, :]
        full_mean = g_mean @ self.subject.to_scene(sub_mean)
        c_mean = _apply(full_mean[None], self.subject.outline()[:1])[0, 0]
        spsf = rasterise_psf(centre - c_mean)
        self._composite(blurred, full_mean, pad=spsf.shape[0] // 2 + 1, psf=spsf)
        return blurred

    def _render_fast_rows(
        self,
        rows: tuple[int, int],
        psf: F32,
        g_mean: F64,
        sub_mean: F64 | None,
        dsubj: F64 | None,
    ) -> F32:
        """The fast path for rows ``[r0, r1)``: rendered with a margin of the PSF's
        radius (so the convolution inside the band is exact), then cropped."""
        r0, r1 = rows
        m = psf.shape[0] // 2 + 2
        a, b = max(r0 - m, 0), min(r1 + m, self.height)
        shift = _row_shift(a)
        sharp = self._warp_scene(g_mean, rows=(a, b))
        if self.subject is None or sub_mean is None or dsubj is None:
            return np.ascontiguousarray(convolve(sharp, psf)[r0 - a : r1 - a])
        blurred = convolve(sharp, psf)
        centre = dsubj[:, 0, :]
        full_mean = g_mean @ self.subject.to_scene(sub_mean)
        c_mean = _apply(full_mean[None], self.subject.outline()[:1])[0, 0]
        spsf = rasterise_psf(centre - c_mean)
        self._composite(blurred, shift @ full_mean, pad=spsf.shape[0] // 2 + 1, psf=spsf)
        return np.ascontiguousarray(blurred[r0 - a : r1 - a])


def _row_shift(r0: int) -> F64:
    """The translation that moves frame row ``r0`` to row 0."""
    return np.array([[1, 0, 0], [0, 1, -r0], [0, 0, 1]], np.float64)
