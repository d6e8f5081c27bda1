// Helpers shared by the deblurd kernels (border rules of OpenCV, thread indices).
#pragma once
#ifndef __CUDACC__
#include "cuda_host_emu.h"
#else
// On the GPU the kernels are launched by the driver: no host launchers.
#define DEBLURD_LAUNCHER(name, params, args)
#endif

#define DEBLURD_X ((int)(blockIdx.x * blockDim.x + threadIdx.x))
#define DEBLURD_Y ((int)(blockIdx.y * blockDim.y + threadIdx.y))

// OpenCV BORDER_REFLECT_101 (gfedcb|abcdefgh|gfedcba), any overshoot.
__device__ __forceinline__ int reflect101(int i, int n) {
    if (n == 1) return 0;
    while (i < 0 || i >= n) {
        if (i < 0) i = -i;
        if (i >= n) i = 2 * n - 2 - i;
    }
    return i;
}

// OpenCV BORDER_REFLECT (fedcba|abcdefgh|hgfedcb), any overshoot.
__device__ __forceinline__ int reflect(int i, int n) {
    while (i < 0 || i >= n) {
        if (i < 0) i = -i - 1;
        if (i >= n) i = 2 * n - 1 - i;
    }
    return i;
}

// OpenCV BORDER_REPLICATE.
__device__ __forceinline__ int clampi(int i, int lo, int hi) {
    return i < lo ? lo : (i > hi ? hi : i);
}
