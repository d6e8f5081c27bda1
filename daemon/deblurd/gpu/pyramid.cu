// Gaussian pyramid (DESIGN §1 step 4: 1, 1/2, 1/4, 1/8), as deblurd.pipeline.pyramid:
// cv2.pyrDown (5-tap binomial [1 4 6 4 1] / 16 per axis, BORDER_REFLECT_101, output
// ((w + 1) / 2, (h + 1) / 2), even input pixels sampled) in float32 down to the tracking
// level, photometric normalisation to uint8 there, uint8 pyrDown above it. The float32
// base comes from the host, or from the uploaded uint8 frame (rgb8_to_gray).
#include "common.h"

// uint8 RGB (interleaved, as the camera delivers it) to float32 gray in [0, 1], as
// deblurd.imaging.to_gray: OpenCV's fixed-point cvtColor(RGB2GRAY),
// g = (R cr + G cg + B cb + 2^(shift - 1)) >> shift, then (float)g * scale with
// scale = float32(1 / 255). The coefficients come from the host, which has checked them
// against cv2 (deblurd.gpu.resident.opencv_gray_formula).
extern "C" __global__ void rgb8_to_gray(const unsigned char* rgb, int w, int h, int cr, int cg,
                                        int cb, int shift, float scale, float* gray) {
    int x = DEBLURD_X, y = DEBLURD_Y;
    if (x >= w || y >= h) return;
    size_t i = (size_t)y * w + x;
    const unsigned char* p = rgb + i * 3;
    int g = ((int)p[0] * cr + (int)p[1] * cg + (int)p[2] * cb + (1 << (shift - 1))) >> shift;
    gray[i] = (float)g * scale;
}
DEBLURD_LAUNCHER(rgb8_to_gray,
                 (const unsigned char* rgb, int w, int h, int cr, int cg, int cb, int shift,
                  float scale, float* gray),
                 (rgb, w, h, cr, cg, cb, shift, scale, gray))

// Float32 pyrDown: rows first, then columns, times 1/256 (OpenCV's FltCast<float, 8>).
extern "C" __global__ void pyr_down_f32(const float* src, int sw, int sh, float* dst, int dw,
                                        int dh) {
    int x = DEBLURD_X, y = DEBLURD_Y;
    if (x >= dw || y >= dh) return;
    int c0 = reflect101(2 * x - 2, sw), c1 = reflect101(2 * x - 1, sw), c2 = reflect101(2 * x, sw);
    int c3 = reflect101(2 * x + 1, sw), c4 = reflect101(2 * x + 2, sw);
    float r[5];
    for (int j = 0; j < 5; ++j) {
        const float* s = src + (size_t)reflect101(2 * y + j - 2, sh) * sw;
        r[j] = s[c0] + s[c4] + (s[c1] + s[c3]) * 4.0f + s[c2] * 6.0f;
    }
    dst[(size_t)y * dw + x] = (r[0] + r[4] + (r[1] + r[3]) * 4.0f + r[2] * 6.0f) * (1.0f / 256.0f);
}
DEBLURD_LAUNCHER(pyr_down_f32, (const float* src, int sw, int sh, float* dst, int dw, int dh),
                 (src, sw, sh, dst, dw, dh))

// uint8 pyrDown: integer sums, (sum + 128) >> 8 (OpenCV's FixPtCast<uchar, 8>).
extern "C" __global__ void pyr_down_u8(const unsigned char* src, int sw, int sh,
                                       unsigned char* dst, int dw, int dh) {
    int x = DEBLURD_X, y = DEBLURD_Y;
    if (x >= dw || y >= dh) return;
    int c0 = reflect101(2 * x - 2, sw), c1 = reflect101(2 * x - 1, sw), c2 = reflect101(2 * x, sw);
    int c3 = reflect101(2 * x + 1, sw), c4 = reflect101(2 * x + 2, sw);
    int r[5];
    for (int j = 0; j < 5; ++j) {
        const unsigned char* s = src + (size_t)reflect101(2 * y + j - 2, sh) * sw;
        r[j] = s[c0] + s[c4] + (s[c1] + s[c3]) * 4 + s[c2] * 6;
    }
    int v = r[0] + r[4] + (r[1] + r[3]) * 4 + r[2] * 6;
    dst[(size_t)y * dw + x] = (unsigned char)((v + 128) >> 8);
}
DEBLURD_LAUNCHER(pyr_down_u8,
                 (const unsigned char* src, int sw, int sh, unsigned char* dst, int dw, int dh),
                 (src, sw, sh, dst, dw, dh))

// Base level: v = img * gain + offset (two float32 roundings, as numpy), negatives to 0
// (cv2.threshold TOZERO), then round-to-even and saturate of v * 255 (cv2.convertScaleAbs).
extern "C" __global__ void normalize_u8(const float* img, int w, int h, const float* params,
                                        unsigned char* out) {
    int x = DEBLURD_X, y = DEBLURD_Y;
    if (x >= w || y >= h) return;
    size_t i = (size_t)y * w + x;
    float v = img[i] * params[0];
    v = v + params[1];
    v = v > 0.0f ? v : 0.0f;
    int q = __float2int_rn(v * 255.0f);
    out[i] = (unsigned char)(q < 0 ? 0 : (q > 255 ? 255 : q));
}
DEBLURD_LAUNCHER(normalize_u8,
                 (const float* img, int w, int h, const float* params, unsigned char* out),
                 (img, w, h, params, out))
