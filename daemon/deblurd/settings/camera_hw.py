"""Settings of the hardware camera backends (picamera2 on Raspberry Pi, Argus on Jetson).

The frame size, frame rate and preview exposure/gain are the common ``[camera]`` keys;
these sections hold only what is particular to each backend. No hardware imports here.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from deblurd.settings.base import Section


class Picamera2Settings(Section):
    """picamera2 (Raspberry Pi): see ``deblurd.camera.picamera2``."""

    camera_num: int = Field(
        0, ge=0, le=16, description="camera index, as in Picamera2(camera_num) (0 = first camera)"
    )
    configuration: Literal["video", "preview"] = Field(
        "video",
        description="which picamera2 configuration template the stream is made from "
        "(create_video_configuration or create_preview_configuration)",
    )
    main_format: Literal["RGB888", "BGR888"] = Field(
        "RGB888",
        description="pixel format of the main stream, in libcamera's naming: RGB888 is B,G,R "
        "bytes in memory (the backend swaps to RGB), BGR888 is R,G,B bytes (no swap needed)",
    )
    buffer_count: int = Field(
        6,
        ge=2,
        le=32,
        description="frame buffers picamera2 allocates, buffers (exposure changes land about "
        "this many frames + 3 later; more buffers = fewer drops when the thread is late)",
    )
    auto_exposure_preview: bool = Field(
        False,
        description="preview with libcamera's auto exposure (false: fixed camera.exposure_us "
        "and camera.analogue_gain, so the ring's frames have a known exposure)",
    )
    sensor_clock: Literal["monotonic", "boottime"] = Field(
        "monotonic",
        description="clock of the SensorTimestamp metadata (the Pi's drivers stamp buffers "
        "with CLOCK_MONOTONIC, as picamera2's own capture_request(flush=...) assumes); "
        "boottime timestamps are shifted onto the monotonic clock",
    )
    sensor_timestamp_is: Literal["readout_start", "exposure_start"] = Field(
        "readout_start",
        description="what SensorTimestamp marks: readout_start (the start-of-frame interrupt, "
        "as picamera2 treats it: start of exposure = SensorTimestamp - ExposureTime) or "
        "exposure_start (used as it is)",
    )
    tuning_file: str | None = Field(
        None,
        description="camera tuning file (name or path) passed to Picamera2(tuning=...); "
        "unset = libcamera's default for the sensor",
    )
    frame_timeout_s: float = Field(
        2.0,
        gt=0.0,
        le=60.0,
        description="no frame for this long = the camera counts as not alive, s",
    )


class ArgusSettings(Section):
    """nvarguscamerasrc through GStreamer (Jetson): see ``deblurd.camera.argus``.

    Exposure and gain are always locked (camera.exposure_us, camera.analogue_gain): Argus
    gives no per-frame exposure metadata through appsink, so a locked pipeline is the only
    way the frames' metadata can tell the truth.
    """

    source: Literal["nvarguscamerasrc", "videotestsrc"] = Field(
        "nvarguscamerasrc",
        description="GStreamer source element: nvarguscamerasrc (a CSI camera through Argus) "
        "or videotestsrc (a synthetic pattern through the same pipeline code; for CI)",
    )
    sensor_id: int = Field(0, ge=0, le=16, description="nvarguscamerasrc sensor-id (camera index)")
    sensor_mode: int = Field(
        -1,
        ge=-1,
        le=64,
        description="nvarguscamerasrc sensor-mode (-1 = Argus picks one for the size and rate)",
    )
    isp_digital_gain: float = Field(
        1.0,
        ge=1.0,
        le=256.0,
        description="ISP digital gain pinned with ispdigitalgainrange, 1 = unity (pinned so "
        "that brightness follows exposure and analogue gain only)",
    )
    min_fps: float = Field(
        2.0,
        gt=0.0,
        le=240.0,
        description="lowest frame rate a long exposure may drop the stream to, frames/s "
        "(exposure is capped by the frame duration: longer requests are clamped to what "
        "this rate allows, and the frame metadata says so)",
    )
    frame_overhead_us: int = Field(
        1000,
        ge=0,
        le=1_000_000,
        description="frame time beyond the exposure the sensor needs (blanking/readout "
        "margin), µs: a frame lasts at least exposure + this",
    )
    timestamp_latency_us: int = Field(
        0,
        ge=0,
        le=1_000_000,
        description="subtracted from every buffer time (after the exposure, for "
        "nvarguscamerasrc, which stamps a frame when it arrives) to estimate the start of "
        "exposure, µs",
    )
    test_pattern: Literal[
        "smpte", "snow", "black", "white", "red", "green", "blue", "checkers-8", "ball"
    ] = Field("smpte", description="videotestsrc pattern (source = videotestsrc only)")
    max_buffers: int = Field(
        2,
        ge=1,
        le=64,
        description="appsink queue length, buffers (older buffers are dropped when full)",
    )
    start_timeout_s: float = Field(
        10.0,
        gt=0.0,
        le=120.0,
        description="longest wait for the pipeline to start playing (at start and at each "
        "exposure-change rebuild), s",
    )
    frame_timeout_s: float = Field(
        2.0,
        gt=0.0,
        le=60.0,
        description="no frame for this long = the camera counts as not alive, s",
    )
