// Pyramidal Lucas–Kanade tracking of sparse points (deblurd.pipeline.registration.track),
// one thread per point per level, following OpenCV's calcOpticalFlowPyrLK (maxLevel=0 per
// call, OPTFLOW_USE_INITIAL_FLOW) step by step: Scharr derivatives of the previous image
// (int16, BORDER_REFLECT_101; zero outside the image), 14-bit fixed-point bilinear weights,
// patches with 5 fractional bits, float normal equations, the same bounds checks, the
// minimum-eigenvalue test, the epsilon and oscillation stops. The window is read again on
// every iteration instead of being cached (no per-thread arrays; same arithmetic).
#include "common.h"

#define LK_W_BITS 14
#define LK_DESCALE(x, n) (((x) + (1 << ((n)-1))) >> (n))

// Scharr derivatives (dx, dy) of a uint8 image, as OpenCV's calcSharrDeriv.
extern "C" __global__ void scharr_deriv(const unsigned char* img, int w, int h, short2* out) {
    int x = DEBLURD_X, y = DEBLURD_Y;
    if (x >= w || y >= h) return;
    int ym = reflect101(y - 1, h), yp = reflect101(y + 1, h);
    int xm = reflect101(x - 1, w), xp = reflect101(x + 1, w);
    const unsigned char* s0 = img + (size_t)ym * w;
    const unsigned char* s1 = img + (size_t)y * w;
    const unsigned char* s2 = img + (size_t)yp * w;
    int t0m = (s0[xm] + s2[xm]) * 3 + s1[xm] * 10, t0p = (s0[xp] + s2[xp]) * 3 + s1[xp] * 10;
    int t1m = s2[xm] - s0[xm], t1c = s2[x] - s0[x], t1p = s2[xp] - s0[xp];
    out[(size_t)y * w + x] = make_short2((short)(t0p - t0m), (short)((t1p + t1m) * 3 + t1c * 10));
}
DEBLURD_LAUNCHER(scharr_deriv, (const unsigned char* img, int w, int h, short2* out),
                 (img, w, h, out))

// First guess at the coarsest level: pts / 2**top + prior (float32, as track()).
extern "C" __global__ void lk_init(const float* pts, int n, float div, float dx, float dy,
                                   float* guess) {
    int i = DEBLURD_X;
    if (i >= n) return;
    guess[2 * i] = pts[2 * i] / div + dx;
    guess[2 * i + 1] = pts[2 * i + 1] / div + dy;
}
DEBLURD_LAUNCHER(lk_init, (const float* pts, int n, float div, float dx, float dy, float* guess),
                 (pts, n, div, dx, dy, guess))

__device__ __forceinline__ int lk_px(const unsigned char* img, int w, int h, int x, int y) {
    return img[(size_t)reflect101(y, h) * w + reflect101(x, w)];
}

__device__ __forceinline__ short2 lk_d(const short2* d, int w, int h, int x, int y) {
    if (x < 0 || y < 0 || x >= w || y >= h) return make_short2(0, 0);
    return d[(size_t)y * w + x];
}

