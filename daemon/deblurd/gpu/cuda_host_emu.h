// Host emulation of the small part of CUDA the deblurd kernels use.
//
// The kernels under deblurd/gpu/*.cu are written so that one thread computes one output
// (a pixel, a row, a tracked point) from global memory only: no shared memory, no
// atomics, no __syncthreads, no warp intrinsics. Such a grid can be run as nested loops,
// in any order, with the same result. This header makes the same .cu text compile as
// C++ with g++:
//
// * __global__/__device__/__forceinline__ become plain (inline) C++;
// * blockIdx/threadIdx/blockDim/gridDim are thread_local globals set by the launcher;
// * DEBLURD_LAUNCHER(name, (params), (args)) emits `extern "C" void emu_<name>(gx, gy, bx,
//   by, params...)` that runs the whole grid block by block, thread by thread;
// * the CUDA intrinsics used (__float2int_rn, make_short2) get host definitions with
//   the same rounding (round to nearest even).
//
// Build with -ffp-contract=off (and the GPU build with --fmad=false) so that neither
// side fuses a*b+c into one rounding: the two then compute the same float operations.
#pragma once
#ifndef __CUDACC__

#include <math.h>
#include <stdint.h>

#define __global__
#define __device__
#define __host__
#define __forceinline__ inline

struct uint3 { unsigned int x, y, z; };
struct dim3 { unsigned int x, y, z; };
struct short2 { short x, y; };

inline thread_local uint3 blockIdx = {0u, 0u, 0u};
inline thread_local uint3 threadIdx = {0u, 0u, 0u};
inline thread_local dim3 blockDim = {1u, 1u, 1u};
inline thread_local dim3 gridDim = {1u, 1u, 1u};

inline int __float2int_rn(float v) { return (int)nearbyintf(v); }  // default mode: to even
inline short2 make_short2(short x, short y) { short2 s; s.x = x; s.y = y; return s; }

#define DEBLURD_UNPAREN(...) __VA_ARGS__
#define DEBLURD_LAUNCHER(name, params, args)                                          \
    extern "C" void emu_##name(int emu_gx, int emu_gy, int emu_bx, int emu_by,        \
                               DEBLURD_UNPAREN params) {                              \
        gridDim = {(unsigned)emu_gx, (unsigned)emu_gy, 1u};                           \
        blockDim = {(unsigned)emu_bx, (unsigned)emu_by, 1u};                          \
        for (int emu_byi = 0; emu_byi < emu_gy; ++emu_byi)                            \
            for (int emu_bxi = 0; emu_bxi < emu_gx; ++emu_bxi)                        \
                for (int emu_tyi = 0; emu_tyi < emu_by; ++emu_tyi)                    \
                    for (int emu_txi = 0; emu_txi < emu_bx; ++emu_txi) {              \
                        blockIdx = {(unsigned)emu_bxi, (unsigned)emu_byi, 0u};        \
                        threadIdx = {(unsigned)emu_txi, (unsigned)emu_tyi, 0u};       \
                        name args;                                                    \
                    }                                                                 \
    }

#endif
