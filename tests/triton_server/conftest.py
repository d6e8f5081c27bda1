"""The ``triton`` tests: deblurd's client against a real Triton Inference Server.

The server is PyTriton's (``nvidia-pytriton``: Triton's own server binary, CPU only)
serving our ONNX networks through onnxruntime under the names, inputs and outputs that
``deblurd export-triton`` writes (``tools/triton_serve.py``). They run from the venv made
from Debian's own ``python3`` (``.venv-triton``; pyenv's 3.11.7 breaks PyTriton's stub) in
``tools/test.sh``'s ``== triton`` section, which sets ``TRITON_TESTS_REQUIRED=1``: there a
missing package is a failure, not a skip. Elsewhere (the main venv) they skip.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tools"))

REQUIRED = os.environ.get("TRITON_TESTS_REQUIRED") == "1"


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    here = Path(__file__).parent
    for item in items:
        if here in Path(str(item.fspath)).parents:
            item.add_marker(pytest.mark.triton)


def _need(module: str) -> None:
    try:
        __import__(module)
    except ImportError as exc:
        if REQUIRED:
            raise RuntimeError(f"the triton tests need {module}: {exc}") from exc
        pytest.skip(f"{module} not installed (the triton tests run from .venv-triton: "
                    "tools/test.sh)")  # fmt: skip


@pytest.fixture(autouse=True)
def _triton_packages() -> None:
    """Every test here needs the client and PyTriton: skipped without them, failed in the
    ``== triton`` section (``TRITON_TESTS_REQUIRED=1``)."""
    for module in ("tritonclient.grpc", "tritonclient.http", "pytriton"):
        _need(module)


@pytest.fixture(scope="session")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """One server for the session: both U-Nets and the broken test models, batching on."""
    for module in ("tritonclient.grpc", "tritonclient.http", "pytriton"):
        _need(module)
    from triton_serve import ServerProcess

    log = tmp_path_factory.mktemp("triton") / "server.log"
    proc = ServerProcess(sys.executable, "--test-models", "--slow-s", "3", "--burst", log=log)
    took = proc.start()
    print(f"Triton server ready in {took:.1f} s (log {log})")
    yield proc
    proc.stop()
