// Perspective warp into the reference geometry (registration.warp_homography): for each
// output pixel (x, y) the source point is M (x, y, 1) with M = H^-1 (H: moving ->
// reference); bilinear sampling with BORDER_REPLICATE (each tap clamped), any number of
// interleaved channels. valid = 1 where the source point lies inside the frame inset by
// one pixel (all four taps inside; registration.valid_mask fills the same quadrilateral
// with cv2.fillConvexPoly) and in front of the camera, else 0. Exact float bilinear
// weights (OpenCV quantises the source position to 1/32 px).
// Its input is a linear float image: from the host, or decoded on the device from the
// uploaded uint8 sRGB frame (lut_u8_f32).
#include "common.h"

// dst[i] = lut[src[i]] for n values: uint8 sRGB codes to float32 linear light through
// the 256-entry table of deblurd.imaging.srgb_to_linear (uploaded once per backend).
extern "C" __global__ void lut_u8_f32(const unsigned char* src, int n, const float* lut,
                                      float* dst) {
    int i = DEBLURD_X;
    if (i >= n) return;
    dst[i] = lut[src[i]];
}
DEBLURD_LAUNCHER(lut_u8_f32, (const unsigned char* src, int n, const float* lut, float* dst),
                 (src, n, lut, dst))

extern "C" __global__ void warp_perspective(const float* src, int w, int h, int c, float m0,
                                            float m1, float m2, float m3, float m4, float m5,
                                            float m6, float m7, float m8, float* dst,
                                            float* valid) {
    int x = DEBLURD_X, y = DEBLURD_Y;
    if (x >= w || y >= h) return;
    float fx = (float)x, fy = (float)y;
    float z = m6 * fx + m7 * fy + m8;
    float u = (m0 * fx + m1 * fy + m2) / z;
    float v = (m3 * fx + m4 * fy + m5) / z;
    size_t o = (size_t)y * w + x;
    bool ok = z > 0.0f && isfinite(u) && isfinite(v);
    if (valid) valid[o] = (ok && u >= 1.0f && u <= (float)(w - 2) && v >= 1.0f && v <= (float)(h - 2)) ? 1.0f : 0.0f;
    if (!(isfinite(u) && isfinite(v))) { u = 0.0f; v = 0.0f; }
    u = fminf(fmaxf(u, -1.0f), (float)w);
    v = fminf(fmaxf(v, -1.0f), (float)h);
    int x0 = (int)floorf(u), y0 = (int)floorf(v);
    float a = u - (float)x0, b = v - (float)y0;
    int xa = clampi(x0, 0, w - 1), xb = clampi(x0 + 1, 0, w - 1);
    int ya = clampi(y0, 0, h - 1), yb = clampi(y0 + 1, 0, h - 1);
    const float* r0 = src + (size_t)ya * w * c;
    const float* r1 = src + (size_t)yb * w * c;
    float* out = dst + o * c;
    for (int k = 0; k < c; ++k) {
        float top = r0[xa * c + k] * (1.0f - a) + r0[xb * c + k] * a;
        float bot = r1[xa * c + k] * (1.0f - a) + r1[xb * c + k] * a;
        out[k] = top * (1.0f - b) + bot * b;
    }
}
DEBLURD_LAUNCHER(warp_perspective,
                 (const float* src, int w, int h, int c, float m0, float m1, float m2, float m3,
                  float m4, float m5, float m6, float m7, float m8, float* dst, float* valid),
                 (src, w, h, c, m0, m1, m2, m3, m4, m5, m6, m7, m8, dst, valid))

