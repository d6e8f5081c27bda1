// Robust per-pixel weights and accumulation of stage 4b (deblurd.pipeline.fusion).
// Per frame, with d = frame * gain - reference (3 channels, linear light):
//   area_half_diff   d and d² resized to half resolution (cv2.INTER_AREA; tap tables
//                    from the host), the half-resolution valid mask (>= 0.999)
//   sep_row/sep_col  Gaussian low-pass (separable, BORDER_REFLECT_101) of d, and of w
//   fuse_q           q = d_lo² / (g V), per channel
//   gather_strided   the sparse samples the host takes medians of (exposure, calibration)
//   detail_ratio_strided  the detail test's ratio mean(box5 d² / box5 V) on the sparse
//                    calibration grid (the host measures the detail test's factor from it)
//   weight_half      motion test T(sqrt(mean q / f); k, 2k) times detail test
//                    T(mean(box5 d² / box5 V) / f_d - 1; t, 3t)  (box: BORDER_REFLECT;
//                    f_d: the detail test's own factor, or f)
//   erode_min        grow rejected areas (min filter, BORDER_REPLICATE)
//   fuse_accumulate  upsample (cv2.INTER_LINEAR tables), times valid and frame weight,
//                    into the running (sequential) or summed (to-reference) result
// Every kernel is one thread per output pixel; the only reductions (means, medians) are
// per-row sums or host work on a few thousand samples.
#include "common.h"

#define AREA_TAPS 3

extern "C" __global__ void area_half_diff(const float* img, const float* ref, const float* valid,
                                          int W, int H, int w2, int h2, const int* ax_idx,
                                          const float* ax_w, const int* ay_idx, const float* ay_w,
                                          float g0, float g1, float g2, float* d_half,
                                          float* e_half, float* vmask) {
    int x = DEBLURD_X, y = DEBLURD_Y;
    if (x >= w2 || y >= h2 || H <= 0) return;
    float g[3] = {g0, g1, g2};
    float dsum[3] = {0.0f, 0.0f, 0.0f}, esum[3] = {0.0f, 0.0f, 0.0f}, vsum = 0.0f;
    for (int j = 0; j < AREA_TAPS; ++j) {
        float wy = ay_w[y * AREA_TAPS + j];
        if (wy == 0.0f) continue;
        size_t row = (size_t)ay_idx[y * AREA_TAPS + j] * W;
        float dr[3] = {0.0f, 0.0f, 0.0f}, er[3] = {0.0f, 0.0f, 0.0f}, vr = 0.0f;
        for (int i = 0; i < AREA_TAPS; ++i) {
            float wx = ax_w[x * AREA_TAPS + i];
            if (wx == 0.0f) continue;
            size_t p = row + (size_t)ax_idx[x * AREA_TAPS + i];
            for (int c = 0; c < 3; ++c) {
                float xv = img[p * 3 + c] * g[c];
                float d = xv - ref[p * 3 + c];
                dr[c] += d * wx;
                er[c] += (d * d) * wx;
            }
            vr += valid[p] * wx;
        }
        for (int c = 0; c < 3; ++c) {
            dsum[c] += dr[c] * wy;
            esum[c] += er[c] * wy;
        }
        vsum += vr * wy;
    }
    size_t o = (size_t)y * w2 + x;
    float m = vsum >= 0.999f ? 1.0f : 0.0f;
    vmask[o] = m;
    for (int c = 0; c < 3; ++c) {
        d_half[o * 3 + c] = dsum[c] * m;
        e_half[o * 3 + c] = esum[c] * m;
    }
}
DEBLURD_LAUNCHER(area_half_diff,
                 (const float* img, const float* ref, const float* valid, int W, int H, int w2,
                  int h2, const int* ax_idx, const float* ax_w, const int* ay_idx,
                  const float* ay_w, float g0, float g1, float g2, float* d_half, float* e_half,
                  float* vmask),
                 (img, ref, valid, W, H, w2, h2, ax_idx, ax_w, ay_idx, ay_w, g0, g1, g2, d_half,
                  e_half, vmask))

