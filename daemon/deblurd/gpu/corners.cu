// Harris corners that persist across pyramid levels (deblurd.pipeline.corners):
// cv2.cornerHarris(img, blockSize=3, ksize=3, k) on uint8 levels, square non-maximum
// suppression, and the cross-level persistence test. The host picks, spreads and refines
// the (few hundred) survivors.
#include "common.h"

// 3x3 Sobel at (x, y) with BORDER_REFLECT_101 taps, times `scale`.
__device__ __forceinline__ void sobel3(const unsigned char* img, int w, int h, int x, int y,
                                       float scale, float* gx, float* gy) {
    int xm = reflect101(x - 1, w), xp = reflect101(x + 1, w);
    int ym = reflect101(y - 1, h), yp = reflect101(y + 1, h);
    const unsigned char* r0 = img + (size_t)ym * w;
    const unsigned char* r1 = img + (size_t)y * w;
    const unsigned char* r2 = img + (size_t)yp * w;
    int dx = (r0[xp] - r0[xm]) + 2 * (r1[xp] - r1[xm]) + (r2[xp] - r2[xm]);
    int dy = (r2[xm] + 2 * r2[x] + r2[xp]) - (r0[xm] + 2 * r0[x] + r0[xp]);
    *gx = (float)dx * scale;
    *gy = (float)dy * scale;
}

// Harris response: gradients scaled by 1 / (4 * 3 * 255) as OpenCV does for uint8 input
// (`scale`), a 3x3 unnormalised box sum of (gx², gx gy, gy²) with BORDER_REFLECT_101 on
// the products, R = a c - b² - k (a + c)².
extern "C" __global__ void harris_response(const unsigned char* img, int w, int h, float k,
                                           float scale, float* out) {
    int x = DEBLURD_X, y = DEBLURD_Y;
    if (x >= w || y >= h) return;
    float a = 0.0f, b = 0.0f, c = 0.0f;
    for (int dy = -1; dy <= 1; ++dy) {
        int yy = reflect101(y + dy, h);
        for (int dx = -1; dx <= 1; ++dx) {
            float gx, gy;
            sobel3(img, w, h, reflect101(x + dx, w), yy, scale, &gx, &gy);
            a += gx * gx;
            b += gx * gy;
            c += gy * gy;
        }
    }
    float t = a + c;
    out[(size_t)y * w + x] = a * c - b * b - k * t * t;
}
DEBLURD_LAUNCHER(harris_response,
                 (const unsigned char* img, int w, int h, float k, float scale, float* out),
                 (img, w, h, k, scale, out))

// Square non-maximum suppression (cv2.dilate: the window is clipped at the border):
// a pixel is a corner when it is >= every response within `radius`, > thr[0], and at
// least `margin` pixels from the border. strength = its response for corners, else 0
// (responses of corners are > thr >= 0). flags (may be null) = 1 for corners, else 0.
extern "C" __global__ void harris_nms(const float* resp, int w, int h, const float* thr,
                                      int radius, int margin, float* strength,
                                      unsigned char* flags) {
    int x = DEBLURD_X, y = DEBLURD_Y;
    if (x >= w || y >= h) return;
    size_t i = (size_t)y * w + x;
    float v = resp[i];
    bool keep = v > thr[0] && x >= margin && x < w - margin && y >= margin && y < h - margin;
    if (keep) {
        int x0 = x - radius < 0 ? 0 : x - radius, x1 = x + radius > w - 1 ? w - 1 : x + radius;
        int y0 = y - radius < 0 ? 0 : y - radius, y1 = y + radius > h - 1 ? h - 1 : y + radius;
        for (int yy = y0; yy <= y1 && keep; ++yy) {
            const float* row = resp + (size_t)yy * w;
            for (int xx = x0; xx <= x1; ++xx) {
                if (row[xx] > v) {
                    keep = false;
                    break;
                }
            }
        }
    }
    if (strength) strength[i] = keep ? v : 0.0f;
    if (flags) flags[i] = keep ? 1 : 0;
}
DEBLURD_LAUNCHER(harris_nms,
                 (const float* resp, int w, int h, const float* thr, int radius, int margin,
                  float* strength, unsigned char* flags),
                 (resp, w, h, thr, radius, margin, strength, flags))

// Persistence, level k (1, 2, ... in turn): a base-level corner (strength > 0) confirmed
// by levels 1..k-1 (depth == k - 1) is confirmed by level k when a corner of that level
// (`coarse`, flags, null when the level has none) lies within `radius` of p / scale,
// measured from the nearest integer pixel out (corners.persists). depth is written for
// every pixel at k == 1 (0 or 1) and only raised afterwards.
extern "C" __global__ void persist_level(const float* strength, int w, int h, int k,
                                         const unsigned char* coarse, int cw, int ch,
                                         float scale, double radius, unsigned char* depth) {
    int x = DEBLURD_X, y = DEBLURD_Y;
    if (x >= w || y >= h) return;
    size_t i = (size_t)y * w + x;
    if (k == 1) depth[i] = 0;
    if (strength[i] <= 0.0f || depth[i] != k - 1 || coarse == 0) return;
    double qx = (double)x / (double)scale, qy = (double)y / (double)scale;
    int ix = (int)rint(qx), iy = (int)rint(qy);
    int reach = (int)ceil(radius + 0.5);
    for (int dy = -reach; dy <= reach; ++dy) {
        int yy = iy + dy;
        if (yy < 0 || yy >= ch) continue;
        for (int dx = -reach; dx <= reach; ++dx) {
            int xx = ix + dx;
            if (xx < 0 || xx >= cw) continue;
            double ex = xx - qx, ey = yy - qy;
            if (ex * ex + ey * ey <= radius * radius && coarse[(size_t)yy * cw + xx]) {
                depth[i] = (unsigned char)k;
                return;
            }
        }
    }
}
DEBLURD_LAUNCHER(persist_level,
                 (const float* strength, int w, int h, int k, const unsigned char* coarse,
                  int cw, int ch, float scale, double radius, unsigned char* depth),
                 (strength, w, h, k, coarse, cw, ch, scale, radius, depth))
