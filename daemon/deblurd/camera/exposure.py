"""Exposure switching for the extra capture (DESIGN §1 stage 3, §5).

Ask the sensor for a longer exposure (and the gain that keeps the preview's brightness),
wait for frames whose **metadata** show it (never assume: the change lands several frames
later, and a sensor may refuse it), copy the extra frames, and go back to the preview
settings — always, also on failure. Listeners hear ``hold_still`` before the switch and
``done`` after (with ``ok`` false on failure, so a "hold still" indicator never sticks).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from typing import Any

from deblurd.camera.base import CameraBackend, CameraError, FrameMeta
from deblurd.camera.ring import Frame, FrameRing
from deblurd.pipeline.decision import exposure_gain
from deblurd.settings.camera import CameraSettings

log = logging.getLogger(__name__)

EventCallback = Callable[[str, dict[str, Any]], None]
_GAP_S = 0.0005  # blanking beyond a long exposure when it sets the frame period


def extra_gain(settings: CameraSettings, exposure_us: int) -> float:
    """The analogue gain for ``exposure_us`` (µs) that keeps the preview's brightness
    (``camera.exposure_us × camera.analogue_gain``), within ``[1, camera.max_gain]``."""
    return exposure_gain(
        settings.exposure_us, settings.analogue_gain, exposure_us, settings.max_gain
    )


def matches(meta: FrameMeta, exposure_us: int, analogue_gain: float, tolerance: float) -> bool:
    """True when a frame's metadata show ``exposure_us`` and ``analogue_gain`` within the
    relative ``tolerance`` (sensors quantise exposure to line times and gain to steps)."""
    return math.isclose(meta.exposure_us, exposure_us, rel_tol=tolerance) and math.isclose(
        meta.analogue_gain, analogue_gain, rel_tol=tolerance
    )


def capture_extra(
    camera: CameraBackend,
    ring: FrameRing,
    exposure_us: int,
    gain: float,
    frames: int,
    timeout_s: float,
    on_event: EventCallback,
    tolerance: float = 0.05,
) -> list[Frame]:
    """Capture ``frames`` extra frames at ``exposure_us`` (µs) and ``gain``, oldest first,
    each ``(uint8 (H, W, 3) copy, FrameMeta)`` whose metadata show those settings.

    Publishes ``on_event("hold_still", {exposure_us, analogue_gain, frames})`` before the
    request and ``on_event("done", {ok, frames, [error]})`` after the preview settings are
    restored. Raises :class:`CameraError` when no frame shows the exposure within
    ``timeout_s`` (s) — "exposure 33000 µs never applied within 2.0 s" — or when the
    camera stops delivering before all frames arrive; the preview is restored anyway.
    """
    if frames < 1 or exposure_us <= 0 or gain <= 0:
        raise ValueError(f"bad extra capture: {frames} frames at {exposure_us} µs, gain {gain}")
    on_event("hold_still", {"exposure_us": exposure_us, "analogue_gain": gain, "frames": frames})
    got: list[Frame] = []
    error: str | None = None
    try:
        newest = ring.newest_meta()
        start_after = newest.frame_number if newest is not None else None
        camera.request_exposure(exposure_us, gain)

        def wanted(meta: FrameMeta) -> bool:
            return matches(meta, exposure_us, gain, tolerance)

        try:
            got = ring.wait_for(wanted, 1, timeout_s, start_after_frame=start_after)
        except CameraError as exc:
            latest = ring.newest_meta()
            if latest is None or (start_after is not None and latest.frame_number <= start_after):
                raise CameraError(
                    f"no frame from the camera within {timeout_s:.1f} s of the exposure "
                    f"request ({exposure_us} µs): camera stalled or dead"
                ) from exc
            raise CameraError(
                f"exposure {exposure_us} µs never applied within {timeout_s:.1f} s "
                f"(frames kept arriving at {latest.exposure_us} µs)"
            ) from exc
        if frames > 1:
            # The rest come at the long exposure's frame rate; allow it twice over.
            period_s = max(1.0 / camera.fps, exposure_us * 1e-6 + _GAP_S)
            more_s = timeout_s + 2.0 * (frames - 1) * period_s
            try:
                got += ring.wait_for(
                    wanted, frames - 1, more_s, start_after_frame=got[0][1].frame_number
                )
            except CameraError as exc:
                raise CameraError(
                    f"extra capture at {exposure_us} µs: {exc} (camera stopped delivering?)"
                ) from exc
        return got
    except CameraError as exc:
        error = str(exc)
        raise
    finally:
        try:
            camera.restore_preview()
        except CameraError as exc:  # report, but the capture's own outcome comes first
            log.error("could not restore the preview exposure: %s", exc)
            error = error or f"could not restore the preview exposure: {exc}"
        done: dict[str, Any] = {"ok": error is None, "frames": len(got)}
        if error is not None:
            done["error"] = error
        on_event("done", done)