// Separable filter, horizontal pass: dst = sum_i k[i] src[x + i - r] (BORDER_REFLECT_101).
extern "C" __global__ void sep_row(const float* src, int w, int h, int c, const float* k, int r,
                                   float* dst) {
    int x = DEBLURD_X, y = DEBLURD_Y;
    if (x >= w || y >= h) return;
    const float* row = src + (size_t)y * w * c;
    for (int ch = 0; ch < c; ++ch) {
        float s = 0.0f;
        for (int i = -r; i <= r; ++i) s += k[i + r] * row[reflect101(x + i, w) * c + ch];
        dst[((size_t)y * w + x) * c + ch] = s;
    }
}
DEBLURD_LAUNCHER(sep_row, (const float* src, int w, int h, int c, const float* k, int r, float* dst),
                 (src, w, h, c, k, r, dst))

// Separable filter, vertical pass.
extern "C" __global__ void sep_col(const float* src, int w, int h, int c, const float* k, int r,
                                   float* dst) {
    int x = DEBLURD_X, y = DEBLURD_Y;
    if (x >= w || y >= h) return;
    for (int ch = 0; ch < c; ++ch) {
        float s = 0.0f;
        for (int i = -r; i <= r; ++i) s += k[i + r] * src[((size_t)reflect101(y + i, h) * w + x) * c + ch];
        dst[((size_t)y * w + x) * c + ch] = s;
    }
}
DEBLURD_LAUNCHER(sep_col, (const float* src, int w, int h, int c, const float* k, int r, float* dst),
                 (src, w, h, c, k, r, dst))

// q = (d_lo * d_lo) * inv_var_lo, element-wise over n values.
extern "C" __global__ void fuse_q(const float* d_lo, const float* inv_var_lo, int n, float* q) {
    int i = DEBLURD_X;
    if (i >= n) return;
    q[i] = (d_lo[i] * d_lo[i]) * inv_var_lo[i];
}
DEBLURD_LAUNCHER(fuse_q, (const float* d_lo, const float* inv_var_lo, int n, float* q),
                 (d_lo, inv_var_lo, n, q))

// out = src[::step, ::step] (c interleaved channels), shape (ceil(h/step), ceil(w/step), c).
extern "C" __global__ void gather_strided(const float* src, int w, int h, int c, int step,
                                          float* out) {
    int x = DEBLURD_X, y = DEBLURD_Y;
    int ow = (w + step - 1) / step, oh = (h + step - 1) / step;
    if (x >= ow || y >= oh) return;
    const float* s = src + ((size_t)y * step * w + (size_t)x * step) * c;
    float* o = out + ((size_t)y * ow + x) * c;
    for (int ch = 0; ch < c; ++ch) o[ch] = s[ch];
}
DEBLURD_LAUNCHER(gather_strided, (const float* src, int w, int h, int c, int step, float* out),
                 (src, w, h, c, step, out))

__device__ __forceinline__ float flat_top(float s, float lo, float inv) {
    float u = (s - lo) * inv;
    u = u < 0.0f ? 0.0f : (u > 1.0f ? 1.0f : u);
    u = u * u;
    u = 1.0f - u;
    return u * u;
}

// The calibration factor at luma l: np.interp over ncal (level, factor) pairs (clamped at
// the ends); ncal == 0: no calibration (returns 0 = "none"); ncal == 1: that factor.
__device__ __forceinline__ float calib_factor(const float* cal, int ncal, float l) {
    if (ncal <= 0) return 0.0f;
    const float* lv = cal;
    const float* fc = cal + ncal;
    if (ncal == 1 || l <= lv[0]) return fc[0];
    if (l >= lv[ncal - 1]) return fc[ncal - 1];
    int j = 1;
    while (j < ncal - 1 && l > lv[j]) ++j;
    float t = (l - lv[j - 1]) / (lv[j] - lv[j - 1]);
    return fc[j - 1] + t * (fc[j] - fc[j - 1]);
}

