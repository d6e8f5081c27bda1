"""A camera's image signal processor (ISP): what a real camera hands over.

Real cameras (libcamera's ISP on a Raspberry Pi, Argus on a Jetson, a phone) do not hand
over the sensor's white Poisson–Gaussian noise (DESIGN §5 "Real frames are not simulator
frames"). :func:`camera_frame` turns the **linear blurred radiance** of an exposure
``float32 (H, W, 3)`` into such a frame, ``uint8 (H, W, 3)`` sRGB RGB, in the order a
camera does it:

1. **Exposure flicker** (``brightness``): auto-exposure drifts a few % between frames
   while the metadata stays the same (:func:`flicker_factors`).
2. **RGGB mosaic** (``mosaic``): one colour per photosite (R at even rows and columns, B
   at odd ones, G elsewhere). The red and blue photosites are less sensitive than the
   green ones (they collect ``1/wb_red`` and ``1/wb_blue`` of the light).
3. **Sensor noise per photosite**: :meth:`SensorModel.expose_linear` at the frame's
   exposure and gain (Poisson–Gaussian, clipping at the full well), then the white
   balance gains, which amplify the red and blue noise.
4. **Demosaic** (``demosaic``): OpenCV's bilinear, edge-aware (EA) or VNG
   (:func:`demosaic`). Noise becomes spatially correlated and
   coloured.
5. **Tone curve** (``gamma``, ``contrast``): the linear values raised to ``gamma``, sRGB
   encoding, then an S-curve (a blend with smoothstep of weight ``contrast``)
   (:func:`tone_curve`).
6. **ISP spatial denoise** (``denoise``, ``chroma_denoise``), on YCbCr of the tone-mapped
   image as camera ISPs do: luma through a bilateral filter whose range σ is 3× the
   sensor's predicted noise at mid-grey (what an ISP tuned per gain does), blended in by
   ``denoise``; chroma Gaussian-blurred (σ 1–4 px), blended in by ``chroma_denoise``. The
   remaining noise is partly smoothed and spatially correlated.
7. **Sharpening** (``sharpen``, ``sharpen_radius_px``): unsharp mask on luma with a
   coring threshold of half the predicted noise (halos on edges, noise grain boosted).
8. **8 bits**, with **4:2:0 chroma** (``chroma_420``: Cb/Cr averaged over 2×2 and
   bilinearly upsampled, as YUV420 from picamera2 or any video path).
9. **Compression** (``codec``): ``"jpeg"`` (``cv2.imencode`` at ``jpeg_quality``, which
   itself subsamples chroma 4:2:0) or ``"h264"``: an H.264-like intra/inter block coder
   (:func:`block_compress`): 4:2:0 YCbCr, an orthonormal DCT per ``block_px`` block,
   uniform quantisation with step ``qstep`` codes (a dead zone that drops weak
   coefficients: fine texture and noise are flattened per block), optionally the
   in-loop deblocking filter, and with the previous frame of the stream given, blocks
   that barely changed are copied from it (skip blocks: the noise freezes between frames).

Ground truth goes through the same radiometry: :func:`tone_map` (flicker factor,
:func:`tone_curve`, 8 bits — no noise, no denoise, sharpening or compression), so that on
a noiseless flat frame ``tone_map`` equals :func:`camera_frame` without sharpening and
compression.

Everything is vectorised numpy/OpenCV and deterministic by ``rng``. CPU time per frame on
one core (this machine, ``cv2.setNumThreads(1)``), sensor noise included: 640×480 35 ms
with JPEG, 56–60 ms with the H.264-like coder (40 ms median, 53 ms at most over random
cameras; the plain sensor alone takes 32 ms); 1920×1080 210–370 ms.
:meth:`IspParams.random` draws per-burst stages in ranges of phone and Raspberry Pi cameras.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any, Literal, get_args

import cv2
import numpy as np
import numpy.typing as npt

from deblurd.errors import SimulationError
from deblurd.imaging import F32, F64, U8, linear_to_srgb, srgb_to_linear
from deblurd.sim.sensor import SensorModel

Demosaic = Literal["bilinear", "ea", "vng"]
Codec = Literal["none", "jpeg", "h264"]

# OpenCV's Bayer codes are named after the 2nd row's 2nd/3rd pixels: BG is RGGB here.
_BAYER = {
    "bilinear": cv2.COLOR_BayerBG2RGB,
    "ea": cv2.COLOR_BayerBG2RGB_EA,
    "vng": cv2.COLOR_BayerBG2RGB_VNG,
}
# Full-range BT.601 YCbCr (JPEG's), on values in [0, 1] (Cb, Cr centred on 0.5).
_RGB2YCC = np.array(
    [
        [0.299, 0.587, 0.114, 0.0],
        [-0.168736, -0.331264, 0.5, 0.5],
        [0.5, -0.418688, -0.081312, 0.5],
    ],
    np.float32,
)
_YCC2RGB = np.array(
    [
        [1.0, 0.0, 1.402, -0.701],
        [1.0, -0.344136, -0.714136, 0.529136],
        [1.0, 1.772, 0.0, -0.886],
    ],
    np.float32,
)
_MID_GREY = 0.18


@dataclass(frozen=True)
class IspParams:
    """Stages and strengths of a camera ISP (see the module docstring for the order).

    The defaults are **all off**: :func:`camera_frame` then equals the plain sensor
    (:meth:`SensorModel.expose`). ``mosaic``: RGGB mosaic + ``demosaic`` (``"bilinear"``,
    ``"ea"``, ``"vng"``). ``wb_red``/``wb_blue``: white-balance gains of the red/blue
    photosites (≥ 1; only with ``mosaic``). ``gamma``: exponent on linear light before
    sRGB encoding (1: plain sRGB). ``contrast``: S-curve weight, 0–1. ``denoise``: luma
    denoise blend, 0–1. ``chroma_denoise``: chroma denoise blend, 0–1 (σ 1 + 3·strength
    px). ``sharpen``: unsharp-mask amount (0: off); ``sharpen_radius_px``: its Gaussian σ,
    px. ``chroma_420``: 4:2:0 chroma. ``codec``: ``"none"``, ``"jpeg"`` (at
    ``jpeg_quality``, 1–100) or ``"h264"`` (``block_px`` 4, 8 or 16; ``qstep``: luma
    quantiser step, 8-bit codes, chroma ×1.25; ``deblock``: in-loop deblocking;
    ``skip``: copy blocks that changed by less than ``qstep``/2 RMS from the previous
    frame of the stream). ``flicker``: RMS relative brightness wobble between frames
    (auto-exposure drift; 0.02 = 2 %), used by :func:`flicker_factors`.
    """

    mosaic: bool = False
    demosaic: Demosaic = "ea"
    wb_red: float = 1.0
    wb_blue: float = 1.0
    gamma: float = 1.0
    contrast: float = 0.0
    denoise: float = 0.0
    chroma_denoise: float = 0.0
    sharpen: float = 0.0
    sharpen_radius_px: float = 1.0
    chroma_420: bool = False
    codec: Codec = "none"
    jpeg_quality: int = 90
    block_px: int = 8
    qstep: float = 6.0
    deblock: bool = True
    skip: bool = True
    flicker: float = 0.0

    def __post_init__(self) -> None:
        problems: list[str] = []

        def need(ok: bool, what: str) -> None:
            if not ok:
                problems.append(what)

        need(self.demosaic in get_args(Demosaic), f"demosaic {self.demosaic!r} unknown")
        need(self.codec in get_args(Codec), f"codec {self.codec!r} unknown")
        for name in ("wb_red", "wb_blue"):
            v = getattr(self, name)
            need(math.isfinite(v) and 1.0 <= v <= 8.0, f"{name} {v} must be in [1, 8]")
        need(0.5 <= self.gamma <= 2.0, f"gamma {self.gamma} must be in [0.5, 2]")
        for name in ("contrast", "denoise", "chroma_denoise"):
            v = getattr(self, name)
            need(math.isfinite(v) and 0.0 <= v <= 1.0, f"{name} {v} must be in [0, 1]")
        need(0.0 <= self.sharpen <= 5.0, f"sharpen {self.sharpen} must be in [0, 5]")
        need(
            0.3 <= self.sharpen_radius_px <= 5.0,
            f"sharpen_radius_px {self.sharpen_radius_px} must be in [0.3, 5]",
        )
        need(1 <= self.jpeg_quality <= 100, f"jpeg_quality {self.jpeg_quality} must be 1..100")
        need(self.block_px in (4, 8, 16), f"block_px {self.block_px} must be 4, 8 or 16")
        need(0.5 <= self.qstep <= 64.0, f"qstep {self.qstep} must be in [0.5, 64] codes")
        need(0.0 <= self.flicker <= 0.5, f"flicker {self.flicker} must be in [0, 0.5]")
        if problems:
            raise SimulationError("bad ISP parameters: " + "; ".join(problems))

    @classmethod
    def random(cls, rng: np.random.Generator) -> IspParams:
        """A random phone / Raspberry Pi camera ISP (deterministic by ``rng``):

        mosaic always; demosaic bilinear 20 %, EA 40 %, VNG 40 %; ``wb_red`` U(1.4, 2.4),
        ``wb_blue`` U(1.2, 2.0); ``gamma`` log-U(0.85, 1.15); ``contrast`` U(0, 0.4);
        ``denoise`` U(0.3, 1) (0 with 10 %); ``chroma_denoise`` U(0.5, 1);
        ``sharpen`` U(0.3, 1.5) (0 with 15 %), radius U(0.7, 1.8) px; 4:2:0 with 70 %;
        codec JPEG 45 % (quality U{60..95}), H.264-like 35 % (block 8 or 16, ``qstep``
        log-U(3, 12) codes, deblocking 70 %, skip blocks 60 %), none 20 %;
        ``flicker`` U(0, 0.03).
        """
        u = rng.uniform
        demosaic: Demosaic = ("bilinear", "ea", "vng")[int(rng.choice(3, p=[0.2, 0.4, 0.4]))]
        codec: Codec = ("jpeg", "h264", "none")[int(rng.choice(3, p=[0.45, 0.35, 0.2]))]
        denoise = float(u(0.3, 1.0)) if u() >= 0.1 else 0.0
        sharpen = float(u(0.3, 1.5)) if u() >= 0.15 else 0.0
        return cls(
            mosaic=True,
            demosaic=demosaic,
            wb_red=float(u(1.4, 2.4)),
            wb_blue=float(u(1.2, 2.0)),
            gamma=float(math.exp(u(math.log(0.85), math.log(1.15)))),
            contrast=float(u(0.0, 0.4)),
            denoise=denoise,
            chroma_denoise=float(u(0.5, 1.0)),
            sharpen=sharpen,
            sharpen_radius_px=float(u(0.7, 1.8)),
            chroma_420=bool(u() < 0.7),
            codec=codec,
            jpeg_quality=int(rng.integers(60, 96)),
            block_px=int(rng.choice([8, 16])),
            qstep=float(math.exp(u(math.log(3.0), math.log(12.0)))),
            deblock=bool(u() < 0.7),
            skip=bool(u() < 0.6),
            flicker=float(u(0.0, 0.03)),
        )

    @classmethod
    def typical(cls) -> IspParams:
        """A fixed, middle-of-the-road camera: EA demosaic, moderate denoise and
        sharpening, mild S-curve, 4:2:0, JPEG at quality 85, 1.5 % flicker."""
        return cls(
            mosaic=True,
            demosaic="ea",
            wb_red=1.9,
            wb_blue=1.6,
            contrast=0.2,
            denoise=0.6,
            chroma_denoise=0.8,
            sharpen=0.8,
            sharpen_radius_px=1.2,
            chroma_420=True,
            codec="jpeg",
            jpeg_quality=85,
            flicker=0.015,
        )

    def without_artefacts(self) -> IspParams:
        """The same camera without sharpening, 4:2:0 and compression (what :func:`tone_map`
        matches on a noiseless flat frame)."""
        return dataclasses.replace(self, sharpen=0.0, chroma_420=False, codec="none")

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_json(cls, doc: Any) -> IspParams:
        """Parameters from :meth:`to_json`'s output; unknown or mistyped keys raise
        :class:`SimulationError`."""
        if not isinstance(doc, dict):
            raise SimulationError("ISP parameters must be a JSON object")
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(doc) - known)
        if unknown:
            raise SimulationError(f"unknown ISP parameters: {', '.join(unknown)}")
        try:
            return cls(**doc)
        except TypeError as exc:
            raise SimulationError(f"bad ISP parameters: {exc}") from exc


CAMERA_READOUT_MS = (10.0, 30.0)
"""Rolling-shutter readout range, ms, of the simulated camera bursts that evaluation
(``tools/evaluate.py --set isp``) and training (``make_fused_pairs --camera``) draw per
burst."""


def isp_for_seed(seed: int) -> IspParams:
    """The random camera of a burst seed (:meth:`IspParams.random` with its own stream of
    that seed): ``deblurd simulate --isp random`` and ``tools/evaluate.py --set isp``."""
    return IspParams.random(np.random.default_rng([seed, 11]))


ISP_CHOICES = ("off", "random", "typical")


def isp_by_name(name: str | None, seed: int) -> IspParams | None:
    """The camera of a configuration word: None/``"off"`` → None (the plain sensor);
    ``"random"`` → :func:`isp_for_seed` of ``seed``; ``"typical"`` →
    :meth:`IspParams.typical`. Anything else raises :class:`SimulationError`."""
    if name is None or name == "off":
        return None
    if name == "random":
        return isp_for_seed(seed)
    if name == "typical":
        return IspParams.typical()
    raise SimulationError(f"unknown ISP {name!r} (choose {', '.join(ISP_CHOICES)})")


# -- tone ------------------------------------------------------------------------------


def tone_curve(linear: npt.NDArray[np.floating], isp: IspParams) -> F32:
    """Linear light (any shape) → tone-mapped sRGB values ``float32`` in [0, 1]:
    clip, ``x^gamma``, sRGB encoding, then ``(1 − c)·y + c·y²(3 − 2y)`` (``c`` =
    ``contrast``; monotonic)."""
    x = np.clip(np.asarray(linear, np.float32), 0.0, 1.0)
    if isp.gamma != 1.0:
        x = np.asarray(cv2.pow(x, isp.gamma), np.float32).reshape(x.shape)
    y = np.asarray(cv2.pow(x, 1.0 / 2.4), np.float32).reshape(x.shape)
    y *= np.float32(1.055)
    y -= np.float32(0.055)
    dark = x <= 0.0031308
    if dark.any():
        y[dark] = x[dark] * np.float32(12.92)
    if isp.contrast > 0:
        # y + c·(y²(3 − 2y) − y) = y + c·y·((3 − 2y)·y − 1), in place
        t = y * np.float32(-2.0)
        t += np.float32(3.0)
        t *= y
        t -= np.float32(1.0)
        t *= y
        t *= np.float32(isp.contrast)
        y += t
    np.clip(y, 0.0, 1.0, out=y)
    return y


def tone_map(linear: npt.NDArray[np.floating], isp: IspParams, brightness: float = 1.0) -> U8:
    """Ground truth through the camera's radiometry: linear ``float32 (H, W, 3)`` scaled by
    ``brightness`` (the frame's flicker factor), :func:`tone_curve`, rounded to
    ``uint8``. No noise, denoise, sharpening or compression."""
    x = np.asarray(linear, np.float32)
    if brightness != 1.0:
        x = x * np.float32(brightness)
    return np.round(tone_curve(x, isp) * 255.0).astype(np.uint8)


def _tone_slope(isp: IspParams, level: float) -> float:
    """d(tone curve)/d(linear) at ``level`` (numerical)."""
    h = 1e-3
    pts = tone_curve(np.array([level - h, level + h], np.float32), isp)
    return float(pts[1] - pts[0]) / (2 * h)


def flicker_factors(rng: np.random.Generator, frames: int, rms: float, reference: int = 0) -> F64:
    """Per-frame brightness factors ``float64 (frames,)`` of auto-exposure drift: an AR(1)
    process (correlation 0.7 between consecutive frames) of relative RMS ``rms`` in log
    brightness, normalised so the ``reference`` frame is exactly 1 (its metadata tells the
    truth; the others' brightness wobbles while their metadata stays)."""
    if frames < 1 or not 0 <= reference < frames or not 0 <= rms <= 0.5:
        raise SimulationError(f"bad flicker: {frames} frames, reference {reference}, rms {rms}")
    e = rng.standard_normal(frames)
    x = np.empty(frames)
    x[0] = e[0]
    rho = 0.7
    for i in range(1, frames):
        x[i] = rho * x[i - 1] + math.sqrt(1 - rho * rho) * e[i]
    out: F64 = np.exp(rms * (x - x[reference]))
    return out


# -- sensor side -----------------------------------------------------------------------


def mosaic_rggb(rgb: F32) -> F32:
    """The RGGB mosaic ``float32 (H, W)`` of ``rgb`` ``(H, W, 3)``: R at (even, even),
    G at (even, odd) and (odd, even), B at (odd, odd)."""
    out = np.empty(rgb.shape[:2], np.float32)
    out[0::2, 0::2] = rgb[0::2, 0::2, 0]
    out[0::2, 1::2] = rgb[0::2, 1::2, 1]
    out[1::2, 0::2] = rgb[1::2, 0::2, 1]
    out[1::2, 1::2] = rgb[1::2, 1::2, 2]
    return out


def _site_gains(shape: tuple[int, int], wb_red: float, wb_blue: float) -> F32:
    g = np.ones(shape, np.float32)
    g[0::2, 0::2] = wb_red
    g[1::2, 1::2] = wb_blue
    return g


def demosaic(raw: F32, method: Demosaic = "ea") -> F32:
    """Demosaic an RGGB mosaic ``float32 (H, W)`` in [0, 1] (H, W even) → linear RGB
    ``float32 (H, W, 3)``. Bilinear and EA on 16 bits. OpenCV's VNG takes 8 bits only: it
    runs on the 8-bit sRGB-encoded mosaic, and the quantisation residual (raw minus its
    8-bit value) is demosaiced bilinearly and added back, so no 8-bit banding appears
    and a flat field stays exactly flat."""
    if raw.ndim != 2 or raw.shape[0] % 2 or raw.shape[1] % 2:
        raise SimulationError(f"mosaic must be (H, W) with even sides, got {raw.shape}")
    x = np.clip(raw, 0.0, 1.0)
    if method == "vng":
        q8 = linear_to_srgb(x)
        structure = srgb_to_linear(np.asarray(cv2.cvtColor(q8, _BAYER["vng"]), np.uint8))
        residual = x - srgb_to_linear(q8)  # |residual| < 0.01
        return structure + _demosaic16(residual + np.float32(0.5), "bilinear") - np.float32(0.5)
    return _demosaic16(x, method)


def _demosaic16(x: F32, method: Demosaic) -> F32:
    q = np.round(np.clip(x, 0.0, 1.0) * 65535.0).astype(np.uint16)
    rgb16 = cv2.cvtColor(q, _BAYER[method])
    return np.asarray(rgb16, np.float32) * np.float32(1.0 / 65535.0)


# -- ISP side --------------------------------------------------------------------------


def _ycc(rgb: F32) -> F32:
    return np.asarray(cv2.transform(rgb, _RGB2YCC), np.float32)


def _rgb(ycc: F32) -> F32:
    return np.asarray(cv2.transform(ycc, _YCC2RGB), np.float32)


def _subsample_420(plane: F32) -> F32:
    """2×2 average then bilinear upsampling back to the plane's size."""
    h, w = plane.shape
    small = cv2.resize(plane, ((w + 1) // 2, (h + 1) // 2), interpolation=cv2.INTER_AREA)
    return np.asarray(cv2.resize(small, (w, h), interpolation=cv2.INTER_LINEAR), np.float32)


def isp_denoise(ycc: F32, isp: IspParams, noise_sigma: float) -> F32:
    """ISP spatial denoise of tone-mapped YCbCr ``float32 (H, W, 3)`` (a new array):
    luma bilateral (range σ ``3 · noise_sigma``, spatial σ ``0.7 + 1.3·denoise`` px)
    blended by ``denoise``; chroma Gaussian (σ ``1 + 3·chroma_denoise`` px) blended by
    ``chroma_denoise``. ``noise_sigma``: predicted noise std of the tone-mapped luma at
    mid-grey, [0, 1] units."""
    planes = _denoise_planes(_split(ycc), isp, noise_sigma)
    return np.asarray(cv2.merge(planes), np.float32)


def _split(ycc: F32) -> list[F32]:
    return [np.asarray(p, np.float32) for p in cv2.split(ycc)]


def _blend(a: F32, b: F32, weight: float) -> F32:
    """``a + weight · (b − a)`` (a new array)."""
    return np.asarray(cv2.addWeighted(a, 1.0 - weight, b, weight, 0.0), np.float32)


def _denoise_planes(planes: list[F32], isp: IspParams, noise_sigma: float) -> list[F32]:
    """:func:`isp_denoise` on the Y, Cb, Cr planes (each ``float32 (H, W)``)."""
    y, cb, cr = planes
    if isp.denoise > 0:
        sigma_s = 0.7 + 1.3 * isp.denoise
        d = 2 * math.ceil(1.5 * sigma_s) + 1
        filt = cv2.bilateralFilter(y, d, max(3.0 * noise_sigma, 1e-3), sigma_s)
        y = _blend(y, np.asarray(filt, np.float32), isp.denoise)
    if isp.chroma_denoise > 0:
        sigma = 1.0 + 3.0 * isp.chroma_denoise
        cb, cr = (
            _blend(
                c, np.asarray(cv2.GaussianBlur(c, (0, 0), sigma), np.float32), isp.chroma_denoise
            )
            for c in (cb, cr)
        )
    return [y, cb, cr]


def isp_sharpen(luma: F32, amount: float, radius_px: float, core: float) -> F32:
    """Unsharp mask ``luma + amount · coring(luma − G_σ ∗ luma)`` with σ = ``radius_px``;
    detail below ``core`` (same units as ``luma``) is not boosted."""
    detail = luma - np.asarray(cv2.GaussianBlur(luma, (0, 0), radius_px), np.float32)
    if core > 0:
        detail = np.sign(detail) * np.maximum(np.abs(detail) - np.float32(core), 0.0)
    return (luma + np.float32(amount) * detail).astype(np.float32)


def jpeg_roundtrip(frame: U8, quality: int) -> U8:
    """``frame`` ``uint8 (H, W, 3)`` RGB through OpenCV's JPEG (4:2:0) at ``quality``."""
    ok, buf = cv2.imencode(
        ".jpg", cv2.cvtColor(frame, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, int(quality)]
    )
    if not ok:
        raise SimulationError("JPEG encoding failed")
    dec = cv2.imdecode(buf, cv2.IMREAD_COLOR)
    if dec is None:
        raise SimulationError("JPEG decoding failed")
    return np.asarray(cv2.cvtColor(dec, cv2.COLOR_BGR2RGB), np.uint8)


def _dct_matrix(n: int) -> F32:
    k = np.arange(n)[:, None]
    i = np.arange(n)[None, :]
    m = np.cos(np.pi * (2 * i + 1) * k / (2 * n)) * math.sqrt(2.0 / n)
    m[0] /= math.sqrt(2.0)
    return m.astype(np.float32)


def _padded(plane: F32, b: int) -> F32:
    """``plane`` padded (edge replicated) to multiples of ``b`` px, float32."""
    h, w = plane.shape
    ph, pw = -h % b, -w % b
    if ph or pw:
        return np.asarray(cv2.copyMakeBorder(plane, 0, ph, 0, pw, cv2.BORDER_REPLICATE), np.float32)
    return np.ascontiguousarray(plane, np.float32)


def _code_plane(
    plane: F32, previous: F32 | None, b: int, qstep: float, skip: bool, deblock: bool
) -> F32:
    """Code one plane (8-bit code units): DCT, dead-zone quantisation, inverse, skip
    blocks against ``previous``, deblocking.

    Blocks stay in the plane's layout ``(hb, b, wb, b)``: the separable DCT is two large
    matrix products (one along each axis of every block), not hb·wb small ones."""
    h, w = plane.shape
    x = _padded(plane, b) - np.float32(128.0)  # a new array: ``plane`` stays as it is
    hb, wb = x.shape[0] // b, x.shape[1] // b
    d = _dct_matrix(b)
    # along the block rows: D @ (b, wb·b) for each of the hb block rows; then the columns
    coef = (d @ x.reshape(hb, b, wb * b)).reshape(hb, b, wb, b) @ d.T
    ramp = np.add.outer(np.arange(b), np.arange(b)) / max(2 * b - 2, 1)
    step = (qstep * (1.0 + 0.5 * ramp)).astype(np.float32)[None, :, None, :]  # (u, v)
    level = np.abs(coef)
    level /= step
    level += np.float32(1.0 / 3.0)  # H.264's intra dead zone: |c| < 2/3 step → 0
    np.floor(level, out=level)
    level *= step
    level *= np.sign(coef)
    rec = (d.T @ (level @ d).reshape(hb, b, wb * b)).reshape(hb, b, wb, b)
    rec += np.float32(128.0)
    if skip and previous is not None:
        prev = _padded(previous, b).reshape(hb, b, wb, b)
        cur = _padded(plane, b).reshape(hb, b, wb, b)
        diff = cur - prev
        rms = np.sqrt(np.mean(diff * diff, axis=(1, 3)))
        still = (rms < 0.5 * qstep)[:, None, :, None]
        rec = np.where(still, prev, rec)
    out = np.ascontiguousarray(rec.reshape(hb * b, wb * b)[:h, :w], np.float32)
    if deblock:
        out = _deblock(out, b, 2.0 * qstep)
    return out


def _deblock(plane: F32, b: int, alpha: float) -> F32:
    """Smooth the two pixels either side of each block edge where the step across it is
    under ``alpha`` (a real edge is left alone), as H.264's in-loop filter does."""
    out = plane.copy()
    for axis in (1, 0):
        n = out.shape[axis]
        q0 = np.arange(b, n, b)
        if q0.size == 0:
            continue
        p0 = q0 - 1
        a = np.take(out, p0, axis=axis)
        c = np.take(out, q0, axis=axis)
        diff = c - a
        delta = np.where(np.abs(diff) < alpha, diff * 0.375, 0.0).astype(np.float32)
        idx: list[Any] = [slice(None), slice(None)]
        idx[axis] = p0
        out[tuple(idx)] = a + delta
        idx[axis] = q0
        out[tuple(idx)] = c - delta
        if b >= 8:
            p1, q1 = p0 - 1, np.minimum(q0 + 1, n - 1)
            idx[axis] = p1
            out[tuple(idx)] += delta / 3
            idx[axis] = q1
            out[tuple(idx)] -= delta / 3
    return out


def block_compress(
    frame: U8,
    qstep: float,
    block_px: int = 8,
    *,
    deblock: bool = True,
    previous: U8 | None = None,
    skip: bool = True,
) -> U8:
    """H.264-like block coding of ``frame`` ``uint8 (H, W, 3)`` RGB → ``uint8 (H, W, 3)``.

    4:2:0 YCbCr (8 bits); per ``block_px`` block an orthonormal DCT, quantisation with
    step ``qstep`` codes (×1.25 for chroma, up to ×1.5 at the highest frequencies) and
    H.264's intra dead zone (rounding offset 1/3: coefficients under 2/3 of a step
    vanish); ``deblock``: the in-loop deblocking filter; with ``previous`` (the previous
    decoded frame of the stream) and ``skip``, blocks whose content changed by less than
    ``qstep``/2 RMS are copied from it."""
    ycc = _ycc(frame.astype(np.float32) * np.float32(1.0 / 255.0)) * np.float32(255.0)
    prev = None
    if previous is not None:
        prev = _ycc(previous.astype(np.float32) * np.float32(1.0 / 255.0)) * np.float32(255.0)
    h, w = frame.shape[:2]
    hc, wc = (h + 1) // 2, (w + 1) // 2
    out = np.empty_like(ycc)
    out[..., 0] = _code_plane(
        np.ascontiguousarray(ycc[..., 0]),
        None if prev is None else np.ascontiguousarray(prev[..., 0]),
        block_px,
        qstep,
        skip,
        deblock,
    )
    for ch in (1, 2):
        small = cv2.resize(ycc[..., ch], (wc, hc), interpolation=cv2.INTER_AREA)
        psmall = (
            None
            if prev is None
            else cv2.resize(prev[..., ch], (wc, hc), interpolation=cv2.INTER_AREA)
        )
        coded = _code_plane(
            np.asarray(small, np.float32),
            None if psmall is None else np.asarray(psmall, np.float32),
            block_px,
            1.25 * qstep,
            skip,
            deblock,
        )
        out[..., ch] = cv2.resize(coded, (w, h), interpolation=cv2.INTER_LINEAR)
    rgb = _rgb(out * np.float32(1.0 / 255.0))
    return np.clip(np.round(rgb * 255.0), 0, 255).astype(np.uint8)


# -- the whole camera ------------------------------------------------------------------


def camera_frame(
    radiance: F32,
    isp: IspParams,
    sensor: SensorModel,
    exposure_us: float,
    gain: float,
    rng: np.random.Generator | None,
    *,
    brightness: float = 1.0,
    previous: U8 | None = None,
) -> U8:
    """What a camera hands over: linear blurred radiance ``float32 (H, W, 3)`` →
    ``uint8 (H, W, 3)`` sRGB RGB, through the stages of the module docstring.

    ``sensor``, ``exposure_us``, ``gain``: the sensor noise (``rng`` None: noiseless;
    the ISP's denoise is tuned to the predicted noise either way). ``brightness``: the
    frame's flicker factor (:func:`flicker_factors`). ``previous``: the previous frame of
    the stream as handed over (H.264-like skip blocks). Deterministic by ``rng``."""
    if radiance.ndim != 3 or radiance.shape[2] != 3:
        raise SimulationError(f"radiance must be (H, W, 3), got {radiance.shape}")
    if not (math.isfinite(brightness) and brightness > 0):
        raise SimulationError(f"brightness {brightness} must be positive")
    scene = np.asarray(radiance, np.float32)
    if brightness != 1.0:
        scene = scene * np.float32(brightness)
    h, w = scene.shape[:2]
    if isp.mosaic:
        ph, pw = h % 2, w % 2
        if ph or pw:
            scene = np.asarray(
                cv2.copyMakeBorder(scene, 0, ph, 0, pw, cv2.BORDER_REPLICATE), np.float32
            )
        gains = _site_gains(scene.shape[:2], isp.wb_red, isp.wb_blue)
        raw = sensor.expose_linear(mosaic_rggb(scene) / gains, exposure_us, gain, rng)
        raw *= gains
        linear = demosaic(np.minimum(raw, 1.0), isp.demosaic)[:h, :w]
    else:
        linear = sensor.expose_linear(scene, exposure_us, gain, rng)
    tone = tone_curve(linear, isp)
    if isp.denoise > 0 or isp.chroma_denoise > 0 or isp.sharpen > 0 or isp.chroma_420:
        # Predicted noise of the tone-mapped luma at mid-grey (the ISP's tuning per gain).
        sigma = sensor.noise_std(_MID_GREY, exposure_us, gain) * _tone_slope(isp, _MID_GREY)
        y, cb, cr = _denoise_planes(_split(_ycc(tone)), isp, sigma)
        if isp.sharpen > 0:
            y = isp_sharpen(y, isp.sharpen, isp.sharpen_radius_px, 0.5 * sigma)
        if isp.chroma_420:
            cb, cr = _subsample_420(cb), _subsample_420(cr)
        tone = _rgb(np.asarray(cv2.merge([y, cb, cr]), np.float32))
    frame = np.clip(np.round(tone * 255.0), 0, 255).astype(np.uint8)
    if isp.codec == "jpeg":
        frame = jpeg_roundtrip(frame, isp.jpeg_quality)
    elif isp.codec == "h264":
        frame = block_compress(
            frame, isp.qstep, isp.block_px, deblock=isp.deblock, previous=previous, skip=isp.skip
        )
    return frame
