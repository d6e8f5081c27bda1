"""``deblurd`` command line (DESIGN §4).

Subcommands: ``run`` (the daemon), ``process`` (the whole method on a saved burst),
``deblur`` (single-frame U-Net), ``simulate`` (write a synthetic burst), ``check-config``
(validate a config), ``keys`` (CURVE keys for tcp:// endpoints), ``export-triton`` (a
Triton model repository of the U-Nets).
Errors of our own print one line naming the file or key and exit non-zero (78 for
config errors); nothing half-written is left behind.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import sys
from collections.abc import Sequence
from pathlib import Path

from deblurd import __version__
from deblurd.errors import ConfigError, DeblurdError, InferenceError
from deblurd.settings.load import EX_CONFIG, load_settings
from deblurd.settings.models import DeblurdSettings

EX_FAILURE = 1


def _check_output_path(out: str) -> Path:
    """Fail before any work when the result image cannot be written there (no partial
    output): its suffix, its folder, a folder in its place, permissions, name length."""
    from deblurd.imaging import check_output_file

    p = check_output_file(out)
    if p.suffix.lower() not in (".png", ".jpg", ".jpeg"):
        raise DeblurdError(f"{p}: output must end in .png, .jpg or .jpeg")
    return p


def run_settings(
    settings: DeblurdSettings,
    camera: str | None = None,
    control: str | None = None,
    results: str | None = None,
    output: str | None = None,
) -> DeblurdSettings:
    """``settings`` with the ``deblurd run`` flags applied (each overrides its config key),
    and the default ``output.directory`` moved to ``$STATE_DIRECTORY/results`` under systemd.
    ``camera`` (``--camera``) switching to another backend drops the configured backend's
    own table (``[camera.sim]``): the chosen backend's gets its defaults."""
    from pydantic import ValidationError

    from deblurd.service.runtime import output_directory
    from deblurd.settings.camera import CAMERA_BACKENDS
    from deblurd.settings.output import OutputSettings

    data = settings.model_dump()
    default_output = str(OutputSettings.model_fields["directory"].default)
    data["output"]["directory"] = output_directory(settings.output.directory, default_output)
    if camera is not None and camera != settings.camera.backend:
        chosen = CAMERA_BACKENDS.get(camera)
        if chosen is None:
            tags = ", ".join(CAMERA_BACKENDS)
            message = f"expected one of {tags}, got {camera!r} (from the command line)"
            raise ConfigError("invalid command-line override", [("camera.backend", message)])
        data["camera"] = {k: v for k, v in data["camera"].items() if k in chosen.model_fields}
    flags = {
        ("camera", "backend"): camera,
        ("service", "control_endpoint"): control,
        ("service", "results_endpoint"): results,
        ("output", "directory"): output,
    }
    for (section, key), value in flags.items():
        if value is not None:
            data[section][key] = value
    try:
        return DeblurdSettings.model_validate(data)
    except ValidationError as exc:
        problems = []
        for err in exc.errors():
            loc = list(err["loc"])
            if loc[:1] == ["camera"] and len(loc) > 1 and loc[1] in CAMERA_BACKENDS:
                del loc[1]  # the backend's tag, which pydantic puts in the location
            message = err["msg"].removeprefix("Value error, ")
            problems.append((".".join(map(str, loc)), f"{message} (from the command line)"))
        raise ConfigError("invalid command-line override", problems) from exc


def _tile_side(text: str) -> int:
    """``build-engine --tile``: a TensorRT profile side, px, checked by the settings field
    it overrides (``inference.runtime.tile``: its bounds and multiple of 16)."""
    from pydantic import ValidationError

    from deblurd.settings.inference import TensorRTSettings

    try:
        tile = int(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"expected a whole number of px, got {text!r}") from exc
    try:
        return TensorRTSettings(tile=tile).tile
    except ValidationError as exc:
        raise argparse.ArgumentTypeError(f"{tile}: {exc.errors()[0]['msg']}") from exc


def _missing_library(exc: BaseException) -> bool:
    """True when ``exc`` was caused by a library that is not installed."""
    cause: BaseException | None = exc
    while cause is not None:
        if isinstance(cause, ImportError):
            return True
        cause = cause.__cause__
    return False