// The detail test's ratio at half-resolution cell (x, y): the channels' mean of the
// local mean squared difference (5x5 box, BORDER_REFLECT) over the model's box variance.
__device__ __forceinline__ float detail_ratio(const float* e_half, const float* inv_var_box,
                                              int w, int h, int x, int y) {
    const float third = 1.0f / 3.0f;
    size_t o = (size_t)y * w + x;
    float e[3] = {0.0f, 0.0f, 0.0f};
    for (int dy = -2; dy <= 2; ++dy) {
        const float* row = e_half + (size_t)reflect(y + dy, h) * w * 3;
        for (int dx = -2; dx <= 2; ++dx) {
            const float* p = row + (size_t)reflect(x + dx, w) * 3;
            e[0] += p[0];
            e[1] += p[1];
            e[2] += p[2];
        }
    }
    const float box = 1.0f / 25.0f;
    float r0 = (e[0] * box) * inv_var_box[o * 3];
    float r1 = (e[1] * box) * inv_var_box[o * 3 + 1];
    float r2 = (e[2] * box) * inv_var_box[o * 3 + 2];
    return r0 * third + r1 * third + r2 * third;
}

// out = the detail ratio at [::step, ::step], shape (ceil(h/step), ceil(w/step)): the
// samples of the detail test's calibration, the values weight_half tests.
extern "C" __global__ void detail_ratio_strided(const float* e_half, const float* inv_var_box,
                                                int w, int h, int step, float* out) {
    int x = DEBLURD_X, y = DEBLURD_Y;
    int ow = (w + step - 1) / step, oh = (h + step - 1) / step;
    if (x >= ow || y >= oh) return;
    out[(size_t)y * ow + x] = detail_ratio(e_half, inv_var_box, w, h, x * step, y * step);
}
DEBLURD_LAUNCHER(detail_ratio_strided,
                 (const float* e_half, const float* inv_var_box, int w, int h, int step,
                  float* out),
                 (e_half, inv_var_box, w, h, step, out))

// cal/ncal: the motion test's calibration table; cal_d/ncal_d: the detail test's (the
// host passes the motion test's own when the detail test is not calibrated separately).
extern "C" __global__ void weight_half(const float* q, const float* e_half,
                                       const float* inv_var_box, const float* luma_lo, int w,
                                       int h, const float* cal, int ncal, const float* cal_d,
                                       int ncal_d, float k_lo, float k_inv, int detail,
                                       float t_lo, float t_inv, float* out) {
    int x = DEBLURD_X, y = DEBLURD_Y;
    if (x >= w || y >= h) return;
    size_t o = (size_t)y * w + x;
    const float third = 1.0f / 3.0f;
    float f = calib_factor(cal, ncal, luma_lo[o]);
    float z2 = q[o * 3] * third + q[o * 3 + 1] * third + q[o * 3 + 2] * third;
    if (ncal > 0) z2 = z2 / f;
    float wgt = flat_top(sqrtf(z2), k_lo, k_inv);
    if (detail) {
        float ratio = detail_ratio(e_half, inv_var_box, w, h, x, y);
        if (ncal_d > 0) ratio = ratio / calib_factor(cal_d, ncal_d, luma_lo[o]);
        wgt = wgt * flat_top(ratio - 1.0f, t_lo, t_inv);
    }
    out[o] = wgt;
}
DEBLURD_LAUNCHER(weight_half,
                 (const float* q, const float* e_half, const float* inv_var_box,
                  const float* luma_lo, int w, int h, const float* cal, int ncal,
                  const float* cal_d, int ncal_d, float k_lo, float k_inv, int detail,
                  float t_lo, float t_inv, float* out),
                 (q, e_half, inv_var_box, luma_lo, w, h, cal, ncal, cal_d, ncal_d, k_lo, k_inv,
                  detail, t_lo, t_inv, out))

