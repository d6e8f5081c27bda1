// Reductions without atomics or shared memory: one thread per row writes a partial
// result, then one thread (or the host) combines the rows. Rows are few (<= 4000), so
// the second step costs microseconds, and the result does not depend on thread order.
#include "common.h"

// Sum and sum of squares (float64) of every `step`-th pixel of every `step`-th row:
// out[2 r], out[2 r + 1] for sample row r = y / step (numpy's img[::step, ::step]).
extern "C" __global__ void sample_row_stats(const float* img, int w, int h, int step,
                                            double* out) {
    int r = DEBLURD_X;
    int rows = (h + step - 1) / step;
    if (r >= rows) return;
    const float* row = img + (size_t)r * step * w;
    double s = 0.0, ss = 0.0;
    for (int x = 0; x < w; x += step) {
        double v = (double)row[x];
        s += v;
        ss += v * v;
    }
    out[2 * r] = s;
    out[2 * r + 1] = ss;
}
DEBLURD_LAUNCHER(sample_row_stats, (const float* img, int w, int h, int step, double* out),
                 (img, w, h, step, out))

// One thread: the photometric normalisation of the pyramid's base level from the row
// statistics (PyramidBuilder: gain = min(norm_std / max(std, 1e-6), max_gain),
// offset = norm_mean - gain * mean). params[0] = gain, params[1] = offset (float32).
extern "C" __global__ void norm_params(const double* stats, int rows, double count,
                                       double norm_mean, double norm_std, double max_gain,
                                       float* params) {
    if (DEBLURD_X != 0) return;
    double s = 0.0, ss = 0.0;
    for (int r = 0; r < rows; ++r) {
        s += stats[2 * r];
        ss += stats[2 * r + 1];
    }
    double mean = s / count;
    double var = ss / count - mean * mean;
    double sd = sqrt(var > 0.0 ? var : 0.0);
    double gain = norm_std / (sd > 1e-6 ? sd : 1e-6);
    if (gain > max_gain) gain = max_gain;
    params[0] = (float)gain;
    params[1] = (float)(norm_mean - gain * mean);
}
DEBLURD_LAUNCHER(norm_params,
                 (const double* stats, int rows, double count, double norm_mean,
                  double norm_std, double max_gain, float* params),
                 (stats, rows, count, norm_mean, norm_std, max_gain, params))

// Largest value of each row: out[y].
extern "C" __global__ void row_max(const float* img, int w, int h, float* out) {
    int y = DEBLURD_X;
    if (y >= h) return;
    const float* row = img + (size_t)y * w;
    float m = row[0];
    for (int x = 1; x < w; ++x) m = row[x] > m ? row[x] : m;
    out[y] = m;
}
DEBLURD_LAUNCHER(row_max, (const float* img, int w, int h, float* out), (img, w, h, out))

// One thread: Harris threshold = float32(quality * max(max response, 0)) (corners.py).
extern "C" __global__ void harris_threshold(const float* rowmax, int h, double quality,
                                            float* thr) {
    if (DEBLURD_X != 0) return;
    float m = rowmax[0];
    for (int y = 1; y < h; ++y) m = rowmax[y] > m ? rowmax[y] : m;
    double mm = (double)m > 0.0 ? (double)m : 0.0;
    thr[0] = (float)(quality * mm);
    thr[1] = m;  // the largest response itself (the host checks threshold < max)
}
DEBLURD_LAUNCHER(harris_threshold, (const float* rowmax, int h, double quality, float* thr),
                 (rowmax, h, quality, thr))

// Sum (float64) of each row: out[y].
extern "C" __global__ void row_sums(const float* img, int w, int h, double* out) {
    int y = DEBLURD_X;
    if (y >= h) return;
    const float* row = img + (size_t)y * w;
    double s = 0.0;
    for (int x = 0; x < w; ++x) s += (double)row[x];
    out[y] = s;
}
DEBLURD_LAUNCHER(row_sums, (const float* img, int w, int h, double* out), (img, w, h, out))