// One level. pts: (n, 2) positions in the previous image at the pyramid's base level;
// this level is `div` (2**level) times coarser. guess: (n, 2) positions in the next image
// at this level's scale, read times `guess_scale` (2 below the coarsest level) and
// written back where tracking succeeds (a lost point keeps its scaled guess). status:
// 1 tracked, 0 lost (the last level called decides, as in track()).
extern "C" __global__ void lk_level(const unsigned char* I, const short2* dI,
                                    const unsigned char* J, int w, int h, const float* pts,
                                    int n, float div, float* guess, float guess_scale,
                                    unsigned char* status, int win, int iters, double eps2,
                                    float min_eig) {
    int i = DEBLURD_X;
    if (i >= n) return;
    float gx0 = guess[2 * i] * guess_scale, gy0 = guess[2 * i + 1] * guess_scale;
    guess[2 * i] = gx0;
    guess[2 * i + 1] = gy0;
    status[i] = 0;
    float half = (float)(win - 1) * 0.5f;
    float px = pts[2 * i] / div - half, py = pts[2 * i + 1] / div - half;
    if (!(isfinite(px) && isfinite(py) && isfinite(gx0) && isfinite(gy0))) return;
    if (px < -2.0f * w || px > 2.0f * w || py < -2.0f * h || py > 2.0f * h) return;
    int ipx = (int)floorf(px), ipy = (int)floorf(py);
    if (ipx < -win || ipx >= w || ipy < -win || ipy >= h) return;
    float a = px - (float)ipx, b = py - (float)ipy;
    int iw00 = __float2int_rn((1.0f - a) * (1.0f - b) * (float)(1 << LK_W_BITS));
    int iw01 = __float2int_rn(a * (1.0f - b) * (float)(1 << LK_W_BITS));
    int iw10 = __float2int_rn((1.0f - a) * b * (float)(1 << LK_W_BITS));
    int iw11 = (1 << LK_W_BITS) - iw00 - iw01 - iw10;
    float A11 = 0.0f, A12 = 0.0f, A22 = 0.0f;
    for (int y = 0; y < win; ++y) {
        for (int x = 0; x < win; ++x) {
            int xx = ipx + x, yy = ipy + y;
            short2 d00 = lk_d(dI, w, h, xx, yy), d01 = lk_d(dI, w, h, xx + 1, yy);
            short2 d10 = lk_d(dI, w, h, xx, yy + 1), d11 = lk_d(dI, w, h, xx + 1, yy + 1);
            int ix = LK_DESCALE(d00.x * iw00 + d01.x * iw01 + d10.x * iw10 + d11.x * iw11, LK_W_BITS);
            int iy = LK_DESCALE(d00.y * iw00 + d01.y * iw01 + d10.y * iw10 + d11.y * iw11, LK_W_BITS);
            A11 += (float)(ix * ix);
            A12 += (float)(ix * iy);
            A22 += (float)(iy * iy);
        }
    }
    const float FLT_SCALE = 1.0f / (float)(1 << 20);
    A11 *= FLT_SCALE;
    A12 *= FLT_SCALE;
    A22 *= FLT_SCALE;
    float D = A11 * A22 - A12 * A12;
    float minEig = (A22 + A11 - sqrtf((A11 - A22) * (A11 - A22) + 4.0f * A12 * A12)) /
                   (float)(2 * win * win);
    if (minEig < min_eig || D < 1.1920928955078125e-07f) return;
    D = 1.0f / D;

    float nx = gx0 - half, ny = gy0 - half;  // nextPt - halfWin
    float outx = gx0, outy = gy0;
    float pdx = 0.0f, pdy = 0.0f;
    bool lost = false;
    for (int j = 0; j < iters; ++j) {
        if (!(isfinite(nx) && isfinite(ny)) || nx < -2.0f * w || nx > 2.0f * w ||
            ny < -2.0f * h || ny > 2.0f * h) {
            lost = true;
            break;
        }
        int inx = (int)floorf(nx), iny = (int)floorf(ny);
        if (inx < -win || inx >= w || iny < -win || iny >= h) {
            lost = true;
            break;
        }
        float a2 = nx - (float)inx, b2 = ny - (float)iny;
        int jw00 = __float2int_rn((1.0f - a2) * (1.0f - b2) * (float)(1 << LK_W_BITS));
        int jw01 = __float2int_rn(a2 * (1.0f - b2) * (float)(1 << LK_W_BITS));
        int jw10 = __float2int_rn((1.0f - a2) * b2 * (float)(1 << LK_W_BITS));
        int jw11 = (1 << LK_W_BITS) - jw00 - jw01 - jw10;
        float ib1 = 0.0f, ib2 = 0.0f;
        for (int y = 0; y < win; ++y) {
            for (int x = 0; x < win; ++x) {
                int xx = ipx + x, yy = ipy + y;
                int ival = LK_DESCALE(lk_px(I, w, h, xx, yy) * iw00 + lk_px(I, w, h, xx + 1, yy) * iw01 +
                                      lk_px(I, w, h, xx, yy + 1) * iw10 +
                                      lk_px(I, w, h, xx + 1, yy + 1) * iw11,
                                      LK_W_BITS - 5);
                short2 d00 = lk_d(dI, w, h, xx, yy), d01 = lk_d(dI, w, h, xx + 1, yy);
                short2 d10 = lk_d(dI, w, h, xx, yy + 1), d11 = lk_d(dI, w, h, xx + 1, yy + 1);
                int ix = LK_DESCALE(d00.x * iw00 + d01.x * iw01 + d10.x * iw10 + d11.x * iw11, LK_W_BITS);
                int iy = LK_DESCALE(d00.y * iw00 + d01.y * iw01 + d10.y * iw10 + d11.y * iw11, LK_W_BITS);
                int jx = inx + x, jy = iny + y;
                int jval = LK_DESCALE(lk_px(J, w, h, jx, jy) * jw00 + lk_px(J, w, h, jx + 1, jy) * jw01 +
                                      lk_px(J, w, h, jx, jy + 1) * jw10 +
                                      lk_px(J, w, h, jx + 1, jy + 1) * jw11,
                                      LK_W_BITS - 5);
                int diff = jval - ival;
                ib1 += (float)(diff * ix);
                ib2 += (float)(diff * iy);
            }
        }
        float b1 = ib1 * FLT_SCALE, bb2 = ib2 * FLT_SCALE;
        float ddx = (A12 * bb2 - A22 * b1) * D;
        float ddy = (A12 * b1 - A11 * bb2) * D;
        nx += ddx;
        ny += ddy;
        outx = nx + half;
        outy = ny + half;
        if ((double)ddx * (double)ddx + (double)ddy * (double)ddy <= eps2) break;
        if (j > 0 && fabsf(ddx + pdx) < 0.01f && fabsf(ddy + pdy) < 0.01f) {
            outx -= ddx * 0.5f;
            outy -= ddy * 0.5f;
            break;
        }
        pdx = ddx;
        pdy = ddy;
    }
    if (lost) return;
    // OpenCV's final check (it runs whenever an error array is returned, as in Python).
    float ex = outx - half, ey = outy - half;
    if (!(isfinite(ex) && isfinite(ey))) return;
    int iex = (int)floorf(ex), iey = (int)floorf(ey);
    if (iex < -win || iex >= w || iey < -win || iey >= h) return;
    guess[2 * i] = outx;
    guess[2 * i + 1] = outy;
    status[i] = 1;
}
DEBLURD_LAUNCHER(lk_level,
                 (const unsigned char* I, const short2* dI, const unsigned char* J, int w, int h,
                  const float* pts, int n, float div, float* guess, float guess_scale,
                  unsigned char* status, int win, int iters, double eps2, float min_eig),
                 (I, dI, J, w, h, pts, n, div, guess, guess_scale, status, win, iters, eps2,
                  min_eig))
