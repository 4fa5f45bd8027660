// Layer normalization on AVX-512 (F), float32: norm_avx2.cpp's algorithm (two-pass
// mean/variance per row, the mean taken over deviations from the row's first element;
// backward in fixed row chunks) with 16-lane vectors and mask registers for the tails.
// Keep the two files alike. Each row is still reduced by one thread in a fixed order.
//
// Rows go four at a time: a row of a GPT's width is a few vectors, and its horizontal sums,
// square root and division form one chain of dependent latencies; four independent chains
// interleaved keep the vector units busy. Femto's (2048, 64) on 2 threads, warm data:
// forward 34 -> 16 us, backward 37 -> 22 us against the AVX2 kernels (one row at a time,
// 8 lanes); in a training step, where the rows come from memory, about a third of that.
#include <immintrin.h>

#include <algorithm>
#include <cmath>

#include "cpu/norm.h"
#include "cpu/vecmath_avx512.h"
#include "parallel.h"
#include "pool.h"

namespace femtogpt::cpu {

namespace {

constexpr int64_t kParallelElems = 32768;
constexpr int kW = 16;

// Lanes [c, c + 16) of p, the lanes at or past C loaded as 0.
inline __m512 load(const float* p, int64_t c, int64_t C) {
    return c + kW <= C ? _mm512_loadu_ps(p + c) : _mm512_maskz_loadu_ps(avx512::tail_mask(C - c), p + c);
}
inline void store(float* p, int64_t c, int64_t C, __m512 v) {
    if (c + kW <= C)
        _mm512_storeu_ps(p + c, v);
    else
        _mm512_mask_storeu_ps(p + c, avx512::tail_mask(C - c), v);
}

// The mean and 1/sqrt(var + eps) of NR rows of C floats (stride C), side by side.
template <int NR>
inline void row_stats(const float* x, int64_t C, float eps, float* m, float* s) {
    __m512 acc[NR];
    float x0[NR];
    for (int r = 0; r < NR; r++) acc[r] = _mm512_setzero_ps(), x0[r] = x[r * C];
    for (int64_t c = 0; c < C; c += kW) {
        const __mmask16 k = c + kW <= C ? __mmask16(0xFFFF) : avx512::tail_mask(C - c);
        for (int r = 0; r < NR; r++)  // masked lanes add nothing
            acc[r] = _mm512_mask_add_ps(acc[r], k, acc[r], _mm512_sub_ps(load(x + r * C, c, C), _mm512_set1_ps(x0[r])));
    }
    __m512 vm[NR];
    for (int r = 0; r < NR; r++) {
        m[r] = x0[r] + _mm512_reduce_add_ps(acc[r]) / float(C);
        vm[r] = _mm512_set1_ps(m[r]);
        acc[r] = _mm512_setzero_ps();
    }
    for (int64_t c = 0; c < C; c += kW) {
        const __mmask16 k = c + kW <= C ? __mmask16(0xFFFF) : avx512::tail_mask(C - c);
        for (int r = 0; r < NR; r++) {
            const __m512 d = _mm512_maskz_sub_ps(k, load(x + r * C, c, C), vm[r]);
            acc[r] = _mm512_fmadd_ps(d, d, acc[r]);
        }
    }
    for (int r = 0; r < NR; r++) s[r] = 1.0f / std::sqrt(_mm512_reduce_add_ps(acc[r]) / float(C) + eps);
}

// out = (x - m) * s * w + b for NR rows; the missing affine parts are 1 and 0.
template <int NR>
inline void row_out(float* out, const float* x, const float* weight, const float* bias, int64_t C, const float* m,
                    const float* s) {
    for (int64_t c = 0; c < C; c += kW) {
        const __m512 w = weight ? load(weight, c, C) : _mm512_set1_ps(1.0f);
        const __m512 b = bias ? load(bias, c, C) : _mm512_setzero_ps();
        for (int r = 0; r < NR; r++) {
            const __m512 y = _mm512_mul_ps(_mm512_sub_ps(load(x + r * C, c, C), _mm512_set1_ps(m[r])),
                                           _mm512_set1_ps(s[r]));
            store(out + r * C, c, C, weight ? _mm512_fmadd_ps(y, w, b) : _mm512_add_ps(y, b));
        }
    }
}

template <int NR>
inline void rows(float* out, float* mean, float* rstd, const float* x, const float* weight, const float* bias,
                 int64_t n, int64_t C, double eps) {
    row_stats<NR>(x + n * C, C, float(eps), mean + n, rstd + n);
    row_out<NR>(out + n * C, x + n * C, weight, bias, C, mean + n, rstd + n);
}

// Backward for NR rows starting at row n: dx = rstd * (dxhat - a - xhat * b) with dxhat =
// dout * w, a = mean(dxhat), b = mean(dxhat * xhat); the chunk's partial sums pw += dout *
// xhat and pb += dout take the rows in order. dx may be dout: each element is read before
// it is written.
template <int NR>
inline void rows_backward(float* dx, float* pw, float* pb, const float* dout, const float* x, const float* weight,
                          const float* mean, const float* rstd, int64_t n, int64_t C) {
    __m512 va[NR], vb[NR], vm[NR], vs[NR];
    for (int r = 0; r < NR; r++) {
        va[r] = vb[r] = _mm512_setzero_ps();
        vm[r] = _mm512_set1_ps(mean[n + r]), vs[r] = _mm512_set1_ps(rstd[n + r]);
    }
    const float* xr = x + n * C;
    const float* gr = dout + n * C;
    for (int64_t c = 0; c < C; c += kW) {  // masked lanes load 0 for g: they add nothing
        const __m512 w = weight ? load(weight, c, C) : _mm512_set1_ps(1.0f);
        __m512 sw = _mm512_load_ps(pw + c), sb = _mm512_load_ps(pb + c);
        for (int r = 0; r < NR; r++) {
            const __m512 g = load(gr + r * C, c, C);
            const __m512 xhat = _mm512_mul_ps(_mm512_sub_ps(load(xr + r * C, c, C), vm[r]), vs[r]);
            const __m512 dxhat = _mm512_mul_ps(g, w);
            va[r] = _mm512_add_ps(va[r], dxhat);
            vb[r] = _mm512_fmadd_ps(dxhat, xhat, vb[r]);
            sw = _mm512_fmadd_ps(g, xhat, sw);
            sb = _mm512_add_ps(g, sb);
        }
        _mm512_store_ps(pw + c, sw);
        _mm512_store_ps(pb + c, sb);
    }
    for (int r = 0; r < NR; r++) {
        va[r] = _mm512_set1_ps(_mm512_reduce_add_ps(va[r]) / float(C));
        vb[r] = _mm512_set1_ps(_mm512_reduce_add_ps(vb[r]) / float(C));
    }
    for (int64_t c = 0; c < C; c += kW) {
        const __m512 w = weight ? load(weight, c, C) : _mm512_set1_ps(1.0f);
        for (int r = 0; r < NR; r++) {
            const __m512 g = load(gr + r * C, c, C);
            const __m512 xhat = _mm512_mul_ps(_mm512_sub_ps(load(xr + r * C, c, C), vm[r]), vs[r]);
            const __m512 dxhat = _mm512_mul_ps(g, w);
            const __m512 d = _mm512_mul_ps(vs[r], _mm512_fnmadd_ps(xhat, vb[r], _mm512_sub_ps(dxhat, va[r])));
            store(dx + (n + r) * C, c, C, d);
        }
    }
}

}  // namespace

// out (N,C), mean (N), rstd (N) <- x (N,C), weight (C) | null, bias (C) | null
void layernorm_forward_avx512(float* out, float* mean, float* rstd, const float* x, const float* weight,
                              const float* bias, int64_t N, int64_t C, double eps) {
    constexpr int64_t R = 4;
#pragma omp parallel for schedule(static) if (N * C > kParallelElems)
    for (int64_t i = 0; i < (N + R - 1) / R; i++) {
        const int64_t n = R * i;
        switch (std::min(R, N - n)) {
            case 4: rows<4>(out, mean, rstd, x, weight, bias, n, C, eps); break;
            case 3: rows<3>(out, mean, rstd, x, weight, bias, n, C, eps); break;
            case 2: rows<2>(out, mean, rstd, x, weight, bias, n, C, eps); break;
            default: rows<1>(out, mean, rstd, x, weight, bias, n, C, eps); break;
        }
    }
}

}  // namespace femtogpt::cpu

