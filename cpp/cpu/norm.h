// Layer normalization over the last dimension.
//
// Sizes: N rows (every leading dimension flattened), C channels.
// Forward saves exactly what backward needs: the per-row mean and reciprocal
// standard deviation (rstd = 1/sqrt(var + eps), biased variance, as torch).
// weight and bias may be null (no affine transform). Backward RETURNS fresh
// gradients (it writes, never accumulates).
//
// Determinism: each row is reduced by one thread; dweight/dbias are reduced over
// rows in fixed chunks of layernorm_rows_per_chunk(N) rows (a partition that does
// not depend on the thread count), the chunk partials then summed in chunk order,
// so any number of threads gives bitwise the same result.
#pragma once

#include <cstdint>

namespace femtogpt::cpu {

constexpr int64_t kLayerNormRowsPerChunk = 64;
constexpr int64_t kLayerNormMaxChunks = 256;

// Rows per chunk of the dweight/dbias reduction: a function of N alone (never of
// the thread count), at least 64 rows, and at most 256 chunks so that the scratch
// of partial sums stays at 2 * 256 * C values however many rows there are.
inline int64_t layernorm_rows_per_chunk(int64_t N) {
    const int64_t spread = (N + kLayerNormMaxChunks - 1) / kLayerNormMaxChunks;
    return spread > kLayerNormRowsPerChunk ? spread : kLayerNormRowsPerChunk;
}

// dweight (C), dbias (C) (either may be null) <- the backward's per-chunk partial sums: chunk k's
// dweight partials at part + k*stride, its dbias partials `offset` further; each column summed
// over the chunks in chunk order (shared by every ISA's backward).
template <typename T>
void sum_chunk_partials(T* dweight, T* dbias, const T* part, int64_t nchunks, int64_t C, int64_t stride,
                        int64_t offset) {
    if (!dweight && !dbias) return;
#pragma omp parallel for schedule(static) if (nchunks * C > 32768)
    for (int64_t c = 0; c < C; c++) {
        T w = 0, b = 0;
        for (int64_t k = 0; k < nchunks; k++) {
            w += part[k * stride + c];
            b += part[k * stride + offset + c];
        }
        if (dweight) dweight[c] = w;
        if (dbias) dbias[c] = b;
    }
}

// out (N,C), mean (N), rstd (N) <- x (N,C), weight (C) | null, bias (C) | null
template <typename T>
void layernorm_forward(T* out, T* mean, T* rstd, const T* x, const T* weight, const T* bias, int64_t N, int64_t C,
                       double eps);
template <typename T>
void layernorm_forward_reference(T* out, T* mean, T* rstd, const T* x, const T* weight, const T* bias, int64_t N,
                                 int64_t C, double eps);

// dx (N,C), dweight (C) | null, dbias (C) | null <- dout (N,C), x (N,C), weight (C) | null, mean (N), rstd (N)
// dweight and dbias may each be null (not wanted); dweight = sum over rows of dout * xhat, dbias = sum of dout.
template <typename T>
void layernorm_backward(T* dx, T* dweight, T* dbias, const T* dout, const T* x, const T* weight, const T* mean,
                        const T* rstd, int64_t N, int64_t C);
template <typename T>
void layernorm_backward_reference(T* dx, T* dweight, T* dbias, const T* dout, const T* x, const T* weight,
                                  const T* mean, const T* rstd, int64_t N, int64_t C);

// AVX2+FMA float32 kernels (norm_avx2.cpp); same contract as the generic ones.
void layernorm_forward_avx2(float* out, float* mean, float* rstd, const float* x, const float* weight,
                            const float* bias, int64_t N, int64_t C, double eps);
void layernorm_backward_avx2(float* dx, float* dweight, float* dbias, const float* dout, const float* x,
                             const float* weight, const float* mean, const float* rstd, int64_t N, int64_t C);

// AVX-512 float32 kernels (norm_avx512.cpp); same contract.
void layernorm_forward_avx512(float* out, float* mean, float* rstd, const float* x, const float* weight,
                              const float* bias, int64_t N, int64_t C, double eps);
void layernorm_backward_avx512(float* dx, float* dweight, float* dbias, const float* dout, const float* x,
                               const float* weight, const float* mean, const float* rstd, int64_t N, int64_t C);

}  // namespace femtogpt::cpu
