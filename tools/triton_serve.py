"""Serve deblurd's U-Nets from a real Triton Inference Server on a CPU-only machine.

PyTriton (``nvidia-pytriton``) starts Triton's own server binary and binds Python
functions as its models; each function here runs the ONNX network with onnxruntime, under
the model names, inputs, outputs and dims that ``deblurd export-triton`` writes (read from
the same ONNX files by :func:`deblurd.inference.triton_export.read_spec`). The triton tests
and ``tools/bench_fleet.py`` start it; run it from the venv made from Debian's own Python
(``.venv-triton``: PyTriton 0.7's Python-backend stub fails under pyenv's 3.11.7)::

    .venv-triton/bin/python tools/triton_serve.py --grpc-port 8001 --http-port 8000

It prints ``READY grpc=PORT http=PORT`` when every model is loaded (and, with
``--ready-file``, writes that line to the file, atomically), and serves until
SIGTERM/SIGINT. ``--test-models`` adds broken models for the tests: ``deblurd_unet_slow``
(answers after ``--slow-s``), ``deblurd_unet_garbage`` (half-size output),
``deblurd_unet_nan`` (NaN output) and ``deblurd_unet_wrong`` (4-channel image input).
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "daemon"))

from deblurd.inference.triton_export import (  # noqa: E402
    ModelSpec,
    batch_dynamic_onnx,
    read_spec,
)


def free_port() -> int:
    """A TCP port nobody listens on now (the OS's pick)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class ServerProcess:
    """This script as a child process (its own process group: tritonserver and the Python
    backend's stubs go with it), for the tests and the fleet benchmark.

    ``python``: the interpreter of the venv with nvidia-pytriton (Debian's 3.11.2)."""

    def __init__(self, python: str, *args: str, log: Path | None = None) -> None:
        self.python, self.args = python, list(args)
        self.grpc_port, self.http_port, self.metrics_port = free_port(), free_port(), free_port()
        self.log = log
        self.proc: subprocess.Popen[str] | None = None
        self.lines: list[str] = []

    @property
    def grpc_url(self) -> str:
        return f"localhost:{self.grpc_port}"

    @property
    def http_url(self) -> str:
        return f"localhost:{self.http_port}"

    def start(self, timeout_s: float = 180.0) -> float:
        """Start and wait until the child has written its ready file; returns the seconds
        it took.

        Readiness comes through a file, not the output: tritonserver (another process)
        writes its log to the same pipe, and a line of it can be split around ``READY``
        (``successfully loaded 'debluREADY grpc=… pid=…rd_unet'`` was seen in CI)."""
        t0 = time.monotonic()
        ready_dir = tempfile.mkdtemp(prefix="deblurd-triton-ready-")
        ready_file = Path(ready_dir) / "ready"
        cmd = [self.python, "-u", str(Path(__file__).resolve()), *self.args,
               "--grpc-port", str(self.grpc_port), "--http-port", str(self.http_port),
               "--metrics-port", str(self.metrics_port),
               "--ready-file", str(ready_file)]  # fmt: skip
        self.proc = subprocess.Popen(
            cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
            start_new_session=True,
        )  # fmt: skip
        proc = self.proc

        def pump() -> None:
            assert proc.stdout is not None
            sink = self.log.open("a") if self.log else None
            for line in proc.stdout:
                self.lines.append(line)
                if sink:
                    sink.write(line)
                    sink.flush()
            if sink:
                sink.close()

        threading.Thread(target=pump, daemon=True).start()
        try:
            while not ready_file.exists():
                if proc.poll() is not None or time.monotonic() - t0 > timeout_s:
                    self.stop()
                    tail = "".join(self.lines[-30:])
                    raise RuntimeError(f"Triton server did not start ({cmd}):\n{tail}")
                time.sleep(0.2)
        finally:
            shutil.rmtree(ready_dir, ignore_errors=True)
        return time.monotonic() - t0

    def stop(self, sig: int = signal.SIGTERM, timeout_s: float = 30.0) -> None:
        """Signal the whole process group; SIGKILL it after ``timeout_s``."""
        proc, self.proc = self.proc, None
        if proc is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, sig)
        try:
            proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)
        # tritonserver and the stubs are in the group too: wait until none is left
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            try:
                os.killpg(proc.pid, 0)
            except ProcessLookupError:
                return
            time.sleep(0.1)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)


