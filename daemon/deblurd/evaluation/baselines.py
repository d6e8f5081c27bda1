"""Reference methods the pipeline is measured against (evaluation only, never the daemon).

Every baseline takes a :class:`~deblurd.burstdir.Burst` and returns an 8-bit sRGB frame
``uint8 (H, W, 3)`` in the geometry of one frame of the burst, the one whose ground truth
it must be compared with:

* :func:`trigger_frame`: the frame captured at the trigger (``burst.trigger_index``);
* :func:`sharpest_frame`: the candidate frame with the lowest
  :func:`~deblurd.pipeline.blur.blur_score` (:func:`sharpest_index`);
* :func:`aligned_mean`: every ring frame registered to the sharpest with
  :class:`~deblurd.pipeline.registration.OpenCVRegistrar` and averaged in linear light
  (frames whose registration is rejected are left out; nothing else is rejected, so a
  moving subject ghosts);
* :func:`fourier_burst_accumulation`: M. Delbracio and G. Sapiro, "Burst Deblurring:
  Removing Camera Shake Through Fourier Burst Accumulation", CVPR 2015, and "Removing
  Camera Shake via Weighted Fourier Burst Accumulation", IEEE TIP 24(11), 2015 — every
  frame registered to the sharpest, then a weighted average in the Fourier domain
  (:func:`fba_fuse`).

"Candidates" are the ring frames within ``before``/``after`` ring positions of the
trigger, the window the pipeline's first-frame selection looks at (defaults 4 and 4, as
``SelectionSettings``), so the sharpest-frame baseline and the pipeline choose among the
same frames. Registration (:func:`register_stack`) is shared: run it once and pass the
stack to both :func:`aligned_mean` and :func:`fourier_burst_accumulation`.

Fusion happens in linear light (:func:`deblurd.imaging.srgb_to_linear`), where blur and
averaging are physical; frames are first scaled to the reference's exposure × gain, so an
``extra`` frame with a longer exposure at the same gain is brought to the same brightness
(a frame whose exposure × gain equals the reference's is left as it is).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import cv2
import numpy as np
import numpy.typing as npt

from deblurd.burstdir import Burst
from deblurd.errors import ImageError
from deblurd.imaging import F32, U8, Mask, linear_to_srgb, srgb_to_linear, to_gray
from deblurd.pipeline.blur import DEFAULT_SIZE, blur_score
from deblurd.pipeline.registration import OpenCVRegistrar
from deblurd.settings.registration import RegistrationSettings

FBA_P = 11.0
"""Default exponent ``p`` of the Fourier weights (the paper's choice)."""
FBA_SIGMA_DIVISOR = 50.0
"""Default Fourier-domain smoothing: ``sigma = min(H, W) / 50`` frequency bins (the paper's)."""


def candidate_indices(burst: Burst, before: int = 4, after: int = 4) -> list[int]:
    """Ring frames within ``before``/``after`` ring positions of the trigger, in file order.

    The same window as :func:`deblurd.pipeline.process.candidate_indices`.
    """
    ring = burst.indices("ring")
    pos = ring.index(burst.trigger_index)
    return ring[max(0, pos - before) : pos + after + 1]


def sharpest_index(
    burst: Burst, indices: Sequence[int] | None = None, score_size: int = DEFAULT_SIZE
) -> int:
    """Index (into ``burst.frames``) of the frame with the lowest blur score.

    ``indices``: the frames to choose among (default: :func:`candidate_indices`);
    ``score_size``: the blur score's downsample side, px. Ties go to the earliest index.
    """
    pool = list(indices) if indices is not None else candidate_indices(burst)
    if not pool:
        raise ImageError("no frame to choose the sharpest from")
    scores = [blur_score(burst.frames[i], score_size) for i in pool]
    return pool[int(np.argmin(scores))]


def trigger_frame(burst: Burst) -> U8:
    """The frame captured at the trigger, unchanged (geometry: ``burst.trigger_index``)."""
    return burst.frames[burst.trigger_index].copy()


def sharpest_frame(
    burst: Burst, indices: Sequence[int] | None = None, score_size: int = DEFAULT_SIZE
) -> U8:
    """The sharpest candidate frame, unchanged (geometry: :func:`sharpest_index`)."""
    return burst.frames[sharpest_index(burst, indices, score_size)].copy()


@dataclass
class RegisteredStack:
    """Frames of a burst resampled into the reference frame's geometry, linear light.

    ``images[k]``: ``float32 (H, W, 3)`` linear, scaled to the reference's exposure × gain,
    of frame ``indices[k]``; ``valid[k]``: ``bool (H, W)``, where it came from inside that
    frame (outside, the warp replicated the border). The reference is always entry 0, valid
    everywhere. ``rejected``: frame index → why its registration was rejected.
    """

    reference: int
    indices: list[int] = field(default_factory=list)
    images: list[F32] = field(default_factory=list)
    valid: list[Mask] = field(default_factory=list)
    rejected: dict[int, str] = field(default_factory=dict)

    def subset(self, keep: Sequence[int]) -> RegisteredStack:
        """The entries whose frame index is in ``keep`` (the reference always stays)."""
        wanted = set(keep) | {self.reference}
        ks = [k for k, i in enumerate(self.indices) if i in wanted]
        return RegisteredStack(
            self.reference,
            [self.indices[k] for k in ks],
            [self.images[k] for k in ks],
            [self.valid[k] for k in ks],
            {i: r for i, r in self.rejected.items() if i in wanted},
        )


def _exposure(burst: Burst, i: int) -> float:
    info = burst.infos[i]
    return float(info.exposure_us) * float(info.analogue_gain)


def register_stack(
    burst: Burst,
    reference: int,
    indices: Sequence[int] | None = None,
    settings: RegistrationSettings | None = None,
) -> RegisteredStack:
    """Register frames ``indices`` (default: all, ring and extra) to frame ``reference``.

    Uses :class:`OpenCVRegistrar` with ``settings`` (default: ``RegistrationSettings()``);
    registration runs on the sRGB-coded gray (:func:`deblurd.imaging.to_gray`), warping on
    linear light. Rejected frames are recorded in ``rejected`` and left out.
    """
    if not 0 <= reference < len(burst.frames):
        raise ImageError(f"reference {reference} is not a frame of the burst")
    pool = list(range(len(burst.frames))) if indices is None else list(indices)
    registrar = OpenCVRegistrar(settings or RegistrationSettings())
    registrar.set_reference(to_gray(burst.frames[reference]))
    ref_exposure = _exposure(burst, reference)
    h, w = burst.size
    stack = RegisteredStack(reference)
    stack.indices.append(reference)
    stack.images.append(srgb_to_linear(burst.frames[reference]))
    stack.valid.append(np.ones((h, w), np.bool_))
    for i in pool:
        if i == reference:
            continue
        reg = registrar.register(to_gray(burst.frames[i]))
        if not reg.accepted:
            stack.rejected[i] = reg.reason or "rejected"
            continue
        linear = srgb_to_linear(burst.frames[i])
        gain = ref_exposure / _exposure(burst, i)
        if not math.isclose(gain, 1.0, rel_tol=1e-6):
            linear = linear * np.float32(gain)
        warped, valid = registrar.warp(linear, reg)
        stack.indices.append(i)
        stack.images.append(warped)
        stack.valid.append(np.asarray(valid) > 0.5)
    return stack


def _stack_for(
    burst: Burst,
    reference: int | None,
    stack: RegisteredStack | None,
    settings: RegistrationSettings | None,
) -> RegisteredStack:
    if stack is not None:
        if reference is not None and reference != stack.reference:
            raise ImageError(f"stack is registered to frame {stack.reference}, not {reference}")
        return stack
    ref = sharpest_index(burst) if reference is None else reference
    return register_stack(burst, ref, settings=settings)


def mean_of_stack(stack: RegisteredStack) -> F32:
    """Per-pixel mean of the valid samples, ``float32 (H, W, 3)`` linear light."""
    total = np.zeros_like(stack.images[0], dtype=np.float32)
    count = np.zeros(stack.images[0].shape[:2], np.float32)
    for image, valid in zip(stack.images, stack.valid, strict=True):
        v = valid.astype(np.float32)
        total += image * v[..., None]
        count += v
    return (total / np.maximum(count, np.float32(1.0))[..., None]).astype(np.float32)


def aligned_mean(
    burst: Burst,
    reference: int | None = None,
    *,
    stack: RegisteredStack | None = None,
    settings: RegistrationSettings | None = None,
) -> U8:
    """Every ring frame registered to ``reference`` and averaged in linear light.

    ``reference``: default :func:`sharpest_index` (the output is in its geometry).
    ``stack``: a :func:`register_stack` result to reuse (its ``extra`` frames are ignored).
    Frames whose registration is rejected are left out; each pixel averages the frames
    that cover it.
    """
    full = _stack_for(burst, reference, stack, settings)
    ring = full.subset(burst.indices("ring"))
    return linear_to_srgb(mean_of_stack(ring))


def _smooth_periodic(spectrum_mag: F32, sigma: float) -> F32:
    """Gaussian-smooth a (periodic, unshifted) Fourier magnitude ``(H, W)``, σ in bins."""
    if sigma <= 0:
        return spectrum_mag
    r = max(1, math.ceil(3.0 * sigma))
    h, w = spectrum_mag.shape
    py, px = min(r, h - 1), min(r, w - 1)
    padded = cv2.copyMakeBorder(spectrum_mag, py, py, px, px, cv2.BORDER_WRAP)
    blurred = cv2.GaussianBlur(
        padded, (2 * px + 1, 2 * py + 1), sigma, sigmaY=sigma, borderType=cv2.BORDER_REFLECT
    )
    return np.asarray(blurred[py : py + h, px : px + w], np.float32)


def fba_weights(magnitudes: Sequence[F32], p: float = FBA_P) -> npt.NDArray[np.float32]:
    """``w_i = M_i^p / Σ_j M_j^p`` per frequency, ``float32 (N, H, W)``, computed in the
    log domain (``M^11`` overflows float32 for a plain image's spectrum)."""
    logm = np.stack([np.log(np.maximum(m, np.float32(1e-12))) for m in magnitudes])
    logw = np.float32(p) * logm
    logw -= logw.max(axis=0, keepdims=True)
    w = np.exp(logw)
    w /= w.sum(axis=0, keepdims=True)
    out: npt.NDArray[np.float32] = w.astype(np.float32, copy=False)
    return out


def fba_fuse(
    images: Sequence[F32],
    p: float = FBA_P,
    sigma: float | None = None,
    sharpen_amount: float = 0.0,
    sharpen_sigma_px: float = 1.0,
) -> F32:
    """Fourier Burst Accumulation of registered images (Delbracio & Sapiro, 2015).

    ``images``: ``N`` registered ``float32 (H, W, 3)`` (or ``(H, W)``) images. For each
    frame the 2-D FFT ``F_i`` of every channel; the weights are
    ``w_i(ζ) = |F̂_i(ζ)|^p / Σ_j |F̂_j(ζ)|^p``, where ``|F̂_i|`` is the magnitude averaged
    over the colour channels (so all channels share the weights, as in the paper) and
    smoothed by a Gaussian of ``sigma`` frequency bins (default ``min(H, W) / 50``,
    periodic); the result is ``IFFT(Σ_i w_i F_i)`` per channel. ``p = 0`` is the plain
    average, ``p → ∞`` takes each frequency from the frame where it is strongest.

    The paper's optional final Gaussian sharpening is **off by default**:
    ``sharpen_amount > 0`` applies ``u + amount (u − G_σ * u)`` with
    ``σ = sharpen_sigma_px``. Returns ``float32`` of the input shape (unclipped).
    """
    if not images:
        raise ImageError("FBA needs at least one image")
    shape = images[0].shape
    if any(im.shape != shape for im in images):
        raise ImageError("FBA images must all have the same shape")
    h, w = shape[:2]
    s = min(h, w) / FBA_SIGMA_DIVISOR if sigma is None else sigma
    planes = 1 if len(shape) == 2 else shape[2]
    spectra: list[npt.NDArray[np.complex64]] = []
    mags: list[F32] = []
    for im in images:
        x = np.asarray(im, np.float32).reshape(h, w, planes)
        f = np.fft.fft2(x, axes=(0, 1)).astype(np.complex64, copy=False)
        spectra.append(f)
        mags.append(_smooth_periodic(np.abs(f).mean(axis=2).astype(np.float32), s))
    weights = fba_weights(mags, p)
    acc = np.zeros((h, w, planes), np.complex64)
    for f, wi in zip(spectra, weights, strict=True):
        acc += f * wi[..., None]
    fused = np.fft.ifft2(acc, axes=(0, 1)).real.astype(np.float32)
    if sharpen_amount > 0:
        blurred = cv2.GaussianBlur(fused, (0, 0), sharpen_sigma_px).reshape(fused.shape)
        fused = (fused + np.float32(sharpen_amount) * (fused - blurred)).astype(np.float32)
    out: F32 = fused.reshape(shape)
    return out


def fourier_burst_accumulation(
    burst: Burst,
    reference: int | None = None,
    *,
    p: float = FBA_P,
    sigma: float | None = None,
    sharpen_amount: float = 0.0,
    stack: RegisteredStack | None = None,
    settings: RegistrationSettings | None = None,
) -> U8:
    """Fourier Burst Accumulation of the whole burst (ring and extra frames).

    M. Delbracio and G. Sapiro, "Burst Deblurring: Removing Camera Shake Through Fourier
    Burst Accumulation", CVPR 2015 (and IEEE TIP 24(11), 2015). Every frame registered to
    ``reference`` (default :func:`sharpest_index`; the output is in its geometry), then
    :func:`fba_fuse` in linear light with ``p``, ``sigma`` and the optional (off by
    default) final sharpening. Pixels a warped frame does not cover are filled with the
    reference's, so every image entering the FFT is complete.
    """
    st = _stack_for(burst, reference, stack, settings)
    ref_image = st.images[0]
    filled = [
        im if v.all() else np.where(v[..., None], im, ref_image).astype(np.float32)
        for im, v in zip(st.images, st.valid, strict=True)
    ]
    return linear_to_srgb(fba_fuse(filled, p, sigma, sharpen_amount))
