#!/usr/bin/env bash
# Compile every CUDA kernel of deblurd/gpu for Orin (compute_87) with nvcc, the whole
# module as pycuda compiles it, and the host emulation with g++ (what CI's unit tests
# run). Exits non-zero on any error; without nvcc it says so and checks g++ only.
#
#   tools/check_cuda.sh            # from anywhere; NVCC / CXX override the compilers
set -euo pipefail
cd "$(dirname "$0")/.."
GPU=daemon/deblurd/gpu
NVCC=${NVCC:-nvcc}
CXX=${CXX:-g++}
ARCH=${CUDA_ARCH:-compute_87}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
kernels=("$GPU"/*.cu)
status=0

printf '#include "%s"\n' reduce.cu pyramid.cu corners.cu lk.cu warp.cu fusion.cu >"$tmp/all.cu"

if command -v "$NVCC" >/dev/null 2>&1; then
    for cu in "${kernels[@]}" "$tmp/all.cu"; do
        if "$NVCC" --ptx -arch="$ARCH" --fmad=false -I "$GPU" "$cu" -o "$tmp/out.ptx"; then
            echo "check_cuda: nvcc $ARCH ok: $cu"
        else
            echo "check_cuda: nvcc $ARCH FAILED: $cu" >&2
            status=1
        fi
    done
else
    echo "check_cuda: $NVCC not found: skipping the nvcc compile (host emulation only)"
fi

if command -v "$CXX" >/dev/null 2>&1; then
    cp "$tmp/all.cu" "$tmp/all.cpp"
    if "$CXX" -O2 -std=c++17 -fPIC -shared -ffp-contract=off -Wall -Wextra -Werror \
        -I "$GPU" -x c++ "$tmp/all.cpp" -o "$tmp/libemu.so"; then
        echo "check_cuda: $CXX host emulation ok"
    else
        echo "check_cuda: $CXX host emulation FAILED" >&2
        status=1
    fi
else
    echo "check_cuda: $CXX not found: cannot build the host emulation" >&2
    status=1
fi
exit "$status"
