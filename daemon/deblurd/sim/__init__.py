"""deblurd.sim: the physical handheld-burst simulator.

A scene (procedural or a photo) seen through a camera that shakes like a hand holds it
(:mod:`~deblurd.sim.trajectory`), with an optional moving subject
(:mod:`~deblurd.sim.subject`), integrated over each exposure
(:mod:`~deblurd.sim.render`) and recorded by a noisy sensor (:mod:`~deblurd.sim.sensor`),
optionally through a camera's ISP (:mod:`~deblurd.sim.isp`). Random blur kernels for
training: :mod:`~deblurd.sim.kernels`.
:func:`simulate_burst` makes a burst with its ground truth; :func:`write_simulation` and
:func:`read_truth` store and load it (:mod:`~deblurd.sim.truthdir`).
"""

from deblurd.sim.burst import SimulatedBurst, make_renderer, simulate_burst
from deblurd.sim.isp import IspParams, camera_frame, tone_map
from deblurd.sim.params import DEFAULT_SHAKE_DEG_S, SimParams
from deblurd.sim.render import Exposure, ExposureStats, ShakeRenderer
from deblurd.sim.scene import load_scene, procedural_scene
from deblurd.sim.sensor import SensorModel
from deblurd.sim.trajectory import ShakeTrajectory, WalkTrajectory, homography
from deblurd.sim.truthdir import Truth, read_truth, truth_dir_for, write_simulation

__all__ = [
    "DEFAULT_SHAKE_DEG_S",
    "Exposure",
    "ExposureStats",
    "IspParams",
    "SensorModel",
    "ShakeRenderer",
    "ShakeTrajectory",
    "SimParams",
    "SimulatedBurst",
    "Truth",
    "WalkTrajectory",
    "camera_frame",
    "homography",
    "load_scene",
    "make_renderer",
    "procedural_scene",
    "read_truth",
    "simulate_burst",
    "tone_map",
    "truth_dir_for",
    "write_simulation",
]
