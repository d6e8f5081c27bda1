"""Stage 4a's local refinement and dense fallback (deblurd.pipeline.refine)."""

from __future__ import annotations

import cv2
import numpy as np

from deblurd.imaging import F32
from deblurd.pipeline.refine import (
    RefineParams,
    WorkingScale,
    dense_homography,
    residual_field,
    warp_with_residual,
)
from deblurd.pipeline.registration import OpenCVRegistrar, warp_homography
from deblurd.settings.registration import RegistrationSettings

H, W = 360, 480


def texture(seed: int = 0) -> F32:
    rng = np.random.default_rng(seed)
    fine = cv2.GaussianBlur(rng.random((H, W)).astype(np.float32), (0, 0), 1.5)
    coarse = cv2.resize(rng.random((9, 12)).astype(np.float32), (W, H))
    out: F32 = np.clip(0.5 * coarse + 1.5 * (fine - 0.5) + 0.25, 0.0, 1.0).astype(np.float32)
    return out


def rolling_shutter(img: F32, shift_px: float) -> F32:
    """Rows read out while the camera pans: row y moves by shift·(y/H − ½) px sideways
    (a shear no homography of the whole frame follows exactly when it bends)."""
    ys, xs = np.mgrid[0:H, 0:W].astype(np.float32)
    t = ys / H - 0.5
    map_x = xs + np.float32(shift_px) * np.sin(np.pi * t)  # a curved, non-affine readout
    out: F32 = np.asarray(
        cv2.remap(img, map_x, ys, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT), np.float32
    )
    return out


def err(a: F32, b: F32) -> float:
    return float(np.sqrt(np.mean((a - b)[20:-20, 20:-20] ** 2)))


def test_residual_flow_follows_a_rolling_shutter_bend() -> None:
    ref = texture(1)
    moving = rolling_shutter(ref, 6.0)
    scale = WorkingScale(ref, RefineParams())
    identity = np.eye(3)
    residual = residual_field(scale, moving, identity)
    assert residual is not None
    plain, _ = warp_homography(moving, identity)
    refined, valid = warp_with_residual(moving, identity, residual)
    assert err(refined, ref) < 0.35 * err(plain, ref)
    assert valid[40:-40, 40:-40].all()


def test_no_residual_for_a_frame_the_homography_already_explains() -> None:
    ref = texture(2)
    H_true = np.array([[1.0, 0.002, 4.0], [-0.002, 1.0, -3.0], [0.0, 0.0, 1.0]])
    moving, _ = warp_homography(ref, np.linalg.inv(H_true))
    residual = residual_field(WorkingScale(ref, RefineParams()), moving, H_true)
    assert residual is None or float(np.median(np.hypot(*residual.reshape(-1, 2).T))) < 0.1


def test_dense_homography_recovers_a_shift_and_refuses_a_flat_frame() -> None:
    ref = texture(3)
    H_true = np.array([[1.0, 0.0, 12.0], [0.0, 1.0, -7.0], [0.0, 0.0, 1.0]])
    moving, _ = warp_homography(ref, np.linalg.inv(H_true))
    scale = WorkingScale(ref, RefineParams())
    fit = dense_homography(scale, moving)
    assert fit.homography is not None
    corners = np.array([[[40.0, 40.0]], [[W - 40.0, H - 40.0]]])
    got = cv2.perspectiveTransform(corners, fit.homography)
    want = cv2.perspectiveTransform(corners, H_true)
    assert float(np.abs(got - want).max()) < 0.5
    assert fit.ncc > 0.9 and fit.sharpness > 0.7 and fit.residual_px < 1.0
    flat = dense_homography(scale, np.full((H, W), 0.5, np.float32))
    assert flat.homography is None or flat.sharpness < 0.25 or flat.ncc < 0.6


def test_registrar_refines_and_reports_it() -> None:
    ref = texture(4)
    moving = rolling_shutter(ref, 6.0)
    on = OpenCVRegistrar(RegistrationSettings())
    on.set_reference(ref)
    reg = on.register(moving)
    assert reg.accepted and reg.residual is not None
    off = OpenCVRegistrar(RegistrationSettings(refine=False))
    off.set_reference(ref)
    reg_off = off.register(moving)
    assert reg_off.residual is None
    if reg_off.accepted:
        a, _ = on.warp(moving, reg)
        b, _ = off.warp(moving, reg_off)
        assert err(a, ref) < err(b, ref)
