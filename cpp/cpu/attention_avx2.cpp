// Flash attention tile micro-kernels, AVX2 + FMA, float32 (see cpu/attention.h for the
// contract). attention_avx512.cpp is the same code with 16-lane vectors and mask registers,
// except its gemm's wider tiles (it has 32 registers); keep the rest line for line alike.
// gemm_nt, the row kernels and the forward's column softmax are shared: cpu/attention_cols.h.
//
// gemm: 6 x 16 register tiles (12 accumulators + 2 B vectors + 1 broadcast = 15 of the 16
// ymm registers); A is read by scalar broadcasts, so A and A^T cost the same.
// exp2: x = n + f with n = round(x), 2^f by a degree-6 polynomial on |f| <= 1/2 (fit error
// 2e-9, about 1 ulp once evaluated in float), 2^n built in the exponent bits; inputs at or
// below -127 (masked scores are never passed, but -inf would be) give exactly 0.
#include <immintrin.h>

#include <algorithm>
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
// One vector of zeros, as a masked store with every lane on: GCC turns a loop of plain zero
// stores into a memset call, which costs more than the stores on rows of a few vectors.
inline void vstore_zeros(float* p) { _mm256_maskstore_ps(p, _mm256_set1_epi32(-1), _mm256_setzero_ps()); }

