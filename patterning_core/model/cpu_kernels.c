/* Fused float32 cross-entropy row kernels for the CPU (loaded by cpu_kernels.py).
 *
 * Every kernel works on one row of V logits at a time, in a buffer that stays in the L1
 * cache, so the [rows x V] logits never go through memory more than once per pass.
 * Compiled at first use with -O3 -march=native -fopenmp-simd: the loops over V vectorize
 * (AVX-512 or AVX2), including the exponential below. Measured against the PyTorch kernels
 * by benchmarks/custom_kernels.py.
 */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

/* e^x for x <= 0: Cody-Waite range reduction, degree-6 polynomial (the Cephes expf
 * coefficients), relative error below 2e-7; arguments below -87 give e^-87 ~ 1.6e-38,
 * which is zero at float precision once added to a sum that holds a 1. */
static inline float exp_nonpositive(float x) {
    x = x < -87.0f ? -87.0f : x;
    float n = (x * 1.44269504088896341f + 12582912.0f) - 12582912.0f; /* round(x / ln 2) */
    float r = x - n * 0.693359375f;
    r = r - n * -2.12194440e-4f;
    float p = 1.9875691500e-4f;
    p = p * r + 1.3981999507e-3f;
    p = p * r + 8.3334519073e-3f;
    p = p * r + 4.1665795894e-2f;
    p = p * r + 1.6666665459e-1f;
    p = p * r + 5.0000001201e-1f;
    p = p * r * r + r + 1.0f;
    int32_t bits = ((int32_t)n + 127) << 23; /* 2^n */
    float scale;
    memcpy(&scale, &bits, sizeof scale);
    return p * scale;
}

/* log sum_v e^row[v], two passes over the row (max, then the shifted sum). */
static inline float row_logsumexp(const float* row, int64_t V) {
    float m = -INFINITY;
#pragma omp simd reduction(max : m)
    for (int64_t v = 0; v < V; v++) m = row[v] > m ? row[v] : m;
    float total = 0.0f;
#pragma omp simd reduction(+ : total)
    for (int64_t v = 0; v < V; v++) total += exp_nonpositive(row[v] - m);
    return m + logf(total);
}

/* lse[i] = logsumexp(logits[i, :]), loss[i] = lse[i] - logits[i, target[i]]. */
void lse_rows(const float* logits, const int64_t* target, int64_t rows, int64_t V, float* lse,
              float* loss) {
    for (int64_t i = 0; i < rows; i++) {
        const float* row = logits + i * V;
        lse[i] = row_logsumexp(row, V);
        loss[i] = lse[i] - row[target[i]];
    }
}

/* In place: logits[i, v] <- grad[i] * (softmax(logits[i])[v] - [v == target[i]]). */
void softmax_grad_rows(float* logits, const float* lse, const int64_t* target,
                       const float* grad, int64_t rows, int64_t V) {
    for (int64_t i = 0; i < rows; i++) {
        float* row = logits + i * V;
        const float l = lse[i], g = grad[i];
#pragma omp simd
        for (int64_t v = 0; v < V; v++) row[v] = exp_nonpositive(row[v] - l) * g;
        row[target[i]] -= g;
    }
}

/* u[v] = A[v] + sum_k Z[k] C[k, v] + sum_k Z2[k] C2[k, v] for one row. */
static inline void lowrank_row(float* u, const float* A, const float* Z, const float* C,
                               int64_t K, const float* Z2, const float* C2, int64_t K2,
                               int64_t V) {
    memcpy(u, A, (size_t)V * sizeof(float));
    for (int64_t k = 0; k < K; k++) {
        const float* ck = C + k * V;
        const float zk = Z[k];
#pragma omp simd
        for (int64_t v = 0; v < V; v++) u[v] += zk * ck[v];
    }
    for (int64_t k = 0; k < K2; k++) {
        const float* ck = C2 + k * V;
        const float zk = Z2[k];
#pragma omp simd
        for (int64_t v = 0; v < V; v++) u[v] += zk * ck[v];
    }
}

/* Cross-entropy of logits[i, v] = s[i] * u[i, v] + c0[v], u = A + Z C + Z2 C2.
 * Shapes (row-major): A [N, V], Z [N, K], C [K, V], Z2 [N, K2], C2 [K2, V], s [N], c0 [V],
 * target [N]. Writes lse [N] and loss [N] = lse - logits[target]. Returns 0, or -1 if the
 * row buffer could not be allocated. */
int lowrank_loss_forward(const float* A, const float* Z, const float* C, int64_t K,
                          const float* Z2, const float* C2, int64_t K2, const float* s,
                          const float* c0, const int64_t* target, int64_t N, int64_t V,
                          float* lse, float* loss) {
    float* logits = malloc((size_t)V * sizeof(float));
    if (logits == NULL) return -1;
    for (int64_t i = 0; i < N; i++) {
        lowrank_row(logits, A + i * V, Z + i * K, C, K, Z2 + i * K2, C2, K2, V);
        const float si = s[i];
#pragma omp simd
        for (int64_t v = 0; v < V; v++) logits[v] = logits[v] * si + c0[v];
        lse[i] = row_logsumexp(logits, V);
        loss[i] = lse[i] - logits[target[i]];
    }
    free(logits);
    return 0;
}

/* Backward of lowrank_loss_forward for upstream gradient grad [N], with respect to Z, C and
 * s (A, Z2, C2, c0 are constants). With g[v] = grad[i] (softmax[v] - [v == target[i]]):
 * dZ[i, k] = s[i] sum_v g[v] C[k, v];  dC[k, v] += s[i] Z[i, k] g[v] (dC accumulates: zero
 * it first);  ds[i] = sum_v g[v] u[i, v]. Returns 0, or -1 if the row buffers could not
 * be allocated. */
int lowrank_loss_backward(const float* A, const float* Z, const float* C, int64_t K,
                           const float* Z2, const float* C2, int64_t K2, const float* s,
                           const float* c0, const int64_t* target, const float* lse,
                           const float* grad, int64_t N, int64_t V, float* dZ, float* dC,
                           float* ds) {
    float* u = malloc(2 * (size_t)V * sizeof(float));
    if (u == NULL) return -1;
    float* g = u + V;
    for (int64_t i = 0; i < N; i++) {
        lowrank_row(u, A + i * V, Z + i * K, C, K, Z2 + i * K2, C2, K2, V);
        const float si = s[i], li = lse[i], gi = grad[i];
#pragma omp simd
        for (int64_t v = 0; v < V; v++) g[v] = exp_nonpositive(u[v] * si + c0[v] - li) * gi;
        g[target[i]] -= gi;
        float dsi = 0.0f;
#pragma omp simd reduction(+ : dsi)
        for (int64_t v = 0; v < V; v++) dsi += g[v] * u[v];
        ds[i] = dsi;
        for (int64_t k = 0; k < K; k++) {
            const float* ck = C + k * V;
            float* dck = dC + k * V;
            const float w = si * Z[i * K + k];
            float acc = 0.0f;
#pragma omp simd reduction(+ : acc)
            for (int64_t v = 0; v < V; v++) {
                acc += g[v] * ck[v];
                dck[v] += w * g[v];
            }
            dZ[i * K + k] = si * acc;
        }
    }
    free(u);
    return 0;
}