def _check_registration_backend(settings: DeblurdSettings) -> None:
    """``registration.backend = "cuda"`` without a usable GPU is a config error (exit 78);
    ``auto`` falling back to OpenCV is logged."""
    from deblurd.gpu.backend import GpuError
    from deblurd.gpu.factory import resolve_backend

    try:
        kind, note = resolve_backend(settings.registration)
    except GpuError as exc:
        raise ConfigError(str(exc), [("registration.backend", str(exc))]) from exc
    if note:
        logging.getLogger("deblurd").info("registration backend %s: %s", kind, note)


def _trigger_config_error(settings: DeblurdSettings, exc: BaseException) -> ConfigError:
    """A GPIO button that cannot be armed (permission, busy line): exit 78, since a restart
    will not fix it; the message names the device node and the group that owns it."""
    from deblurd.service.triggers.gpio import chip_path, device_group

    message = str(exc)
    if "/dev/" not in message:
        chip = chip_path(settings.triggers.gpio.chip)
        message += f" (device {chip}, group '{device_group(chip)}')"
    return ConfigError(f"triggers.gpio: {message}", [("triggers.gpio", message)])


def _cmd_run(args: argparse.Namespace) -> int:
    from deblurd.camera.base import CameraError
    from deblurd.service.daemon import Daemon
    from deblurd.service.logging import setup_logging
    from deblurd.service.sdnotify import under_systemd
    from deblurd.service.triggers.base import TriggerError

    config = args.config or os.environ.get("DEBLURD_CONFIG") or None
    settings = run_settings(
        load_settings(config), args.camera, args.control, args.results, args.output
    )
    _check_registration_backend(settings)
    setup_logging(journal=under_systemd())
    daemon = Daemon(settings)

    def on_signal(signum: int, _frame: object) -> None:
        signal.signal(signum, signal.SIG_DFL)  # a second one ends the process at once
        daemon.request_stop()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    print(f"deblurd {__version__}: config {config or '(built-in defaults)'}", flush=True)
    print(f"deblurd: control endpoint {daemon.endpoints.control}", flush=True)
    print(f"deblurd: results endpoint {daemon.endpoints.results}", flush=True)
    print(f"deblurd: output folder {daemon.output_directory}", flush=True)

    def on_ready(d: Daemon) -> None:
        print("deblurd: ready", flush=True)

    try:
        return daemon.run(on_ready)
    except CameraError as exc:
        if _missing_library(exc):
            problem = ("camera.backend", f"{settings.camera.backend}: {exc}")
            raise ConfigError(str(exc), [problem]) from exc
        raise
    except TriggerError as exc:
        raise _trigger_config_error(settings, exc) from exc
    except InferenceError as exc:
        # A model file that is missing, unreadable or of the wrong shape, a TensorRT plan
        # for another GPU: the configured U-Net cannot run, and a restart would not change
        # that (exit 78: systemd does not restart). The message names the file and the fix.
        raise ConfigError(str(exc), [("inference", str(exc))]) from exc


def _cmd_process(args: argparse.Namespace) -> int:
    from deblurd.burstdir import read_burst
    from deblurd.gpu.factory import stage4_for
    from deblurd.imaging import atomic_write_files, check_output_file, encode_for_path
    from deblurd.inference.base import runtime_report
    from deblurd.inference.factory import open_deblurrer
    from deblurd.pipeline.process import process_burst
    from deblurd.service.offload import burst_offload

    settings = load_settings(args.config)
    out = _check_output_path(args.output)
    if args.json:
        check_output_file(args.json)
        if Path(args.json).resolve() == out.resolve():
            raise DeblurdError(f"{args.json}: the report would overwrite the image {out}")
    limits = settings.limits
    burst = read_burst(args.burst_dir, limits.max_frame_pixels, limits.max_burst_pixels)
    passes = args.unet or settings.inference.passes
    offload = burst_offload(settings)
    if offload is not None:  # inference.runtime.offload = "burst": all of it on the server
        inference = settings.inference.model_copy(update={"passes": passes})
        remote_settings = settings.model_copy(update={"inference": inference})
        try:
            image, rep = offload.process(burst, remote_settings)
        finally:
            offload.close()
        inference_report: dict[str, object] = {"runtime": offload.name, "notes": [],
                                               "fallback": False}  # fmt: skip
    else:
        deblurrer = None
        if passes != "off":
            deblurrer = open_deblurrer(settings.inference.model_copy(update={"passes": passes}))
        try:
            stage4 = stage4_for(settings.registration)
            result = process_burst(burst, settings, deblurrer, passes, stage4)
            inference_report = runtime_report(deblurrer)
        finally:
            if deblurrer is not None:
                deblurrer.close()
        image, rep = result.image, result.report.to_json()
    files: list[tuple[str | os.PathLike[str], bytes]] = [(out, encode_for_path(out, image))]
    if args.json:
        doc = {
            "burst": str(Path(args.burst_dir)),
            "output": str(out),
            **rep,
            "inference": inference_report,
        }
        files.append((args.json, (json.dumps(doc, indent=2) + "\n").encode()))
    try:  # both or neither
        atomic_write_files(files)
    except OSError as exc:
        raise DeblurdError(f"cannot write {out}: {exc.strerror or exc}") from exc
    print(
        f"{out}: frame {rep['selected']} selected, {len(rep['used'])} fused, "
        f"{len(rep['rejected'])} rejected, {rep['stage_ms'].get('total', 0):.0f} ms"
    )
    return 0