namespace femtogpt::cpu {

// dx (N,C), dweight (C) | null, dbias (C) | null <- dout (N,C), x (N,C), weight (C) | null, mean (N), rstd (N)
void layernorm_backward_avx512(float* dx, float* dweight, float* dbias, const float* dout, const float* x,
                               const float* weight, const float* mean, const float* rstd, int64_t N, int64_t C) {
    const int64_t R = layernorm_rows_per_chunk(N);
    const int64_t nchunks = (N + R - 1) / R;
    // (nchunks, 2, Cp) partial sums of dweight, dbias; Cp = C rounded up to 16 so rows stay aligned
    const int64_t Cp = (C + kW - 1) / kW * kW;
    PoolBuffer scratch(size_t(nchunks) * 2 * size_t(Cp) * sizeof(float));
    float* part = scratch.data<float>();
#pragma omp parallel for schedule(static) if (N * C > kParallelElems)
    for (int64_t k = 0; k < nchunks; k++) {
        float* pw = part + k * 2 * Cp;
        float* pb = pw + Cp;
        std::fill(pw, pw + 2 * Cp, 0.0f);
        const int64_t end = std::min(N, (k + 1) * R);
        for (int64_t n = k * R; n < end; n += 4) {
            switch (std::min<int64_t>(4, end - n)) {
                case 4: rows_backward<4>(dx, pw, pb, dout, x, weight, mean, rstd, n, C); break;
                case 3: rows_backward<3>(dx, pw, pb, dout, x, weight, mean, rstd, n, C); break;
                case 2: rows_backward<2>(dx, pw, pb, dout, x, weight, mean, rstd, n, C); break;
                default: rows_backward<1>(dx, pw, pb, dout, x, weight, mean, rstd, n, C); break;
            }
        }
    }
    sum_chunk_partials(dweight, dbias, part, nchunks, C, 2 * Cp, Cp);
}

}  // namespace femtogpt::cpu
