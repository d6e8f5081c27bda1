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
echo "== ruff"
"$VENV/bin/ruff" check daemon tests tools
echo "== mypy"
"$VENV/bin/mypy"
echo "== pytest"
set +e
"$VENV/bin/python" -m pytest "$@"
rc=$?
set -e
if [ "$rc" -eq 5 ]; then
    echo "pytest collected no tests: that is a failure" >&2
    exit 1
fi
exit "$rc"