// Warp through a coarse sampling map (refine.warp_with_residual: the homography plus the
// local refinement's residual flow). map: float32 (mh, mw, 2), the source position (x, y)
// of each coarse grid pixel centre (refine.residual_map), upsampled to the output pixel as
// cv2.resize INTER_LINEAR does (half-pixel centres, fx = (float)((x + 0.5) * sx - 0.5) in
// double with sx = 1 / (w / mw), likewise fy; clamped to the edge samples). The position is then rounded to 1/32 px as
// the CPU path's fixed-point maps are (cv2.convertMaps to CV_16SC2: cvRound(u * 32)) and
// sampled bilinearly with BORDER_REPLICATE (each tap clamped) with cv2.remap's weights
// ((1 - a)(1 - b), a(1 - b), (1 - a) b, a b): the same result as the CPU warp up to float
// rounding. valid = 1 where 1 <= u <= w - 2 and 1 <= v <= h - 2 (cv2.inRange of the
// unrounded map), else 0.
extern "C" __global__ void warp_map(const float* src, int w, int h, int c, const float* map,
                                    int mw, int mh, double sx, double sy, float* dst,
                                    float* valid) {
    int x = DEBLURD_X, y = DEBLURD_Y;
    if (x >= w || y >= h) return;
    float fx = (float)(((double)x + 0.5) * sx - 0.5);
    float fy = (float)(((double)y + 0.5) * sy - 0.5);
    int ix = (int)floorf(fx), iy = (int)floorf(fy);
    float ax = fx - (float)ix, ay = fy - (float)iy;
    if (ix < 0) { ix = 0; ax = 0.0f; }
    if (ix >= mw - 1) { ix = mw - 1; ax = 0.0f; }
    if (iy < 0) { iy = 0; ay = 0.0f; }
    if (iy >= mh - 1) { iy = mh - 1; ay = 0.0f; }
    int ix1 = ix + 1 < mw ? ix + 1 : ix, iy1 = iy + 1 < mh ? iy + 1 : iy;
    const float* m0 = map + (size_t)iy * mw * 2;
    const float* m1 = map + (size_t)iy1 * mw * 2;
    float u0 = m0[ix * 2] * (1.0f - ax) + m0[ix1 * 2] * ax;
    float u1 = m1[ix * 2] * (1.0f - ax) + m1[ix1 * 2] * ax;
    float v0 = m0[ix * 2 + 1] * (1.0f - ax) + m0[ix1 * 2 + 1] * ax;
    float v1 = m1[ix * 2 + 1] * (1.0f - ax) + m1[ix1 * 2 + 1] * ax;
    float u = u0 * (1.0f - ay) + u1 * ay;
    float v = v0 * (1.0f - ay) + v1 * ay;
    size_t o = (size_t)y * w + x;
    bool ok = isfinite(u) && isfinite(v);
    if (valid) valid[o] = (ok && u >= 1.0f && u <= (float)(w - 2) && v >= 1.0f && v <= (float)(h - 2)) ? 1.0f : 0.0f;
    if (!ok) { u = 0.0f; v = 0.0f; }
    u = fminf(fmaxf(u, -1.0f), (float)w);
    v = fminf(fmaxf(v, -1.0f), (float)h);
    int qu = (int)rintf(u * 32.0f), qv = (int)rintf(v * 32.0f);  // 1/32 px, half to even
    int x0 = qu >> 5, y0 = qv >> 5;  // arithmetic shift: floor
    float a = (float)(qu & 31) * (1.0f / 32.0f), b = (float)(qv & 31) * (1.0f / 32.0f);
    float w00 = (1.0f - a) * (1.0f - b), w01 = a * (1.0f - b);
    float w10 = (1.0f - a) * b, w11 = a * b;
    int xa = clampi(x0, 0, w - 1), xb = clampi(x0 + 1, 0, w - 1);
    int ya = clampi(y0, 0, h - 1), yb = clampi(y0 + 1, 0, h - 1);
    const float* r0 = src + (size_t)ya * w * c;
    const float* r1 = src + (size_t)yb * w * c;
    float* out = dst + o * c;
    for (int k = 0; k < c; ++k) {
        float s0 = r0[xa * c + k] * w00 + r0[xb * c + k] * w01;
        float s1 = r1[xa * c + k] * w10 + r1[xb * c + k] * w11;
        out[k] = s0 + s1;
    }
}
DEBLURD_LAUNCHER(warp_map,
                 (const float* src, int w, int h, int c, const float* map, int mw, int mh,
                  double sx, double sy, float* dst, float* valid),
                 (src, w, h, c, map, mw, mh, sx, sy, dst, valid))
