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