def _cmd_deblur(args: argparse.Namespace) -> int:
    from deblurd.imaging import linear_to_srgb, read_rgb8, srgb_to_linear, write_image
    from deblurd.inference.factory import open_deblurrer

    settings = load_settings(args.config)
    out = _check_output_path(args.output)
    image = read_rgb8(args.image, settings.limits.max_frame_pixels)
    inference = settings.inference.model_copy(update={"passes": "first"})
    deblurrer = open_deblurrer(inference)
    if deblurrer is None:  # pragma: no cover - passes forced to "first"
        raise DeblurdError("no deblurring runtime configured")
    try:
        result = deblurrer.deblur(srgb_to_linear(image), "first")
    finally:
        deblurrer.close()
    write_image(out, linear_to_srgb(result))
    print(f"{out}: deblurred with {deblurrer.name}")
    return 0


def _cmd_simulate(args: argparse.Namespace) -> int:
    from deblurd.sim.cli import simulate_command

    return simulate_command(
        out_dir=args.out_dir,
        seed=args.seed,
        width=args.width,
        height=args.height,
        frames=args.frames,
        extra=args.extra,
        shake=args.shake,
        subject=args.subject,
        scene=args.scene,
        isp=args.isp,
        rolling_shutter_ms=args.rolling_shutter,
        flicker_pct=args.flicker,
        defocus_px=args.defocus,
        shake_model=args.shake_model,
        exposure_ms=args.exposure,
    )


def _cmd_keys(args: argparse.Namespace) -> int:
    from deblurd.service.auth import make_keys

    for path in make_keys(Path(args.directory), args.client):
        print(f"wrote {path}")
    print(f"daemon: service.curve_keys_dir = {str(Path(args.directory).resolve())!r}; clients: "
          "deblurctl --server-key server.key --client-key private/NAME.key_secret")  # fmt: skip
    return 0


def _cmd_build_engine(args: argparse.Namespace) -> int:
    """Build the TensorRT plan for this device from the configured ONNX model."""
    from deblurd.inference.base import resolve_model_path
    from deblurd.inference.tensorrt import build_engine, default_state_dir
    from deblurd.settings.inference import TensorRTSettings, TritonSettings

    settings = load_settings(args.config or os.environ.get("DEBLURD_CONFIG") or None)
    runtime = settings.inference.runtime
    if isinstance(runtime, TensorRTSettings):
        model, tile = runtime.model, runtime.tile
        state_dir = Path(runtime.state_dir) if runtime.state_dir else default_state_dir()
    elif isinstance(runtime, TritonSettings):  # its model is a server's: the local one
        model, tile, state_dir = runtime.local_model, runtime.tile, default_state_dir()
    else:
        model, tile, state_dir = runtime.model, runtime.tile, default_state_dir()
    tile = args.tile or tile
    second = settings.inference.second_model
    # The second pass's network too when it has its own (and runs: passes = "both"); each
    # path resolved as the daemon resolves it, so the plan's key is the one it will ask for.
    models = [model, second] if second and settings.inference.passes == "both" else [model]
    for onnx in models:
        path = resolve_model_path(onnx)
        plan = build_engine(path, state_dir, tile)
        print(f"{plan}: TensorRT plan for {path} (tile {tile} px)")
    return 0


