// Flash attention tile micro-kernels, AVX2 + FMA, float32 (see cpu/attention.h for the
// contract). attention_avx512.cpp is the same code with 16-lane vectors and mask registers;
// keep the two line for line alike.
//
// gemm: 6 x 16 register tiles (12 accumulators + 2 B vectors + 1 broadcast = 15 of the 16
// ymm registers); A is read by scalar broadcasts, so A and A^T cost the same.
// exp2: x = n + f with n = round(x), 2^f by a degree-7 Taylor polynomial on |f| <= 1/2
// (truncation error 5e-9, below float rounding), 2^n built in the exponent bits; inputs
// at or below -127 (masked scores are never passed, but -inf would be) give exactly 0.
#include <immintrin.h>

#include <cstdint>

#include "cpu/attention.h"

namespace femtogpt::cpu::attn_detail {

namespace {

constexpr int kW = 8;         // floats per vector
constexpr int kMR = 6;        // rows of a register tile
constexpr int kNR = 2 * kW;   // columns of a register tile

using vec = __m256;

inline vec vload(const float* p) { return _mm256_loadu_ps(p); }
inline void vstore(float* p, vec v) { _mm256_storeu_ps(p, v); }
inline vec vset1(float x) { return _mm256_set1_ps(x); }
inline vec vbroadcast(const float* p) { return _mm256_broadcast_ss(p); }
inline vec vfmadd(vec a, vec b, vec c) { return _mm256_fmadd_ps(a, b, c); }

// Lanes [0, k) of a tail (0 < k < kW).
inline __m256i tail_mask(int64_t k) {
    return _mm256_cmpgt_epi32(_mm256_set1_epi32(int(k)), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
}
inline vec vload_tail(const float* p, int64_t k) { return _mm256_maskload_ps(p, tail_mask(k)); }
inline void vstore_tail(float* p, vec v, int64_t k) { _mm256_maskstore_ps(p, tail_mask(k), v); }
inline vec vkeep_tail(vec v, int64_t k, vec other) {  // lanes >= k replaced by `other`
    return _mm256_blendv_ps(other, v, _mm256_castsi256_ps(tail_mask(k)));
}

inline float hsum(vec v) {
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}
inline float hmax(vec v) {
    __m128 s = _mm_max_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_max_ps(s, _mm_movehl_ps(s, s));
    s = _mm_max_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}

inline vec exp2v(vec x) {
    x = _mm256_min_ps(_mm256_max_ps(x, vset1(-127.0f)), vset1(127.0f));
    vec n = _mm256_round_ps(x, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    vec f = _mm256_sub_ps(x, n);
    vec p = vset1(1.5252733804e-05f);  // ln(2)^k / k!, k = 7 .. 0
    p = vfmadd(p, f, vset1(1.5403530393e-04f));
    p = vfmadd(p, f, vset1(1.3333558146e-03f));
    p = vfmadd(p, f, vset1(9.6181291076e-03f));
    p = vfmadd(p, f, vset1(5.5504108665e-02f));
    p = vfmadd(p, f, vset1(2.4022650696e-01f));
    p = vfmadd(p, f, vset1(6.9314718056e-01f));
    p = vfmadd(p, f, vset1(1.0f));
    __m256i e = _mm256_slli_epi32(_mm256_add_epi32(_mm256_cvtps_epi32(n), _mm256_set1_epi32(127)), 23);
    return _mm256_mul_ps(p, _mm256_castsi256_ps(e));
}

// C (MR, kNR) = [C +] A (MR, K) B (K, kNR)
template <int MR>
void tile(float* C, int64_t ldc, const float* A, int64_t sar, int64_t sap, const float* B, int64_t ldb, int64_t K,
          bool accumulate) {
    vec c0[MR], c1[MR];
    for (int r = 0; r < MR; r++) {
        c0[r] = accumulate ? vload(C + r * ldc) : _mm256_setzero_ps();
        c1[r] = accumulate ? vload(C + r * ldc + kW) : _mm256_setzero_ps();
    }
    for (int64_t p = 0; p < K; p++) {
        const vec b0 = vload(B + p * ldb), b1 = vload(B + p * ldb + kW);
        const float* a = A + p * sap;
        for (int r = 0; r < MR; r++) {
            const vec ar = vbroadcast(a + r * sar);
            c0[r] = vfmadd(ar, b0, c0[r]);
            c1[r] = vfmadd(ar, b1, c1[r]);
        }
    }
    for (int r = 0; r < MR; r++) {
        vstore(C + r * ldc, c0[r]);
        vstore(C + r * ldc + kW, c1[r]);
    }
}

void gemm(float* C, int64_t ldc, const float* A, int64_t sar, int64_t sap, const float* B, int64_t ldb, int64_t M,
          int64_t N, int64_t K, bool accumulate) {
    for (int64_t n0 = 0; n0 < N; n0 += kNR) {
        for (int64_t m0 = 0; m0 < M; m0 += kMR) {
            float* c = C + m0 * ldc + n0;
            const float* a = A + m0 * sar;
            const float* b = B + n0;
            switch (M - m0 < kMR ? M - m0 : kMR) {
                case 6: tile<6>(c, ldc, a, sar, sap, b, ldb, K, accumulate); break;
                case 5: tile<5>(c, ldc, a, sar, sap, b, ldb, K, accumulate); break;
                case 4: tile<4>(c, ldc, a, sar, sap, b, ldb, K, accumulate); break;
                case 3: tile<3>(c, ldc, a, sar, sap, b, ldb, K, accumulate); break;
                case 2: tile<2>(c, ldc, a, sar, sap, b, ldb, K, accumulate); break;
                default: tile<1>(c, ldc, a, sar, sap, b, ldb, K, accumulate); break;
            }
        }
    }
}

float row_max(const float* x, int64_t n, float c) {
    const vec vc = vset1(c), ninf = vset1(-__builtin_inff());
    vec m = ninf;
    int64_t i = 0;
    for (; i + kW <= n; i += kW) m = _mm256_max_ps(m, _mm256_mul_ps(vload(x + i), vc));
    if (i < n) m = _mm256_max_ps(m, vkeep_tail(_mm256_mul_ps(vload_tail(x + i, n - i), vc), n - i, ninf));
    return hmax(m);
}

float exp2_row(float* x, int64_t n, int64_t npad, float c, float sub) {
    const vec vc = vset1(c), vsub = vset1(-sub), zero = _mm256_setzero_ps();
    vec sum = zero;
    int64_t i = 0;
    for (; i + kW <= n; i += kW) {
        const vec e = exp2v(vfmadd(vload(x + i), vc, vsub));
        vstore(x + i, e);
        sum = _mm256_add_ps(sum, e);
    }
    if (i < n) {
        const vec e = vkeep_tail(exp2v(vfmadd(vload_tail(x + i, n - i), vc, vsub)), n - i, zero);
        vstore_tail(x + i, e, n - i);
        sum = _mm256_add_ps(sum, e);
    }
    for (i = n; i < npad; i++) x[i] = 0.0f;
    return hsum(sum);
}

void ds_row(float* dp, const float* p, int64_t n, float d, float scale) {
    const vec vd = vset1(d), vs = vset1(scale);
    int64_t i = 0;
    for (; i + kW <= n; i += kW)
        vstore(dp + i, _mm256_mul_ps(_mm256_mul_ps(vload(p + i), _mm256_sub_ps(vload(dp + i), vd)), vs));
    if (i < n) {
        const vec r = _mm256_mul_ps(
            _mm256_mul_ps(vload_tail(p + i, n - i), _mm256_sub_ps(vload_tail(dp + i, n - i), vd)), vs);
        vstore_tail(dp + i, r, n - i);
    }
}

void scale_row(float* x, int64_t n, float a) {
    const vec va = vset1(a);
    int64_t i = 0;
    for (; i + kW <= n; i += kW) vstore(x + i, _mm256_mul_ps(vload(x + i), va));
    if (i < n) vstore_tail(x + i, _mm256_mul_ps(vload_tail(x + i, n - i), va), n - i);
}

}  // namespace

const TileKernels<float>& tile_kernels_avx2() {
    static const TileKernels<float> k{kNR, gemm, row_max, exp2_row, ds_row, scale_row};
    return k;
}

}  // namespace femtogpt::cpu::attn_detail
