#!/usr/bin/env bash
# Set up a virtual environment (once) and run every check: ruff, mypy, pytest.
# This is the README's test command and what .ci/run calls.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${VENV:-.venv}
if [ ! -x "$VENV/bin/python" ]; then
    python3 -m venv "$VENV"
fi
"$VENV/bin/python" -m pip install -q --upgrade pip
# System packages for the GStreamer (Argus/videotestsrc) tests: installed when we can
# (root, as in CI); without them those tests skip with their reason.
EXTRAS=dev
if [ "$(id -u)" -eq 0 ]; then
    bash tools/ci_system_deps.sh
    EXTRAS=dev,gst
elif bash tools/ci_system_deps.sh --check >/dev/null 2>&1; then
    EXTRAS=dev,gst
else
    echo "GStreamer development packages missing and not root: Argus tests will skip" >&2
fi
"$VENV/bin/python" -m pip install -q -e ".[$EXTRAS]"
echo "== systemd units (verify, exposure score)"
bash tools/check_systemd.sh --bin "$PWD/$VENV/bin/deblurd"
echo "== CUDA kernels (nvcc for Orin, host emulation with g++)"
bash tools/check_cuda.sh
echo "== ruff"
"$VENV/bin/ruff" check daemon tests tools
echo "== mypy"
"$VENV/bin/mypy"
echo "== pytest"
# Two processes: the GStreamer tests load GLib's native libraries, which were seen to
# abort C++ exception paths of torch/onnxruntime loaded in the same process.
run_pytest() {
    set +e
    "$VENV/bin/python" -m pytest "$@"
    local rc=$?
    set -e
    if [ "$rc" -eq 5 ]; then
        echo "pytest collected no tests for: $*: that is a failure" >&2
        return 1
    fi
    return "$rc"
}
status=0
# These load GStreamer (PyGObject) at collection or in fixtures.
run_pytest -m "not gstreamer" --ignore=tests/unit/test_camera_argus.py --ignore=tests/hw "$@" \
    || status=$?
echo "== pytest (GStreamer and hardware tests, own process)"
run_pytest tests/unit/test_camera_argus.py tests/hw "$@" || status=$?
exit "$status"