inline vec vmax(vec a, vec b) { return _mm256_max_ps(a, b); }
inline vec vsub(vec a, vec b) { return _mm256_sub_ps(a, b); }
inline vec vadd(vec a, vec b) { return _mm256_add_ps(a, b); }
inline vec vmul(vec a, vec b) { return _mm256_mul_ps(a, b); }
inline vec vdiv(vec a, vec b) { return _mm256_div_ps(a, b); }
// Lanes [0, t) replaced by `other` (t may be <= 0: none, or >= kW: all).
inline vec vkeep_from(vec v, int64_t t, vec other) {
    const __m256i below = _mm256_cmpgt_epi32(_mm256_set1_epi32(int(std::clamp<int64_t>(t, 0, kW))),
                                             _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
    return _mm256_blendv_ps(v, other, _mm256_castsi256_ps(below));
}
inline bool vany_ne(vec v, float x) { return _mm256_movemask_ps(_mm256_cmp_ps(v, vset1(x), _CMP_NEQ_UQ)) != 0; }

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

// 1.5 * 2^23: adding it rounds |x| < 2^22 to an integer n, held as bits(magic) + n; the
// exponent field of 2^n is then (bits(t) - bits(magic) + 127) << 23.
constexpr float kRoundMagic = 12582912.0f;
constexpr int kRoundBias = 0x4B400000 - 127;
constexpr int kSqrtHalfBits = 0x3F3504F3;  // float sqrt(1/2)

inline vec exp2v(vec x) {
    x = _mm256_max_ps(x, vset1(-127.0f));  // callers pass x <= 0 (scores minus their max or lse)
    // n = round(x) by the 1.5 * 2^23 trick (nearest-even, as round_ps): n's integer sits
    // in t's low mantissa bits, which spares the round and the float-to-int conversion
    const vec t = _mm256_add_ps(x, vset1(kRoundMagic));
    const vec n = _mm256_sub_ps(t, vset1(kRoundMagic));
    vec f = _mm256_sub_ps(x, n);
    vec p = vset1(1.5345795e-04f);  // near-minimax fit of 2^f on [-1/2, 1/2], relative error 2e-9
    p = vfmadd(p, f, vset1(1.3399931e-03f));
    p = vfmadd(p, f, vset1(9.6184891e-03f));
    p = vfmadd(p, f, vset1(5.5503286e-02f));
    p = vfmadd(p, f, vset1(2.4022646e-01f));
    p = vfmadd(p, f, vset1(6.9314718e-01f));
    p = vfmadd(p, f, vset1(1.0f));
    __m256i e = _mm256_slli_epi32(_mm256_sub_epi32(_mm256_castps_si256(t), _mm256_set1_epi32(kRoundBias)), 23);
    return _mm256_mul_ps(p, _mm256_castsi256_ps(e));
}

// x = 2^e m with m in [sqrt(1/2), sqrt(2)), for positive normal x: e, as a float, from the
// bits of x over those of sqrt(1/2); m in *mant (for log2v in attention_cols.h)
inline vec vsplit_exponent(vec x, vec* mant) {
    const __m256i bits = _mm256_castps_si256(x);
    const __m256i e = _mm256_srai_epi32(_mm256_sub_epi32(bits, _mm256_set1_epi32(kSqrtHalfBits)), 23);
    *mant = _mm256_castsi256_ps(_mm256_sub_epi32(bits, _mm256_slli_epi32(e, 23)));
    return _mm256_cvtepi32_ps(e);
}

// C (MR, kNR) = [C +] A (MR, K) B (K, kNR). The accumulators are named variables, not an
// array: GCC keeps an array of vectors in registers but also stores it to the stack on
// every iteration, which made this loop store-bound.
#define FG_ROWS(X) X(0) X(1) X(2) X(3) X(4) X(5)
template <int MR>
void tile(float* C, int64_t ldc, const float* A, int64_t sar, int64_t sap, const float* B, int64_t ldb, int64_t K,
          bool accumulate) {
    static_assert(MR >= 1 && MR <= kMR, "tile rows");
#define FG_DECL(r) vec c##r##0 = _mm256_setzero_ps(), c##r##1 = _mm256_setzero_ps();
    FG_ROWS(FG_DECL)
#define FG_LOAD(r)                           \
    if constexpr (MR > r) {                  \
        c##r##0 = vload(C + r * ldc);        \
        c##r##1 = vload(C + r * ldc + kW);   \
    }
    if (accumulate) { FG_ROWS(FG_LOAD) }
    const float* a = A;
    for (int64_t p = 0; p < K; p++, a += sap) {
        const vec b0 = vload(B + p * ldb), b1 = vload(B + p * ldb + kW);
#define FG_FMA(r)                                 \
        if constexpr (MR > r) {                   \
            const vec ar = vbroadcast(a + r * sar); \
            c##r##0 = vfmadd(ar, b0, c##r##0);    \
            c##r##1 = vfmadd(ar, b1, c##r##1);    \
        }
        FG_ROWS(FG_FMA)
    }
#define FG_STORE(r)                          \
    if constexpr (MR > r) {                  \
        vstore(C + r * ldc, c##r##0);        \
        vstore(C + r * ldc + kW, c##r##1);   \
    }
    FG_ROWS(FG_STORE)
#undef FG_DECL
#undef FG_LOAD
#undef FG_FMA
#undef FG_STORE
}
#undef FG_ROWS

void gemm(float* C, int64_t ldc, const float* A, int64_t sar, int64_t sap, const float* B, int64_t ldb, int64_t M,
          int64_t N, int64_t K, bool accumulate, TileBand band) {
    for (int64_t n0 = 0; n0 < N; n0 += kNR) {
        for (int64_t m0 = 0; m0 < M; m0 += kMR) {
            const int64_t mr = M - m0 < kMR ? M - m0 : kMR;
            if (n0 >= band.n_hi + m0 + mr || n0 + kNR <= band.n_lo + m0) continue;  // masked for every row
            const int64_t k0 = std::clamp<int64_t>(band.k_lo + m0, 0, K);
            const int64_t k1 = std::clamp<int64_t>(band.k_hi + m0 + mr, k0, K);
            float* c = C + m0 * ldc + n0;
            const float* a = A + m0 * sar + k0 * sap;
            const float* b = B + k0 * ldb + n0;
            switch (mr) {
                case 6: tile<6>(c, ldc, a, sar, sap, b, ldb, k1 - k0, accumulate); break;
                case 5: tile<5>(c, ldc, a, sar, sap, b, ldb, k1 - k0, accumulate); break;
                case 4: tile<4>(c, ldc, a, sar, sap, b, ldb, k1 - k0, accumulate); break;
                case 3: tile<3>(c, ldc, a, sar, sap, b, ldb, k1 - k0, accumulate); break;
                case 2: tile<2>(c, ldc, a, sar, sap, b, ldb, k1 - k0, accumulate); break;
                default: tile<1>(c, ldc, a, sar, sap, b, ldb, k1 - k0, accumulate); break;
            }
        }
    }
}

#include "cpu/attention_cols.h"  // gemm_nt, the row kernels, softmax_cols, finish, rowdot and Rows

}  // namespace

const TileKernels<float>& tile_kernels_avx2() {
    static const TileKernels<float> k{kNR, gemm, gemm_nt, softmax_tile_rows<Rows, float>, softmax_cols,
                                      pds_tile, pack_t_rows<float>, finish, rowdot};
    return k;
}

}  // namespace femtogpt::cpu::attn_detail
