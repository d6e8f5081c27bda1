"""GStreamer helpers for the camera backends: lazy PyGObject import, element checks,
pipeline-string quoting, and reading an appsink sample into a numpy view.

PyGObject (``gi``) and GStreamer are imported only when a backend asks for them, so this
module imports anywhere. On Debian/Ubuntu: ``tools/ci_system_deps.sh`` (GStreamer, typelibs,
build deps) then ``pip install "PyGObject<3.51"``; on a Jetson, JetPack ships both.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np
import numpy.typing as npt

from deblurd.camera.base import CameraError

_INSTALL_HINT = (
    "install GStreamer and PyGObject: tools/ci_system_deps.sh (Debian/Ubuntu: "
    "gstreamer1.0-tools gstreamer1.0-plugins-base gir1.2-gstreamer-1.0 "
    "gir1.2-gst-plugins-base-1.0 libgirepository1.0-dev libcairo2-dev), then "
    'pip install "PyGObject<3.51" in the venv (on a Jetson: a venv with '
    "--system-site-packages sees JetPack's python3-gi)"
)

_lock = threading.Lock()
_gst: Any = None


def import_gst() -> Any:
    """Import and initialise GStreamer through PyGObject; return the ``Gst`` module.

    Raises :class:`CameraError` naming what is missing. Safe to call from any thread;
    ``Gst.init`` runs once.
    """
    global _gst
    with _lock:
        if _gst is not None:
            return _gst
        try:
            import gi

            gi.require_version("Gst", "1.0")
            from gi.repository import Gst
        except Exception as exc:
            # ImportError (no gi), ValueError (gi without the Gst typelib,
            # gir1.2-gstreamer-1.0), or whatever a broken installation raises
            raise CameraError(
                f"GStreamer is not available from Python ({exc}); {_INSTALL_HINT}"
            ) from exc
        try:
            Gst.init(None)
        except Exception as exc:  # GLib.Error from a broken installation
            raise CameraError(f"GStreamer failed to initialise: {exc}") from exc
        _gst = Gst
        return Gst


def gst_unavailable_reason() -> str | None:
    """``None`` when GStreamer can be used from Python here, else why not (for skips)."""
    try:
        import_gst()
    except CameraError as exc:
        return str(exc)
    return None


def have_element(name: str) -> bool:
    """True when the GStreamer element factory ``name`` is installed."""
    Gst = import_gst()
    return Gst.ElementFactory.find(name) is not None


def require_elements(names: list[str], hint: str) -> None:
    """Raise :class:`CameraError` naming the first missing element, with ``hint``."""
    Gst = import_gst()
    missing = [n for n in names if Gst.ElementFactory.find(n) is None]
    if missing:
        raise CameraError(f"GStreamer element(s) {', '.join(missing)} not found: {hint}")


def quote(value: str) -> str:
    """A property value for ``gst-launch`` syntax: double-quoted when it has spaces."""
    if any(c in value for c in ' \t"!'):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    return value


@contextmanager
def mapped_rgb(sample: Any, Gst: Any) -> Iterator[npt.NDArray[np.uint8]]:
    """A read-only ``uint8 (H, W, 3)`` view of an appsink sample in ``format=RGB``.

    GStreamer pads RGB rows to 4 bytes; the view skips the padding (row stride from the
    buffer size). Valid only inside the ``with`` block (the buffer is unmapped after).
    Raises :class:`CameraError` for a sample that is not RGB or cannot be mapped.
    """
    caps = sample.get_caps()
    s = caps.get_structure(0)
    fmt = s.get_value("format")
    width = int(s.get_value("width"))
    height = int(s.get_value("height"))
    if fmt != "RGB":
        raise CameraError(f"appsink delivered {fmt} frames, expected RGB")
    buf = sample.get_buffer()
    ok, info = buf.map(Gst.MapFlags.READ)
    if not ok:
        raise CameraError("could not map a GStreamer buffer for reading")
    try:
        data = info.data  # bytes (a copy made by PyGObject) or a memoryview
        # GStreamer's default RGB stride is the row rounded up to 4 bytes; accept a
        # tightly packed buffer too.
        stride = (width * 3 + 3) & ~3
        if len(data) < stride * height:
            stride = width * 3
        if len(data) < stride * height:
            raise CameraError(f"buffer of {len(data)} bytes is too small for {width}x{height} RGB")
        rows = np.frombuffer(data, dtype=np.uint8, count=stride * height).reshape(height, stride)
        yield rows[:, : width * 3].reshape(height, width, 3)
    finally:
        buf.unmap(info)