def _cmd_export_triton(args: argparse.Namespace) -> int:
    """Write a Triton model repository of the U-Nets (DESIGN §4)."""
    from deblurd.inference.triton_export import export_repository

    if args.instances < 1:
        raise DeblurdError(f"--instances {args.instances}: at least 1")
    models = [(args.name, args.model)]
    if args.second_model:
        models.append((args.second_name, args.second_model))
    folders = export_repository(
        args.directory,
        models,
        max_batch=args.max_batch,
        queue_delay_us=args.queue_delay_us,
        device=args.device,
        instances=args.instances,
        tensorrt=args.tensorrt,
        burst=args.burst_name if args.burst else None,
    )
    for folder in folders:
        print(f"{folder}: config.pbtxt, 1/" + ("model.py" if (folder / "1" / "model.py").exists()
                                               else "model.onnx"))  # fmt: skip
    print(f"serve: tritonserver --model-repository {Path(args.directory).resolve()} "
          "(docs/guides/triton-server.md)")  # fmt: skip
    return 0


def _cmd_check_config(args: argparse.Namespace) -> int:
    from deblurd.settings.load import check_config

    return check_config(args.path)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="deblurd", description="Burst deblurring: turn a shutter press into a sharp photo."
    )
    parser.add_argument("--version", action="version", version=f"deblurd {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("run", help="run the daemon (camera, triggers, ZeroMQ, results)")
    p.add_argument(
        "--config", metavar="PATH", help="config file (default: $DEBLURD_CONFIG, else built-in)"
    )
    p.add_argument(
        "--camera",
        metavar="BACKEND",
        help="camera backend, overrides camera.backend (sim, replay, picamera2, argus, v4l2)",
    )
    p.add_argument("--control", metavar="ENDPOINT", help="control socket endpoint")
    p.add_argument("--results", metavar="ENDPOINT", help="results PUB socket endpoint")
    p.add_argument("--output", metavar="DIR", help="folder for result files")
    p.set_defaults(func=_cmd_run)

    p = sub.add_parser("process", help="run the whole method on a saved burst directory")
    p.add_argument("burst_dir", metavar="BURST_DIR")
    p.add_argument("-o", "--output", required=True, metavar="OUT.png")
    p.add_argument("--json", metavar="REPORT.json", help="write the per-stage report here")
    p.add_argument("--config", metavar="PATH", help="config file (default: built-in defaults)")
    p.add_argument(
        "--unet", choices=["off", "first", "both"], help="U-Net passes (default: the config's)"
    )
    p.set_defaults(func=_cmd_process)

    p = sub.add_parser("deblur", help="single-frame deblur of one image with the U-Net")
    p.add_argument("image", metavar="IMAGE")
    p.add_argument("-o", "--output", required=True, metavar="OUT.png")
    p.add_argument("--config", metavar="PATH")
    p.set_defaults(func=_cmd_deblur)

    p = sub.add_parser("simulate", help="write a synthetic handheld burst (and its ground truth)")
    p.add_argument("out_dir", metavar="OUT_DIR")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--width", type=int, default=1280)
    p.add_argument("--height", type=int, default=720)
    p.add_argument("--frames", type=int, default=9, help="ring frames around the trigger")
    p.add_argument("--extra", type=int, default=0, help="extra long-exposure frames after")
    p.add_argument(
        "--shake",
        type=float,
        default=1.0,
        help="hand-shake level (1 = typical: 25 deg/s RMS angular speed)",
    )
    p.add_argument("--subject", action="store_true", help="add a subject moving on its own")
    p.add_argument("--scene", metavar="IMAGE", help="photo to use as the scene")
    p.add_argument(
        "--isp",
        nargs="?",
        const="random",
        choices=["off", "random", "typical"],
        help="frames through a camera ISP (mosaic, denoise, sharpening, 4:2:0, JPEG/H.264): "
        "random (the seed's camera; --isp alone) or typical",
    )
    p.add_argument(
        "--rolling-shutter",
        type=float,
        default=0.0,
        metavar="MS",
        help="rolling-shutter readout, top row to bottom, ms (real sensors 10-30)",
    )
    p.add_argument(
        "--flicker",
        type=float,
        default=None,
        metavar="PCT",
        help="RMS brightness wobble between frames, %% (default: the ISP's)",
    )
    p.add_argument(
        "--defocus", type=float, default=0.0, metavar="PX", help="defocus disk radius, px"
    )
    p.add_argument(
        "--shake-model",
        choices=["tremor", "walk"],
        default="tremor",
        help="tremor (hand tremor) or walk (real-world random walk with jerks)",
    )
    p.add_argument(
        "--exposure",
        type=float,
        default=None,
        metavar="MS",
        help="ring exposure, ms (default 8; the gain drops to keep brightness)",
    )
    p.set_defaults(func=_cmd_simulate)

    p = sub.add_parser("keys", help="make CURVE keys for tcp:// endpoints (server, clients)")
    p.add_argument("directory", metavar="DIR", help="key folder (service.curve_keys_dir)")
    p.add_argument("--client", action="append", default=[], metavar="NAME",
                   help="also make a client key pair (repeatable)")  # fmt: skip
    p.set_defaults(func=_cmd_keys)

    p = sub.add_parser("build-engine", help="build the TensorRT plan for this device (Jetson)")
    p.add_argument("--config", metavar="PATH", help="config file (default: $DEBLURD_CONFIG)")
    p.add_argument(
        "--tile", type=_tile_side, help="profile/tile side, px, multiple of 16 (default: config's)"
    )
    p.set_defaults(func=_cmd_build_engine)

    p = sub.add_parser(
        "export-triton", help="write a Triton Inference Server model repository of the U-Nets"
    )
    p.add_argument("directory", metavar="DIR", help="the model repository (tritonserver "
                   "--model-repository DIR); model folders in it are replaced")  # fmt: skip
    p.add_argument("--model", default="engines/unet.onnx", metavar="ONNX",
                   help="first-pass network (default: %(default)s)")  # fmt: skip
    p.add_argument("--second-model", default="engines/unet-second.onnx", metavar="ONNX",
                   help="second-pass network; '' = none (default: %(default)s)")  # fmt: skip
    p.add_argument("--name", default="deblurd_unet",
                   help="Triton name of the first (inference.runtime.model)")  # fmt: skip
    p.add_argument("--second-name", default="deblurd_unet_second",
                   help="Triton name of the second (inference.runtime.second_model)")  # fmt: skip
    p.add_argument("--max-batch", type=int, default=8, metavar="N",
                   help="max_batch_size, dynamic batching; 0 = none (default 8)")  # fmt: skip
    p.add_argument("--queue-delay-us", type=int, default=2000, metavar="US",
                   help="dynamic batching's max queue delay, µs (default 2000)")  # fmt: skip
    p.add_argument("--device", choices=("gpu", "cpu", "both"), default="gpu",
                   help="instance groups: KIND_GPU, KIND_CPU or both (default gpu)")  # fmt: skip
    p.add_argument("--instances", type=int, default=1, metavar="N",
                   help="instances per group (default 1)")  # fmt: skip
    p.add_argument("--tensorrt", choices=("off", "fp32", "fp16"), default="off",
                   help="ONNX Runtime backend's TensorRT accelerator (GPU servers)")  # fmt: skip
    p.add_argument("--burst", action="store_true", help="also the whole method as a Python-"
                   "backend model (offload = burst; needs deblurd on the server)")  # fmt: skip
    p.add_argument("--burst-name", default="deblurd_burst",
                   help="its Triton name (inference.runtime.burst_model)")  # fmt: skip
    p.set_defaults(func=_cmd_export_triton)

    p = sub.add_parser("check-config", help="validate a config file (exit 78 on error)")
    p.add_argument("path", metavar="PATH")
    p.set_defaults(func=_cmd_check_config)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """``deblurd``: the exit status (a closed stdout or stderr ends it quietly)."""
    from deblurd.console import run_main

    return run_main(_main, argv)


def _main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        code: int = args.func(args)
    except ConfigError as exc:
        for key, message in exc.problems or [("", str(exc))]:
            print(f"deblurd: config error: {key + ': ' if key else ''}{message}", file=sys.stderr)
        return EX_CONFIG
    except DeblurdError as exc:
        print(f"deblurd: error: {exc}", file=sys.stderr)
        return EX_FAILURE
    except KeyboardInterrupt:
        return 130
    return code


if __name__ == "__main__":
    sys.exit(main())