// Minimum over a (2r+1)² square, BORDER_REPLICATE (cv2.erode).
extern "C" __global__ void erode_min(const float* src, int w, int h, int r, float* dst) {
    int x = DEBLURD_X, y = DEBLURD_Y;
    if (x >= w || y >= h) return;
    float m = src[(size_t)y * w + x];
    for (int dy = -r; dy <= r; ++dy) {
        const float* row = src + (size_t)clampi(y + dy, 0, h - 1) * w;
        for (int dx = -r; dx <= r; ++dx) {
            float v = row[clampi(x + dx, 0, w - 1)];
            m = v < m ? v : m;
        }
    }
    dst[(size_t)y * w + x] = m;
}
DEBLURD_LAUNCHER(erode_min, (const float* src, int w, int h, int r, float* dst), (src, w, h, r, dst))

// Per full-resolution pixel: w = upsample(w_half) (or 1 without robust weights) * valid,
// stored in wfull (its mean is the frame's reported weight); then times the frame weight,
// and merged. mode 0 (to reference): wsum += w, acc += (img * gain) * w. mode 1
// (sequential): wsum += w, acc += (img * gain - acc) * (w / wsum).
extern "C" __global__ void fuse_accumulate(const float* w_half, int w2, int h2, const int* lx_idx,
                                           const float* lx_a, const int* ly_idx,
                                           const float* ly_a, const float* valid,
                                           const float* img, int W, int H, float g0, float g1,
                                           float g2, float frame_weight, int mode, float* wfull,
                                           float* acc, float* wsum) {
    int x = DEBLURD_X, y = DEBLURD_Y;
    if (x >= W || y >= H) return;
    size_t o = (size_t)y * W + x;
    float wv = 1.0f;
    if (w_half) {
        int sx = lx_idx[x], sy = ly_idx[y];
        int sx1 = sx + 1 < w2 ? sx + 1 : w2 - 1, sy1 = sy + 1 < h2 ? sy + 1 : h2 - 1;
        float a1 = lx_a[x], a0 = 1.0f - a1, b1 = ly_a[y], b0 = 1.0f - b1;
        const float* r0 = w_half + (size_t)sy * w2;
        const float* r1 = w_half + (size_t)sy1 * w2;
        float t0 = r0[sx] * a0 + r0[sx1] * a1;
        float t1 = r1[sx] * a0 + r1[sx1] * a1;
        wv = t0 * b0 + t1 * b1;
    }
    wv = wv * valid[o];
    wfull[o] = wv;
    if (frame_weight != 1.0f) wv = wv * frame_weight;
    float ws = wsum[o] + wv;
    wsum[o] = ws;
    float g[3] = {g0, g1, g2};
    if (mode == 0) {
        for (int c = 0; c < 3; ++c) acc[o * 3 + c] += (img[o * 3 + c] * g[c]) * wv;
    } else {
        float ratio = wv / ws;
        for (int c = 0; c < 3; ++c) {
            float step = img[o * 3 + c] * g[c] - acc[o * 3 + c];
            acc[o * 3 + c] += step * ratio;
        }
    }
}
DEBLURD_LAUNCHER(fuse_accumulate,
                 (const float* w_half, int w2, int h2, const int* lx_idx, const float* lx_a,
                  const int* ly_idx, const float* ly_a, const float* valid, const float* img,
                  int W, int H, float g0, float g1, float g2, float frame_weight, int mode,
                  float* wfull, float* acc, float* wsum),
                 (w_half, w2, h2, lx_idx, lx_a, ly_idx, ly_a, valid, img, W, H, g0, g1, g2,
                  frame_weight, mode, wfull, acc, wsum))

// out = acc / wsum per pixel (3 channels): the to-reference result.
extern "C" __global__ void divide_wsum(const float* acc, const float* wsum, int n, float* out) {
    int i = DEBLURD_X;
    if (i >= n) return;
    float s = wsum[i];
    for (int c = 0; c < 3; ++c) out[(size_t)i * 3 + c] = acc[(size_t)i * 3 + c] / s;
}
DEBLURD_LAUNCHER(divide_wsum, (const float* acc, const float* wsum, int n, float* out),
                 (acc, wsum, n, out))
