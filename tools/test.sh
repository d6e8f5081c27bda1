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
"$VENV/bin/ruff" format --check daemon tests tools
echo "== mypy"
"$VENV/bin/mypy"
echo "== pytest"
# Two processes: the GStreamer tests load GLib's native libraries, which were seen to
# abort C++ exception paths of torch/onnxruntime loaded in the same process.
run_pytest() {
    set +e
    "${PYTEST_PYTHON:-$VENV/bin/python}" -m pytest "$@"
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
# The triton tests run once, in their own venv, in the last section.
run_pytest -m "not gstreamer and not triton" --ignore=tests/unit/test_camera_argus.py \
    --ignore=tests/hw --ignore=tests/triton_server "$@" || status=$?
echo "== pytest (GStreamer and hardware tests, own process)"
run_pytest tests/unit/test_camera_argus.py tests/hw "$@" || status=$?
# A real Triton server (nvidia-pytriton runs Triton's own binary on the CPU) in a venv made
# from Debian's own python3 (3.11.2): under pyenv's 3.11.7 PyTriton 0.7's Python-backend
# stub fails ('_thread.RLock' object has no attribute '_recursion_count'). The section ends
# with the triton tests' pytest summary line; a missing package fails them (no skips).
echo "== triton"
TRITON_VENV=${TRITON_VENV:-.venv-triton}
if [ ! -x "$TRITON_VENV/bin/python" ]; then
    /usr/bin/python3 -m venv "$TRITON_VENV"
fi
"$TRITON_VENV/bin/python" -m pip install -q --upgrade pip
"$TRITON_VENV/bin/python" -m pip install -q -e ".[triton]" "nvidia-pytriton==0.7.0" \
    "pytest>=8" "pytest-timeout>=2.2"
PYTEST_PYTHON="$TRITON_VENV/bin/python" TRITON_TESTS_REQUIRED=1 \
    run_pytest -p no:cacheprovider -m triton tests/triton_server "$@" || status=$?
exit "$status"