class RepositoryServer(ServerProcess):
    """Triton's own server binary (the one nvidia-pytriton ships, with its Python backend
    only) on a model repository, e.g. ``deblurd export-triton --burst``'s Python-backend
    model: the repository as a real Triton loads it. Run from the venv with PyTriton."""

    def __init__(self, repository: Path, work: Path, log: Path | None = None) -> None:
        super().__init__(sys.executable, log=log)
        self.repository, self.work = repository, work

    def start(self, timeout_s: float = 180.0) -> float:
        import shutil
        import urllib.request

        from pytriton.triton import TRITONSERVER_DIST_DIR
        from pytriton.utils.distribution import get_libs_path, get_stub_path

        t0 = time.monotonic()
        dist = self.work / "tritonserver"
        if not dist.exists():  # what PyTriton does: the binaries, and the stub for this Python
            shutil.copytree(TRITONSERVER_DIST_DIR, dist, ignore=shutil.ignore_patterns(
                "python_backend_stubs", "triton_python_backend_stub"))  # fmt: skip
            version = f"{sys.version_info[0]}.{sys.version_info[1]}"
            shutil.copy(get_stub_path(version),
                        dist / "backends" / "python" / "triton_python_backend_stub")  # fmt: skip
        env = dict(os.environ)
        env["LD_LIBRARY_PATH"] = ":".join(
            p for p in (str(get_libs_path()), env.get("LD_LIBRARY_PATH", "")) if p
        )
        env["PATH"] = f"{Path(sys.executable).parent}:{env['PATH']}"
        cmd = [str(dist / "bin" / "tritonserver"), "--model-repository", str(self.repository),
               "--backend-directory", str(dist / "backends"),
               "--grpc-port", str(self.grpc_port), "--http-port", str(self.http_port),
               "--metrics-port", str(self.metrics_port),
               "--backend-config=python,shm-default-byte-size=33554432"]  # fmt: skip
        sink = self.log.open("a") if self.log else subprocess.DEVNULL
        self.proc = subprocess.Popen(cmd, stdout=sink, stderr=subprocess.STDOUT, env=env,
                                     text=True, start_new_session=True)  # fmt: skip
        url = f"http://127.0.0.1:{self.http_port}/v2/health/ready"
        while True:
            try:
                with urllib.request.urlopen(url, timeout=2) as reply:
                    if reply.status == 200:
                        return time.monotonic() - t0
            except OSError:
                pass
            if self.proc.poll() is not None or time.monotonic() - t0 > timeout_s:
                self.stop()
                raise RuntimeError(f"tritonserver did not get ready on {self.repository} "
                                   f"(log {self.log})")  # fmt: skip
            time.sleep(0.3)


def _session(spec: ModelSpec, threads: int) -> Any:
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    return ort.InferenceSession(
        batch_dynamic_onnx(spec.onnx), sess_options=opts, providers=["CPUExecutionProvider"]
    )


def _bind(triton: Any, spec: ModelSpec, fn: Any, max_batch: int, delay_us: int,
          image_channels: int | None = None) -> None:  # fmt: skip
    from pytriton.decorators import batch
    from pytriton.model_config import DynamicBatcher, ModelConfig, Tensor

    def tensor(name: str, dims: tuple[int, ...]) -> Any:
        shape = dims if max_batch > 0 else (1, *dims)
        return Tensor(name=name, dtype=np.float32, shape=shape)

    inputs = [
        tensor(t.name, (image_channels, *t.dims[1:]) if image_channels and t.dims[0] == 3
               else t.dims)
        for t in spec.inputs
    ]  # fmt: skip
    outputs = [tensor(t.name, t.dims) for t in spec.outputs]
    out_name = spec.outputs[0].name
    if max_batch > 0:
        config = ModelConfig(
            max_batch_size=max_batch,
            batcher=DynamicBatcher(max_queue_delay_microseconds=delay_us),
        )

        @batch  # type: ignore[untyped-decorator]
        def infer(**arrays: np.ndarray) -> dict[str, np.ndarray]:
            return {out_name: fn(arrays)}

        triton.bind(spec.name, infer, inputs, outputs, config=config, strict=True)
    else:
        config = ModelConfig(batching=False)

        def infer_each(requests: list[Any]) -> list[dict[str, np.ndarray]]:
            return [{out_name: fn(dict(r.items()))} for r in requests]

        triton.bind(spec.name, infer_each, inputs, outputs, config=config, strict=True)


