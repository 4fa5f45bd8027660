// AVX2+FMA float32 kernels of cached inference (contracts in infer.h).
//
// linear_rows: inner-product form. A tile of MB rows of x and NB rows of w keeps MB*NB
// accumulators of 8 lanes; lane l sums k = l mod 8 in order, then a fixed horizontal sum,
// then the k tail in order (explicit FMAs): the same sequence for every tile shape, so a
// row's result never depends on the rows beside it. Output columns go outermost (a block
// of NB weight rows stays in L1 while every row of x passes over it): weights, the large
// operand, stream from memory once per call.
#include <cmath>

#include "cpu/infer.h"

#if defined(__AVX2__) && defined(__FMA__)
#include "cpu/vecmath_avx2.h"

namespace femtogpt::cpu {

namespace {

// out (MB, NB) at columns n.. <- x (MB,K), w rows n..n+NB-1
template <int MB, int NB>
inline void linear_tile(float* out, int64_t ldo, const float* x, int64_t ldx, const float* w, const float* bias,
                        int64_t n, int64_t K, bool accumulate) {
    __m256 acc[MB][NB];
#pragma GCC unroll 4
    for (int i = 0; i < MB; i++)
#pragma GCC unroll 8
        for (int j = 0; j < NB; j++) acc[i][j] = _mm256_setzero_ps();
    const float* wn = w + n * K;
    int64_t k = 0;
    for (; k + 8 <= K; k += 8) {
        __m256 wv[NB];
#pragma GCC unroll 8
        for (int j = 0; j < NB; j++) wv[j] = _mm256_loadu_ps(wn + j * K + k);
#pragma GCC unroll 4
        for (int i = 0; i < MB; i++) {
            const __m256 xv = _mm256_loadu_ps(x + i * ldx + k);
#pragma GCC unroll 8
            for (int j = 0; j < NB; j++) acc[i][j] = _mm256_fmadd_ps(xv, wv[j], acc[i][j]);
        }
    }
#pragma GCC unroll 4
    for (int i = 0; i < MB; i++)
#pragma GCC unroll 8
        for (int j = 0; j < NB; j++) {
            float s = avx2::hsum_ps(acc[i][j]);
            for (int64_t kk = k; kk < K; kk++) s = std::fma(x[i * ldx + kk], wn[j * K + kk], s);
            if (bias) s += bias[n + j];
            float& o = out[i * ldo + n + j];
            o = accumulate ? o + s : s;
        }
}

template <int NB>
inline void linear_block(float* out, int64_t ldo, const float* x, int64_t ldx, const float* w, const float* bias,
                         int64_t M, int64_t n, int64_t K, bool accumulate) {
    int64_t m = 0;
    for (; m + 3 <= M; m += 3) linear_tile<3, NB>(out + m * ldo, ldo, x + m * ldx, ldx, w, bias, n, K, accumulate);
    if (M - m == 2) linear_tile<2, NB>(out + m * ldo, ldo, x + m * ldx, ldx, w, bias, n, K, accumulate);
    if (M - m == 1) linear_tile<1, NB>(out + m * ldo, ldo, x + m * ldx, ldx, w, bias, n, K, accumulate);
}

// out (D) <- scratch (tk) probabilities (unnormalized), v (tk,D); divides by z.
template <int NCH>
inline void weighted_sum(float* out, const float* p, const float* v, int64_t tk, int64_t D, float inv_z) {
    __m256 acc[NCH];
#pragma GCC unroll 8
    for (int c = 0; c < NCH; c++) acc[c] = _mm256_setzero_ps();
    for (int64_t t = 0; t < tk; t++) {
        const __m256 pt = _mm256_broadcast_ss(p + t);
        const float* vt = v + t * D;
#pragma GCC unroll 8
        for (int c = 0; c < NCH; c++) acc[c] = _mm256_fmadd_ps(pt, _mm256_loadu_ps(vt + 8 * c), acc[c]);
    }
    const __m256 s = _mm256_set1_ps(inv_z);
#pragma GCC unroll 8
    for (int c = 0; c < NCH; c++) _mm256_storeu_ps(out + 8 * c, _mm256_mul_ps(acc[c], s));
}

}  // namespace

void linear_rows_avx2(float* out, int64_t ldo, const float* x, int64_t ldx, const float* w, const float* bias,
                      int64_t M, int64_t n0, int64_t n1, int64_t K, bool accumulate) {
    int64_t n = n0;
    if (M == 1) {
        for (; n + 8 <= n1; n += 8) linear_tile<1, 8>(out, ldo, x, ldx, w, bias, n, K, accumulate);
    } else {
        for (; n + 4 <= n1; n += 4) linear_block<4>(out, ldo, x, ldx, w, bias, M, n, K, accumulate);
    }
    for (; n < n1; n++) linear_block<1>(out, ldo, x, ldx, w, bias, M, n, K, accumulate);
}

void attention_cached_avx2(float* out, int64_t ldo, const float* q, int64_t ldq, const float* k, const float* v,
                           int64_t past, int64_t n, int64_t D, float scale, float* scratch) {
    const int64_t D8 = D / 8 * 8;
    for (int64_t i = 0; i < n; i++) {
        const int64_t tk = past + i + 1;
        const float* qi = q + i * ldq;
        float* o = out + i * ldo;
        // scores, and their max
        float mx = -INFINITY;
        for (int64_t t = 0; t < tk; t++) {
            const float* kt = k + t * D;
            __m256 acc = _mm256_setzero_ps();
            for (int64_t j = 0; j < D8; j += 8) acc = _mm256_fmadd_ps(_mm256_loadu_ps(qi + j), _mm256_loadu_ps(kt + j), acc);
            float s = avx2::hsum_ps(acc);
            for (int64_t j = D8; j < D; j++) s = std::fma(qi[j], kt[j], s);
            s *= scale;
            scratch[t] = s;
            mx = s > mx ? s : mx;
        }
        // p = exp(s - max), z = sum p
        const __m256 vmx = _mm256_set1_ps(mx);
        __m256 zacc = _mm256_setzero_ps();
        int64_t t = 0;
        for (; t + 8 <= tk; t += 8) {
            const __m256 e = avx2::exp_ps(_mm256_sub_ps(_mm256_loadu_ps(scratch + t), vmx));
            _mm256_storeu_ps(scratch + t, e);
            zacc = _mm256_add_ps(zacc, e);
        }
        if (t < tk) {
            const __m256i m = avx2::tail_mask(tk - t);
            const __m256 e = _mm256_and_ps(_mm256_castsi256_ps(m),
                                           avx2::exp_ps(_mm256_sub_ps(_mm256_maskload_ps(scratch + t, m), vmx)));
            _mm256_maskstore_ps(scratch + t, m, e);
            zacc = _mm256_add_ps(zacc, e);
        }
        const float inv_z = 1.0f / avx2::hsum_ps(zacc);
        // out = sum_t p_t v_t / z, in groups of 64 columns held in registers
        int64_t j = 0;
        for (; j + 64 <= D8; j += 64) weighted_sum<8>(o + j, scratch, v + j, tk, D, inv_z);
        switch ((D8 - j) / 8) {
            case 7: weighted_sum<7>(o + j, scratch, v + j, tk, D, inv_z); break;
            case 6: weighted_sum<6>(o + j, scratch, v + j, tk, D, inv_z); break;
            case 5: weighted_sum<5>(o + j, scratch, v + j, tk, D, inv_z); break;
            case 4: weighted_sum<4>(o + j, scratch, v + j, tk, D, inv_z); break;
            case 3: weighted_sum<3>(o + j, scratch, v + j, tk, D, inv_z); break;
            case 2: weighted_sum<2>(o + j, scratch, v + j, tk, D, inv_z); break;
            case 1: weighted_sum<1>(o + j, scratch, v + j, tk, D, inv_z); break;
            default: break;
        }
        for (j = D8; j < D; j++) {
            float s = 0;
            for (int64_t tt = 0; tt < tk; tt++) s = std::fma(scratch[tt], v[tt * D + j], s);
            o[j] = s * inv_z;
        }
    }
}

}  // namespace femtogpt::cpu

#else  // no AVX2 in this compiler: never selected at run time, defined for the linker

namespace femtogpt::cpu {
void linear_rows_avx2(float*, int64_t, const float*, int64_t, const float*, const float*, int64_t, int64_t, int64_t,
                      int64_t, bool) {}
void attention_cached_avx2(float*, int64_t, const float*, int64_t, const float*, const float*, int64_t, int64_t,
                           int64_t, float, float*) {}
}  // namespace femtogpt::cpu

#endif
