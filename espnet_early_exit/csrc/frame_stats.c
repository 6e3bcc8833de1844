/*
 * Per-frame softmax statistics of CTC logits in one pass over the logits (CPU, float32).
 *
 * For every row z (V logits) of an (N, V) row-major array it writes
 *   max[n]       = max_v z(v)
 *   log_sum[n]   = log sum_v exp(z(v) - max)          (= -log of the largest posterior)
 *   mean_shift[n]= sum_v p(v) (z(v) - max)            (p = softmax(z); <= 0)
 *   argmax[n]    = the first v with z(v) = max
 * from which the frame entropy is log_sum - mean_shift, the largest posterior exp(-log_sum)
 * and the greedy CTC token argmax: what the entropy and max_posterior exit policies and the
 * greedy search need, without the (N, V) softmax that torch would write and read back.
 *
 * exp(d) is computed for d = z - max clamped to [-87, 0] (so no result is subnormal, whose
 * arithmetic is slow, and -inf logits need no special case); a clamped term is below 1.7e-38,
 * so it changes neither sum at float precision. A NaN logit makes log_sum and mean_shift NaN;
 * the count of such rows is returned (the caller then falls back to torch). Rows are split over the OpenMP threads of the
 * calling process (torch's runtime, libgomp.so.1, when torch is loaded first).
 *
 * Build: see espnet_early_exit/frame_stats.py (python -m espnet_early_exit.frame_stats build).
 */
#include <math.h>
#include <stdint.h>
#include <string.h>

#define BLOCK 64

#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
#define MULTIVERSION __attribute__((target_clones("avx512f", "avx2", "default")))
#else
#define MULTIVERSION
#endif

/* exp(d) for d in [-87, 0]: 2^n * exp(r), n = round(d / ln 2), |r| <= ln 2 / 2, exp(r) by its
 * Taylor polynomial of degree 7 (remainder < 6e-9 relative); branch-free so loops vectorize. */
static inline float exp_nonpositive(float d) {
    const float log2e = 1.44269504088896341f;
    const float ln2_hi = 0.693145751953125f;  /* ln 2 split so that n * ln2_hi is exact */
    const float ln2_lo = 1.42860682030941723e-6f;
    float n = floorf(d * log2e + 0.5f);
    float r = (d - n * ln2_hi) - n * ln2_lo;
    float p = 1.0f / 5040.0f;
    p = p * r + 1.0f / 720.0f;
    p = p * r + 1.0f / 120.0f;
    p = p * r + 1.0f / 24.0f;
    p = p * r + 1.0f / 6.0f;
    p = p * r + 0.5f;
    p = p * r + 1.0f;
    p = p * r + 1.0f;
    int32_t bits = ((int32_t)n + 127) << 23; /* 2^n, n in [-126, 0] */
    float scale;
    memcpy(&scale, &bits, sizeof scale);
    return p * scale;
}

MULTIVERSION
static void row_stats(const float *z, int64_t V, float *out_max, float *out_log_sum,
                      float *out_mean_shift, int64_t *out_argmax) {
    /* pass 1: the maximum, block by block, remembering the first block that reaches it */
    float m = -INFINITY;
    int64_t first_block = 0;
    for (int64_t b = 0; b < V; b += BLOCK) {
        int64_t n = V - b < BLOCK ? V - b : BLOCK;
        float bm = -INFINITY;
#pragma omp simd reduction(max : bm)
        for (int64_t i = 0; i < n; i++) bm = z[b + i] > bm ? z[b + i] : bm;
        if (bm > m) {
            m = bm;
            first_block = b;
        }
    }
    int64_t arg = first_block;
    int64_t end = first_block + BLOCK < V ? first_block + BLOCK : V;
    for (int64_t i = first_block; i < end; i++) {
        if (z[i] == m) {
            arg = i;
            break;
        }
    }
    /* pass 2 (the row is in cache now): sum of exp(z - m) and of exp(z - m) (z - m) */
    float s = 0.0f, t = 0.0f;
#pragma omp simd reduction(+ : s, t)
    for (int64_t v = 0; v < V; v++) {
        float d = z[v] - m;
        d = d < -87.0f ? -87.0f : d; /* NaN stays NaN */
        float e = exp_nonpositive(d);
        s += e;
        t += e * d;
    }
    *out_max = m;
    *out_log_sum = logf(s);
    *out_mean_shift = t / s;
    *out_argmax = arg;
}

/* Statistics of the n_rows rows of z (n_rows x V, row-major), using up to n_threads threads.
 * Returns the number of rows whose log_sum or mean_shift is not finite (NaN or inf logits). */
int64_t eee_frame_stats(const float *z, int64_t n_rows, int64_t V, float *out_max,
                        float *out_log_sum, float *out_mean_shift, int64_t *out_argmax,
                        int n_threads) {
    int64_t bad = 0;
    if (n_threads < 1 || n_rows < 16) n_threads = 1;
#pragma omp parallel for num_threads(n_threads) schedule(static) reduction(+ : bad)
    for (int64_t r = 0; r < n_rows; r++) {
        row_stats(z + r * V, V, out_max + r, out_log_sum + r, out_mean_shift + r, out_argmax + r);
        bad += !(isfinite(out_log_sum[r]) && isfinite(out_mean_shift[r]));
    }
    return bad;
}
