"""A moving subject: a face-like patch that moves on its own in front of the scene.

The subject lives in *scene* coordinates (it is part of the world the camera looks at,
so camera shake moves it too) and has its own smooth motion on top: a translation and a
small rotation about its centre, both sums of random-phase sinusoids (0.3–2.5 Hz, the
pace of a head that nods, turns and sways). The renderer composites it over the
background at every sub-step of an exposure, so its motion blur is physically right
(its own motion combined with the camera's).

Subject pose ``(dx, dy, angle)``: displacement of its centre from its anchor, scene px,
and rotation about its centre, radians (positive: clockwise on screen).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np
import numpy.typing as npt

from deblurd.errors import SimulationError
from deblurd.imaging import F32, F64, srgb_to_linear
from deblurd.sim.scene import fractal_noise
from deblurd.sim.trajectory import Sines, random_sines

_AA = cv2.LINE_AA
_SKIN = [(232, 190, 160), (205, 150, 115), (160, 110, 80), (110, 75, 55), (240, 205, 180)]
_HAIR = [(40, 30, 25), (90, 60, 35), (160, 120, 70), (20, 20, 22), (120, 110, 100)]
_IRIS = [(80, 50, 30), (60, 90, 130), (70, 100, 60), (40, 30, 20)]
_MOTION_BAND_HZ = (0.3, 2.5)


def face_patch(height: int, rng: np.random.Generator) -> tuple[F32, F32]:
    """A face-like patch: linear colour ``float32 (h, w, 3)`` and alpha ``float32 (h, w)``
    in [0, 1] (anti-aliased edge), ``h = height``, ``w ≈ 0.8 h``.

    Skin with shading and fine texture, hair, eyes (white, iris, pupil, highlight),
    eyebrows, nose shading and a mouth: strong features for registration, and an
    outline that ghosts visibly if fusion ignores the motion.
    """
    h = max(height, 12)
    w = max(round(0.8 * h), 10)
    img = np.zeros((h, w, 3), np.uint8)
    alpha = np.zeros((h, w), np.uint8)
    cx, cy = w / 2.0, h * 0.55
    ax, ay = 0.46 * w, 0.44 * h
    skin = np.array(_SKIN[int(rng.integers(len(_SKIN)))], np.float32)
    hair = _HAIR[int(rng.integers(len(_HAIR)))]
    # Skin: shading lighter to the upper left, pores/freckles texture.
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    light = 1.08 - 0.25 * np.sqrt(((xx - 0.35 * w) / w) ** 2 + ((yy - 0.35 * h) / h) ** 2)
    tex = 1.0 + 0.04 * fractal_noise(rng, h, w, max(h / 40.0, 1.5), octaves=2)
    img[:] = np.clip(skin * (light * tex)[..., None], 0, 255).astype(np.uint8)
    # Hair: a cap over the top, with strands.
    hair_mask = np.zeros((h, w), np.uint8)
    cv2.ellipse(
        hair_mask, (int(cx), int(h * 0.42)), (int(0.5 * w), int(0.4 * h)), 0, 180, 360, 255, -1, _AA
    )
    cv2.rectangle(hair_mask, (0, int(h * 0.42)), (w, h), 0, -1)
    strands = cv2.resize(
        rng.standard_normal((4, max(w // 3, 2))).astype(np.float32),
        (w, h),
        interpolation=cv2.INTER_CUBIC,
    )
    hair_img = np.clip(np.array(hair, np.float32) * (1 + 0.25 * strands)[..., None], 0, 255)
    a = hair_mask[..., None].astype(np.float32) / 255.0
    img[:] = (img * (1 - a) + hair_img * a).astype(np.uint8)
    # Eyes, brows, nose, mouth.
    s = max(1, round(h / 60))
    iris = _IRIS[int(rng.integers(len(_IRIS)))]
    for side in (-1, 1):
        ex, ey = int(cx + side * 0.2 * w), int(h * 0.5)
        cv2.ellipse(
            img, (ex, ey), (int(0.11 * w), int(0.045 * h)), 0, 0, 360, (245, 245, 240), -1, _AA
        )
        cv2.circle(img, (ex, ey), max(int(0.04 * h), 1), iris, -1, _AA)
        cv2.circle(img, (ex, ey), max(int(0.018 * h), 1), (10, 10, 10), -1, _AA)
        cv2.circle(img, (ex - s, ey - s), max(s, 1), (255, 255, 255), -1, _AA)
        cv2.ellipse(
            img, (ex, int(h * 0.44)), (int(0.12 * w), int(0.03 * h)), 0, 200, 340, hair, 2 * s, _AA
        )
    nose = tuple(int(c) for c in skin * 0.7)
    cv2.line(img, (int(cx), int(h * 0.52)), (int(cx - 0.03 * w), int(h * 0.64)), nose, s, _AA)
    cv2.ellipse(
        img, (int(cx), int(h * 0.65)), (int(0.06 * w), int(0.015 * h)), 0, 0, 180, nose, s, _AA
    )
    cv2.ellipse(
        img,
        (int(cx), int(h * 0.74)),
        (int(0.13 * w), int(0.04 * h)),
        0,
        10,
        170,
        (150, 40, 45),
        2 * s,
        _AA,
    )
    # Outline: face ellipse plus hair cap.
    cv2.ellipse(alpha, (int(cx), int(cy)), (int(ax), int(ay)), 0, 0, 360, 255, -1, _AA)
    alpha = np.maximum(alpha, hair_mask)
    return srgb_to_linear(img), alpha.astype(np.float32) * np.float32(1.0 / 255.0)


@dataclass(frozen=True)
class Subject:
    """A subject: premultiplied patch ``float32 (h, w, 4)`` (linear RGB × alpha, alpha),
    its anchor (scene px, where its centre sits at pose 0) and its motion."""

    patch: F32
    anchor_xy: tuple[float, float]
    move_x: Sines
    move_y: Sines
    turn: Sines

    @classmethod
    def random(
        cls,
        frame_height: int,
        frame_width: int,
        scene_offset_xy: tuple[float, float],
        seed: int,
        *,
        speed_heights_s: float = 0.25,
        turn_deg_s: float = 15.0,
        size_heights: float = 0.34,
    ) -> Subject:
        """A face of ``size_heights`` × the frame height, near the frame centre, moving at
        an RMS speed of ``speed_heights_s`` frame heights per second and turning at
        ``turn_deg_s`` deg/s RMS. ``scene_offset_xy``: where the frame's origin lies in
        the scene at pose 0 (scene px)."""
        if speed_heights_s < 0 or turn_deg_s < 0 or not 0 < size_heights <= 1:
            raise SimulationError(
                f"bad subject: speed {speed_heights_s}, turn {turn_deg_s}, size {size_heights}"
            )
        rng = np.random.default_rng([seed, 2])
        colour, alpha = face_patch(round(size_heights * frame_height), rng)
        patch = np.concatenate([colour * alpha[..., None], alpha[..., None]], axis=2)
        ox, oy = scene_offset_xy
        ax = ox + frame_width * (0.5 + rng.uniform(-0.15, 0.15))
        ay = oy + frame_height * (0.5 + rng.uniform(-0.08, 0.08))
        speed = speed_heights_s * frame_height / math.sqrt(2.0)
        return cls(
            patch=np.ascontiguousarray(patch, dtype=np.float32),
            anchor_xy=(float(ax), float(ay)),
            move_x=random_sines(rng, 5, _MOTION_BAND_HZ, rms_speed=speed),
            move_y=random_sines(rng, 5, _MOTION_BAND_HZ, rms_speed=speed),
            turn=random_sines(rng, 4, _MOTION_BAND_HZ, rms_speed=math.radians(turn_deg_s)),
        )

    def poses(self, t_s: npt.ArrayLike) -> F64:
        """Subject poses at times ``t_s`` (N,) → ``float64 (N, 3)``: dx, dy (scene px),
        angle (rad)."""
        t = np.atleast_1d(np.asarray(t_s, dtype=np.float64))
        return np.column_stack([self.move_x.value(t), self.move_y.value(t), self.turn.value(t)])

    def to_scene(self, pose: npt.ArrayLike) -> F64:
        """The affine map (3, 3) from patch px to scene px at subject pose ``(dx, dy, angle)``."""
        out: F64 = self.to_scene_many(np.asarray(pose, dtype=np.float64).reshape(1, 3))[0]
        return out

    def to_scene_many(self, poses: npt.ArrayLike) -> F64:
        """:meth:`to_scene` for poses ``(N, 3)`` → ``(N, 3, 3)``."""
        p = np.atleast_2d(np.asarray(poses, dtype=np.float64))
        h, w = self.patch.shape[:2]
        c, s = np.cos(p[:, 2]), np.sin(p[:, 2])
        px, py = (w - 1) / 2.0, (h - 1) / 2.0
        out = np.zeros((p.shape[0], 3, 3), np.float64)
        # move(anchor + d) · rot(angle) · translate(−patch centre)
        out[:, 0, 0], out[:, 0, 1] = c, -s
        out[:, 1, 0], out[:, 1, 1] = s, c
        out[:, 0, 2] = -c * px + s * py + self.anchor_xy[0] + p[:, 0]
        out[:, 1, 2] = -s * px - c * py + self.anchor_xy[1] + p[:, 1]
        out[:, 2, 2] = 1.0
        return out

    def outline(self) -> F64:
        """Probe points of the patch (its centre and corners), patch px, ``(5, 2)``."""
        h, w = self.patch.shape[:2]
        return np.array(
            [[(w - 1) / 2, (h - 1) / 2], [0, 0], [w - 1, 0], [0, h - 1], [w - 1, h - 1]], np.float64
        )
