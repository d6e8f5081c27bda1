"""Settings of the camera (``[camera]``): a table tagged by ``backend``, like
``inference.runtime`` by ``type``.

The keys every backend shares (frame size and rate, preview exposure and gain, the ring's
memory budget, the extra capture's limits) are :class:`CameraSectionBase`'s. Each backend
has its own section class, which adds its tag (``backend = "sim"``) and its own table,
named after the tag (``[camera.sim]``): only the chosen backend's table may be in the
config. :data:`CameraSettings` is the union of those classes (pydantic picks one by the
tag), :data:`CAMERA_BACKENDS` the table from tag to class, and
:func:`deblurd.camera.factory.open_camera` a ``match`` on the class.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from typing import Annotated, Final, Literal, get_args

from pydantic import Field, model_validator

from deblurd.settings.base import Section
from deblurd.settings.camera_hw import ArgusSettings, Picamera2Settings


class SimFaultSettings(Section):
    """Faults the simulated camera injects on purpose (for tests of the daemon's handling)."""

    drop_probability: float = Field(
        0.0,
        ge=0.0,
        le=1.0,
        description="probability that a sensor frame is dropped (a gap in frame numbers)",
    )
    stall_at_frame: int | None = Field(
        None, ge=0, description="frame number at which the camera stalls once; unset = never"
    )
    stall_s: float = Field(0.0, ge=0.0, le=3600.0, description="length of that stall, s")
    die_at_frame: int | None = Field(
        None,
        ge=0,
        description="frame number at which the camera dies (stops delivering); unset = never",
    )
    revive_after_s: float | None = Field(
        None,
        gt=0.0,
        le=3600.0,
        description="a dead camera comes back after this long, s; unset = it stays dead",
    )
    ignore_exposure: bool = Field(
        False, description="exposure requests are accepted but never applied"
    )
    timestamp_jump_at_frame: int | None = Field(
        None,
        ge=0,
        description="frame number from which the metadata timestamps step back by "
        "timestamp_jump_s (the sensor clock jumps backwards); unset = never",
    )
    timestamp_jump_s: float = Field(
        1.0, gt=0.0, le=3600.0, description="how far the timestamps step back, s"
    )


class SimCameraSettings(Section):
    """The simulated handheld camera (``deblurd.camera.sim``): the burst simulator, live."""

    seed: int = Field(0, ge=0, description="seed of the scene, the hand shake and the noise")
    shake: float = Field(
        25.0,
        ge=0.0,
        le=1000.0,
        description="RMS angular speed of the hand tremor, deg/s (0 = tripod)",
    )
    subject: bool = Field(False, description="add a face-like subject that moves on its own")
    scene: str | None = Field(
        None, description="image file used as the scene; unset = the procedural scene of seed"
    )
    noise: bool = Field(True, description="sensor noise (false: noiseless frames)")
    isp: Literal["off", "random", "typical"] = Field(
        "off",
        description="camera pipeline after the sensor, as a real camera hands frames over "
        "(deblurd.sim.isp: RGGB mosaic and demosaic, ISP denoise, tone curve, sharpening, "
        "4:2:0, JPEG or H.264-like blocks): off = the plain sensor (white noise, sRGB); "
        "random = a random phone/Pi camera drawn from seed; typical = a fixed mid-range one "
        "(frames cost ~2x more to render)",
    )
    rolling_shutter_ms: float = Field(
        0.0,
        ge=0.0,
        le=100.0,
        description="rolling-shutter readout time from the top row to the bottom one, ms "
        "(0 = global shutter; phone and Pi sensors 10-30)",
    )
    flicker: float | None = Field(
        None,
        ge=0.0,
        le=0.5,
        description="RMS brightness wobble between frames that the metadata does not show "
        "(auto-exposure drift), fraction (0.02 = 2 %); unset = the ISP's own (0 without one)",
    )
    shake_model: Literal["tremor", "walk"] = Field(
        "tremor",
        description="tremor = hand tremor with sway and drift; walk = a real-world random walk "
        "with inertia and jerks (curved, kinked blur paths); both at the RMS speed shake",
    )
    defocus_px: float = Field(
        0.0, ge=0.0, le=24.0, description="radius of a defocus blur disk, px (0 = in focus)"
    )
    realtime: bool = Field(
        False,
        description="true: the sensor clock is the wall clock and sensor frames the renderer "
        "cannot keep up with are skipped (gaps in frame numbers); false: every sensor frame "
        "is rendered and the simulated clock slows down instead (frames always 1/fps apart)",
    )
    truth_frames: int = Field(
        512,
        ge=1,
        le=100_000,
        description="how many recent frames keep what is needed to re-render their ground "
        "truth (a few hundred bytes each), frames",
    )
    faults: SimFaultSettings = Field(default_factory=SimFaultSettings)


class ReplayCameraSettings(Section):
    """Replay of a saved burst directory or a video file (``deblurd.camera.replay``)."""

    path: str | None = Field(
        None, description="burst directory or video file to replay (required for replay)"
    )
    loop: bool = Field(True, description="start over at the end (false: the camera stops)")


class V4l2CameraSettings(Section):
    """A USB (UVC) camera through OpenCV's V4L2 backend (``deblurd.camera.v4l2``)."""

    device: str = Field("/dev/video0", description="device node, /dev/videoN")
    fourcc: str | None = Field(
        None,
        min_length=4,
        max_length=4,
        description="pixel format to ask for (e.g. MJPG for high frame rates); unset = driver's",
    )
    auto_exposure_preview: bool = Field(
        True,
        description="preview with the camera's auto exposure (false: camera.exposure_us and "
        "camera.analogue_gain)",
    )
    exposure_unit_us: float = Field(
        100.0,
        gt=0.0,
        description="µs per unit of the driver's exposure control (uvcvideo: 100)",
    )
    gain_per_unit: float | None = Field(
        None,
        gt=0.0,
        description="analogue gain per unit of the driver's gain control; unset = gain is "
        "left to the driver and reported as camera.analogue_gain",
    )


class CameraSectionBase(Section):
    """The keys of ``[camera]`` that every backend has: the preview (ring) mode, the ring's
    memory and the extra capture's limits. A backend's section class adds its tag and its
    own table."""

    backend: str = Field(
        description="the camera: sim = simulated handheld camera, replay = a saved burst or "
        "video, picamera2 on Raspberry Pi, argus on Jetson, v4l2 for USB (each backend's "
        "section class narrows it to its own tag)"
    )
    width: int = Field(1280, ge=64, le=8192, description="frame width, px")
    height: int = Field(720, ge=64, le=8192, description="frame height, px")
    fps: float = Field(30.0, gt=0.0, le=240.0, description="preview frame rate, frames/s")
    exposure_us: int = Field(8000, ge=50, le=1_000_000, description="preview exposure, µs")
    analogue_gain: float = Field(
        4.0, ge=1.0, le=64.0, description="preview analogue gain, 1 = unity"
    )
    max_gain: float = Field(
        16.0,
        ge=1.0,
        le=64.0,
        description="highest analogue gain the extra capture may ask for, 1 = unity",
    )
    ring_memory_mb: int = Field(
        256,
        ge=8,
        le=65536,
        description="memory for the frame ring, MiB (720p RGB ≈ 2.6 MiB a frame, 1080p ≈ "
        "5.9 MiB): how far back a trigger can reach",
    )
    latency_frames: int = Field(
        4,
        ge=0,
        le=64,
        description="sensor frames between an exposure request and the first frame that has "
        "it (sim camera; hardware backends report what the sensor did in frame metadata)",
    )
    exposure_tolerance: float = Field(
        0.05,
        ge=0.0,
        le=0.5,
        description="a frame counts as having the requested exposure and gain when its "
        "metadata is within this fraction of them",
    )
    exposure_timeout_s: float = Field(
        2.0,
        gt=0.0,
        le=60.0,
        description="longest wait for frames that show a requested exposure, s; then an error",
    )

    @model_validator(mode="after")
    def _check_gain(self) -> CameraSectionBase:
        if self.analogue_gain > self.max_gain:
            raise ValueError(
                f"analogue_gain {self.analogue_gain} is above max_gain {self.max_gain}"
            )
        return self

    @property
    def ring_bytes(self) -> int:
        """The ring's memory budget, bytes."""
        return self.ring_memory_mb * 1024 * 1024


class SimCameraSection(CameraSectionBase):
    """The simulated handheld camera; its keys in ``[camera.sim]``."""

    backend: Literal["sim"] = Field("sim", description="camera backend tag")
    sim: SimCameraSettings = Field(
        default_factory=SimCameraSettings, description="the simulated camera's own keys"
    )


class ReplayCameraSection(CameraSectionBase):
    """A saved burst directory or video file played as a camera; its keys in
    ``[camera.replay]`` (``path`` is required)."""

    backend: Literal["replay"] = Field("replay", description="camera backend tag")
    replay: ReplayCameraSettings = Field(
        default_factory=ReplayCameraSettings, description="the replay camera's own keys"
    )

    @model_validator(mode="after")
    def _check_path(self) -> ReplayCameraSection:
        if self.replay.path is None:
            raise ValueError("backend 'replay' needs replay.path (a burst directory or video)")
        return self


class Picamera2CameraSection(CameraSectionBase):
    """A Raspberry Pi camera through picamera2; its keys in ``[camera.picamera2]``."""

    backend: Literal["picamera2"] = Field("picamera2", description="camera backend tag")
    picamera2: Picamera2Settings = Field(
        default_factory=Picamera2Settings, description="the picamera2 backend's own keys"
    )


class ArgusCameraSection(CameraSectionBase):
    """A Jetson CSI camera through Argus (GStreamer); its keys in ``[camera.argus]``."""

    backend: Literal["argus"] = Field("argus", description="camera backend tag")
    argus: ArgusSettings = Field(
        default_factory=ArgusSettings, description="the Argus backend's own keys"
    )


class V4l2CameraSection(CameraSectionBase):
    """A USB (UVC) camera through OpenCV's V4L2 backend; its keys in ``[camera.v4l2]``."""

    backend: Literal["v4l2"] = Field("v4l2", description="camera backend tag")
    v4l2: V4l2CameraSettings = Field(
        default_factory=V4l2CameraSettings, description="the V4L2 backend's own keys"
    )


CameraSettings = Annotated[
    SimCameraSection
    | ReplayCameraSection
    | Picamera2CameraSection
    | ArgusCameraSection
    | V4l2CameraSection,
    Field(discriminator="backend"),
]
"""The ``[camera]`` section: the section class of the backend its ``backend`` key names."""

CAMERA_BACKENDS: Final[Mapping[str, type[CameraSectionBase]]] = MappingProxyType(
    {
        variant.model_fields["backend"].default: variant
        for variant in get_args(get_args(CameraSettings)[0])
    }
)
"""Backend tag -> section class, in the order of :data:`CameraSettings`."""
