#!/usr/bin/env bash
# Install the system packages CI needs for the GStreamer (Argus backend, fed by
# videotestsrc) tests, on Debian/Ubuntu: GStreamer tools and base plugins, their
# GObject-introspection typelibs, and what building PyGObject from source needs.
#
#   sudo tools/ci_system_deps.sh            # install what is missing, say what it did
#   tools/ci_system_deps.sh --check         # only report what is missing (exit 1 if any)
#
# Then, in the project's venv:  pip install "PyGObject<3.51"   (newer needs a newer GLib
# than Debian 12 has). Installs nothing when every package is already there; refuses
# (exit 2) when packages are missing and it is not running as root.
set -euo pipefail

PACKAGES=(
    gstreamer1.0-tools            # gst-launch-1.0, gst-inspect-1.0
    gstreamer1.0-plugins-base     # videotestsrc, videoconvert, appsink
    gir1.2-gstreamer-1.0          # Gst typelib for `gi.repository.Gst`
    gir1.2-gst-plugins-base-1.0   # GstApp / GstVideo typelibs
    libgirepository1.0-dev        # to build PyGObject
    libcairo2-dev                 # to build pycairo (a PyGObject dependency)
    pkg-config
    python3 python3-venv          # Debian's own Python 3.11.2 for .venv-triton (tools/test.sh)
)

check_only=0
if [[ "${1:-}" == "--check" ]]; then
    check_only=1
elif [[ $# -gt 0 ]]; then
    echo "usage: $0 [--check]" >&2
    exit 64
fi

missing=()
for pkg in "${PACKAGES[@]}"; do
    status=$(dpkg-query -W -f='${db:Status-Status}' "$pkg" 2>/dev/null || true)
    if [[ "$status" == "installed" ]]; then
        echo "ci_system_deps: $pkg already installed"
    else
        missing+=("$pkg")
    fi
done

if [[ ${#missing[@]} -eq 0 ]]; then
    echo "ci_system_deps: nothing to install"
    exit 0
fi

echo "ci_system_deps: missing: ${missing[*]}"
if [[ $check_only -eq 1 ]]; then
    exit 1
fi
if [[ $(id -u) -ne 0 ]]; then
    echo "ci_system_deps: not root; run: sudo $0" >&2
    exit 2
fi

export DEBIAN_FRONTEND=noninteractive
echo "ci_system_deps: apt-get update"
apt-get update -q
echo "ci_system_deps: apt-get install ${missing[*]}"
apt-get install -y -q --no-install-recommends "${missing[@]}"
echo "ci_system_deps: installed ${missing[*]}"
echo "ci_system_deps: next: pip install \"PyGObject<3.51\" in the project's venv"
