"""The whole config file as one model: one section per stage of the method."""

from __future__ import annotations

from pydantic import Field

from deblurd.settings.base import Section
from deblurd.settings.camera import CameraSettings, SimCameraSection
from deblurd.settings.frames import SecondFrameSettings
from deblurd.settings.fusion import FinishingSettings, FusionSettings
from deblurd.settings.inference import InferenceSettings
from deblurd.settings.limits import LimitsSettings
from deblurd.settings.output import OutputSettings
from deblurd.settings.registration import RegistrationSettings
from deblurd.settings.selection import BlurScoreSettings, DecisionSettings, SelectionSettings
from deblurd.settings.service import ServiceSettings
from deblurd.settings.triggers import TriggerSettings


class DeblurdSettings(Section):
    """Root of ``deblurd.toml``. Every key has a default; an empty file is a valid config."""

    camera: CameraSettings = Field(
        default_factory=SimCameraSection,
        description="Which camera and its preview (ring) mode. `backend` picks the camera: "
        "sim = simulated handheld camera, replay = a saved burst or video, picamera2 on "
        "Raspberry Pi, argus on Jetson, v4l2 for USB; its own keys go in the table of the "
        "same name ([camera.sim], [camera.picamera2], ...), and only the chosen backend's "
        "table may be there.",
    )
    blur_score: BlurScoreSettings = Field(default_factory=BlurScoreSettings)
    selection: SelectionSettings = Field(default_factory=SelectionSettings)
    decision: DecisionSettings = Field(default_factory=DecisionSettings)
    second_frames: SecondFrameSettings = Field(default_factory=SecondFrameSettings)
    registration: RegistrationSettings = Field(default_factory=RegistrationSettings)
    fusion: FusionSettings = Field(default_factory=FusionSettings)
    finishing: FinishingSettings = Field(default_factory=FinishingSettings)
    inference: InferenceSettings = Field(default_factory=InferenceSettings)
    output: OutputSettings = Field(default_factory=OutputSettings)
    service: ServiceSettings = Field(default_factory=ServiceSettings)
    triggers: TriggerSettings = Field(default_factory=TriggerSettings)
    limits: LimitsSettings = Field(default_factory=LimitsSettings)