def _bind_burst(triton: Any, threads: int) -> None:
    """``deblurd_burst``: :func:`deblurd.service.offload.serve_request` with the
    server's own onnxruntime U-Nets (what export-triton's Python-backend model.py runs)."""
    from pytriton.model_config import ModelConfig, Tensor

    from deblurd.inference.factory import open_deblurrer
    from deblurd.service.offload import INPUTS, OUTPUTS, serve_request
    from deblurd.settings.inference import InferenceSettings, OnnxRuntimeSettings

    deblurrer = open_deblurrer(InferenceSettings(runtime=OnnxRuntimeSettings(threads=threads)))
    dtypes = {"UINT8": np.uint8, "BYTES": bytes}

    def infer_each(requests: list[Any]) -> list[dict[str, Any]]:
        return [serve_request(dict(r.items()), deblurrer) for r in requests]

    triton.bind(
        "deblurd_burst", infer_each,
        [Tensor(name=n, dtype=dtypes[t], shape=d) for n, t, d in INPUTS],
        [Tensor(name=n, dtype=dtypes[t], shape=d) for n, t, d in OUTPUTS],
        config=ModelConfig(batching=False), strict=False,
    )  # fmt: skip


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--grpc-port", type=int, default=8001)
    parser.add_argument("--http-port", type=int, default=8000)
    parser.add_argument("--metrics-port", type=int, default=8002)
    parser.add_argument("--model", default="engines/unet.onnx")
    parser.add_argument("--second-model", default="engines/unet-second.onnx")
    parser.add_argument("--max-batch", type=int, default=8, help="0 = no batching")
    parser.add_argument("--queue-delay-us", type=int, default=2000)
    parser.add_argument("--threads", type=int, default=1, help="onnxruntime threads per model")
    parser.add_argument("--test-models", action="store_true")
    parser.add_argument("--burst", action="store_true",
                        help="also serve deblurd_burst (offload = burst)")  # fmt: skip
    parser.add_argument("--slow-s", type=float, default=3.0)
    parser.add_argument(
        "--ready-file",
        type=Path,
        help="write the READY line to this file (atomically) once serving",
    )
    parser.add_argument("--tls-dir", type=Path, help="gRPC over TLS with server.crt, server.key "
                        "and ca.crt from this folder (HTTP stays plain: Triton has no TLS "
                        "for it)")  # fmt: skip
    parser.add_argument("--tls-mutual", action="store_true",
                        help="also require a client certificate signed by ca.crt")  # fmt: skip
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)

    from pytriton.triton import Triton, TritonConfig

    specs = [read_spec("deblurd_unet", ROOT / args.model if not Path(args.model).is_absolute()
                       else args.model)]  # fmt: skip
    if args.second_model:
        second = Path(args.second_model)
        specs.append(read_spec("deblurd_unet_second", second if second.is_absolute()
                               else ROOT / second))  # fmt: skip
    tls: dict[str, Any] = {}
    if args.tls_dir is not None:
        tls = {
            "grpc_use_ssl": True,
            "grpc_use_ssl_mutual": args.tls_mutual or None,
            "grpc_server_cert": args.tls_dir / "server.crt",
            "grpc_server_key": args.tls_dir / "server.key",
            "grpc_root_cert": args.tls_dir / "ca.crt",
        }
    config = TritonConfig(
        grpc_port=args.grpc_port,
        http_port=args.http_port,
        metrics_port=args.metrics_port,
        log_verbose=0,
        **tls,
    )
    triton = Triton(config=config)

    def network(spec: ModelSpec) -> Any:
        session = _session(spec, args.threads)
        names = [t.name for t in spec.inputs]

        def run(arrays: dict[str, np.ndarray]) -> np.ndarray:
            out: np.ndarray = session.run(None, {n: arrays[n] for n in names})[0]
            return out

        return run

    for spec in specs:
        _bind(triton, spec, network(spec), args.max_batch, args.queue_delay_us)
    if args.burst:
        _bind_burst(triton, args.threads)
    if args.test_models:
        base = specs[0]
        run = network(base)

        def slow(arrays: dict[str, np.ndarray]) -> np.ndarray:
            time.sleep(args.slow_s)
            out: np.ndarray = run(arrays)
            return out

        def garbage(arrays: dict[str, np.ndarray]) -> np.ndarray:
            out: np.ndarray = run(arrays)[:, :, ::2, ::2].copy()
            return out

        def nan(arrays: dict[str, np.ndarray]) -> np.ndarray:
            out: np.ndarray = np.full_like(run(arrays), np.nan)
            return out

        for suffix, fn in (("slow", slow), ("garbage", garbage), ("nan", nan)):
            renamed = ModelSpec(f"{base.name}_{suffix}", base.onnx, base.inputs, base.outputs,
                                base.multiple)  # fmt: skip
            _bind(triton, renamed, fn, args.max_batch, args.queue_delay_us)
        wrong = ModelSpec(f"{base.name}_wrong", base.onnx, base.inputs, base.outputs,
                          base.multiple)  # fmt: skip
        _bind(triton, wrong, run, args.max_batch, args.queue_delay_us, image_channels=4)

    def stop(_sig: int, _frame: Any) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, stop)
    triton.run()  # starts tritonserver, waits until every model is loaded
    line = f"READY grpc={args.grpc_port} http={args.http_port} pid={os.getpid()}"
    print(line, flush=True)
    if args.ready_file is not None:
        tmp = args.ready_file.with_name(args.ready_file.name + ".tmp")
        tmp.write_text(line + "\n")
        os.replace(tmp, args.ready_file)
    try:
        while triton.is_alive():
            time.sleep(0.5)
    except KeyboardInterrupt:
        pass
    finally:
        triton.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
