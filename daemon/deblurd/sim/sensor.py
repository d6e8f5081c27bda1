"""The sensor: Poisson–Gaussian noise, analogue gain, clipping, sRGB encoding, 8 bits.

Model, per pixel and colour channel (no demosaicing, no black level, global shutter):

* **Radiance** ``L`` (linear scene value, [0, 1]) is relative to the level that the
  auto-exposure maps to white: an exposure ``t`` at gain ``g`` with ``t·g = ref_exposure_us``
  renders ``L`` at the output value ``L``. Brightness is kept by the gain: the preview
  runs at ``t·g ≈ ref_exposure_us`` (8 ms × 4 = 32 ms by default), and a longer exposure
  gets a proportionally lower gain (:meth:`SensorModel.gain_for`).
* **Photo-electrons**: ``λ = L · full_well_e · t / ref_exposure_us``; the count is
  ``Poisson(λ)`` (shot noise). At unity gain, ``L = 1`` with ``t = ref_exposure_us``
  fills the well.
* **Read noise**: Gaussian, ``read_noise_e`` electrons RMS, added to the count.
* **Analogue gain** then scales electrons to output: ``v = g · (n + r) / full_well_e``.

So at constant brightness (``t·g`` fixed), the signal-to-noise ratio is that of ``λ``
electrons, and ``λ ∝ t``: **a shorter exposure at a higher gain is noisier** — the
standard deviation of ``v`` is ``g · sqrt(λ + σr²) / full_well_e``, i.e. it grows as
``1/sqrt(t)`` while shot noise dominates. Then ``v`` is clipped to [0, 1], sRGB-encoded
and rounded to 8 bits.

Defaults (a small phone/Pi-camera pixel, binned preview): full well 6000 e⁻, read noise
2.5 e⁻. The preview at 8 ms × gain 4 collects 1500 e⁻ at white and 270 e⁻ at mid-grey
(SNR ≈ 16): noise std ≈ 3.4 sRGB codes at mid-grey, ≈ 10 codes in deep shadows (≈ 5
codes over a typical scene) — clearly visible, not absurd. The 32 ms × gain 1 exposure
collects 4× as many electrons (half the noise).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from deblurd.errors import SimulationError
from deblurd.imaging import F32, U8, linear_to_srgb

POISSON_EXACT_BELOW_E = 30.0


@dataclass(frozen=True)
class SensorModel:
    """Sensor noise and gain model (see module docstring).

    ``full_well_e``: electrons at the white level at unity gain. ``read_noise_e``: read
    noise, electrons RMS. ``ref_exposure_us``: the exposure × gain product (µs) that
    maps radiance 1.0 to white. ``min_gain``/``max_gain``: the sensor's analogue gain range.
    """

    full_well_e: float = 6000.0
    read_noise_e: float = 2.5
    ref_exposure_us: float = 32000.0
    min_gain: float = 1.0
    max_gain: float = 16.0

    def __post_init__(self) -> None:
        if not (self.full_well_e > 0 and self.read_noise_e >= 0 and self.ref_exposure_us > 0):
            raise SimulationError(
                f"bad sensor model: full well {self.full_well_e} e-, read noise "
                f"{self.read_noise_e} e-, reference exposure {self.ref_exposure_us} µs"
            )
        if not 0 < self.min_gain <= self.max_gain:
            raise SimulationError(f"bad gain range {self.min_gain}..{self.max_gain}")

    def gain_for(self, exposure_us: float) -> float:
        """The analogue gain that keeps brightness at ``exposure_us`` (clamped to the range:
        an exposure too long for ``min_gain`` renders brighter, as a real sensor would)."""
        if exposure_us <= 0:
            raise SimulationError(f"exposure must be positive, got {exposure_us} µs")
        return float(min(max(self.ref_exposure_us / exposure_us, self.min_gain), self.max_gain))

    def electrons_at_white(self, exposure_us: float) -> float:
        """Mean photo-electrons at radiance 1.0 for ``exposure_us``."""
        return self.full_well_e * exposure_us / self.ref_exposure_us

    def noise_std(self, level: float, exposure_us: float, gain: float) -> float:
        """Predicted standard deviation of the linear output at radiance ``level`` (before
        clipping and quantisation)."""
        lam = level * self.electrons_at_white(exposure_us)
        return gain * math.sqrt(lam + self.read_noise_e**2) / self.full_well_e

    def expose_linear(
        self,
        radiance: npt.NDArray[np.float32],
        exposure_us: float,
        gain: float,
        rng: np.random.Generator | None,
        *,
        approximate: bool = False,
    ) -> F32:
        """Linear output ``float32`` (same shape as ``radiance``), clipped to [0, 1].

        ``rng`` None: noiseless (``v = g·t·L / ref_exposure_us``). Shot noise is drawn exactly
        (Poisson) where ``λ`` < ``POISSON_EXACT_BELOW_E`` and as its Gaussian limit (variance
        ``λ``) above, where the two are indistinguishable after 8-bit quantisation;
        ``approximate``: Gaussian everywhere (faster, slightly off in deep shadows).
        """
        if exposure_us <= 0 or gain <= 0:
            raise SimulationError(f"exposure {exposure_us} µs and gain {gain} must be positive")
        radiance = np.maximum(radiance, 0.0, dtype=np.float32)
        if rng is None:
            level = gain * exposure_us / self.ref_exposure_us  # exactly 1.0 at t·g = ref
            out = radiance if level == 1.0 else radiance * np.float32(level)
            return np.clip(out, 0.0, 1.0).astype(np.float32, copy=False)
        lam = radiance * np.float32(self.electrons_at_white(exposure_us))
        to_out = np.float32(gain / self.full_well_e)
        # Shot + read noise as a Gaussian of variance λ + σr² (the Poisson's limit), then
        # exact Poisson counts where λ is small enough for the difference to matter.
        z = rng.standard_normal(lam.shape, dtype=np.float32)
        electrons = lam + np.float32(self.read_noise_e**2)
        np.sqrt(electrons, out=electrons)
        electrons *= z
        electrons += lam
        if not approximate:
            small = lam < np.float32(POISSON_EXACT_BELOW_E)
            if small.any():
                counts = rng.poisson(lam[small]).astype(np.float32)
                electrons[small] = counts + np.float32(self.read_noise_e) * z[small]
        electrons *= to_out
        return np.clip(electrons, 0.0, 1.0, out=electrons)

    def expose(
        self,
        radiance: npt.NDArray[np.float32],
        exposure_us: float,
        gain: float,
        rng: np.random.Generator | None,
        *,
        approximate: bool = False,
    ) -> U8:
        """An 8-bit sRGB frame ``uint8`` (shape of ``radiance``) of the radiance
        ``float32 (H, W, 3)`` after noise, gain, clipping, sRGB encoding and rounding."""
        return linear_to_srgb(
            self.expose_linear(radiance, exposure_us, gain, rng, approximate=approximate)
        )
