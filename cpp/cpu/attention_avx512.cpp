// Flash attention tile micro-kernels, AVX-512 (F), float32 (see cpu/attention.h for the
// contract). The same code as attention_avx2.cpp with 16-lane vectors and mask registers,
// except the gemm's wider tiles; keep the rest line for line alike.
//
// gemm: 6 x 64 register tiles (24 accumulators + 4 B vectors + 1 broadcast), narrower ones
// (down to 8 x 16) for what is left; A is read by scalar broadcasts, so A and A^T cost the
// same. On a Xeon (Sapphire Rapids class) 6 x 64 ran 122 GFLOP/s a core on 64 x 64 x 64
// products against 106 for 6 x 32 (AVX2's shape): half the B loads and broadcasts per FMA.
// Its N may be any multiple of one vector, so D = 16 is not padded to 32.
// exp2: x = n + f with n = round(x), 2^f by a degree-6 polynomial on |f| <= 1/2 (fit error
// 2e-9, about 1 ulp once evaluated in float), 2^n built in the exponent bits; inputs at or
// below -127 (masked scores are never passed, but -inf would be) give exactly 0.
#include <immintrin.h>

// GCC 12's avx512fintrin.h seeds "undefined" vectors with `__Y = __Y`, which -O3 reports as
// uninitialized once inlined here; the lanes are never read.
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#pragma GCC diagnostic ignored "-Wuninitialized"

#include <algorithm>
#include <cstdint>

#include "cpu/attention.h"

namespace femtogpt::cpu::attn_detail {

namespace {

constexpr int kW = 16;        // floats per vector

using vec = __m512;

inline vec vload(const float* p) { return _mm512_loadu_ps(p); }
inline void vstore(float* p, vec v) { _mm512_storeu_ps(p, v); }
inline vec vset1(float x) { return _mm512_set1_ps(x); }
inline vec vbroadcast(const float* p) { return _mm512_set1_ps(*p); }
inline vec vfmadd(vec a, vec b, vec c) { return _mm512_fmadd_ps(a, b, c); }

// Lanes [0, k) of a tail (0 < k < kW).
inline __mmask16 tail_mask(int64_t k) { return __mmask16((1u << k) - 1u); }
inline vec vload_tail(const float* p, int64_t k) { return _mm512_maskz_loadu_ps(tail_mask(k), p); }
inline void vstore_tail(float* p, vec v, int64_t k) { _mm512_mask_storeu_ps(p, tail_mask(k), v); }
inline vec vkeep_tail(vec v, int64_t k, vec other) {  // lanes >= k replaced by `other`
    return _mm512_mask_blend_ps(tail_mask(k), other, v);
}
// One vector of zeros, as a masked store with every lane on: GCC turns a loop of plain zero
// stores into a memset call, which costs more than the stores on rows of a few vectors.
inline void vstore_zeros(float* p) { _mm512_mask_storeu_ps(p, __mmask16(0xFFFF), _mm512_setzero_ps()); }

inline vec vmax(vec a, vec b) { return _mm512_max_ps(a, b); }
inline vec vsub(vec a, vec b) { return _mm512_sub_ps(a, b); }
inline vec vadd(vec a, vec b) { return _mm512_add_ps(a, b); }
inline vec vmul(vec a, vec b) { return _mm512_mul_ps(a, b); }
inline vec vdiv(vec a, vec b) { return _mm512_div_ps(a, b); }
// Lanes [0, t) replaced by `other` (t may be <= 0: none, or >= kW: all).
inline vec vkeep_from(vec v, int64_t t, vec other) {
    const int64_t k = std::clamp<int64_t>(t, 0, kW);
    return _mm512_mask_blend_ps(__mmask16((1u << k) - 1u), v, other);
}
inline bool vany_ne(vec v, float x) { return _mm512_cmp_ps_mask(v, vset1(x), _CMP_NEQ_UQ) != 0; }

inline float hsum(vec v) {
    __m256 h = _mm256_add_ps(_mm512_castps512_ps256(v), _mm512_extractf32x8_ps(v, 1));
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(h), _mm256_extractf128_ps(h, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}
inline float hmax(vec v) {
    __m256 h = _mm256_max_ps(_mm512_castps512_ps256(v), _mm512_extractf32x8_ps(v, 1));
    __m128 s = _mm_max_ps(_mm256_castps256_ps128(h), _mm256_extractf128_ps(h, 1));
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
    x = _mm512_max_ps(x, vset1(-127.0f));  // callers pass x <= 0 (scores minus their max or lse)
    // n = round(x) by the 1.5 * 2^23 trick (nearest-even, as roundscale): n's integer sits
    // in t's low mantissa bits, which spares the round and the float-to-int conversion
    const vec t = _mm512_add_ps(x, vset1(kRoundMagic));
    const vec n = _mm512_sub_ps(t, vset1(kRoundMagic));
    vec f = _mm512_sub_ps(x, n);
    vec p = vset1(1.5345795e-04f);  // near-minimax fit of 2^f on [-1/2, 1/2], relative error 2e-9
    p = vfmadd(p, f, vset1(1.3399931e-03f));
    p = vfmadd(p, f, vset1(9.6184891e-03f));
    p = vfmadd(p, f, vset1(5.5503286e-02f));
    p = vfmadd(p, f, vset1(2.4022646e-01f));
    p = vfmadd(p, f, vset1(6.9314718e-01f));
    p = vfmadd(p, f, vset1(1.0f));
    __m512i e = _mm512_slli_epi32(_mm512_sub_epi32(_mm512_castps_si512(t), _mm512_set1_epi32(kRoundBias)), 23);
    return _mm512_mul_ps(p, _mm512_castsi512_ps(e));
}

// x = 2^e m with m in [sqrt(1/2), sqrt(2)), for positive normal x: e, as a float, from the
// bits of x over those of sqrt(1/2); m in *mant (for log2v in attention_cols.h)
inline vec vsplit_exponent(vec x, vec* mant) {
    const __m512i bits = _mm512_castps_si512(x);
    const __m512i e = _mm512_srai_epi32(_mm512_sub_epi32(bits, _mm512_set1_epi32(kSqrtHalfBits)), 23);
    *mant = _mm512_castsi512_ps(_mm512_sub_epi32(bits, _mm512_slli_epi32(e, 23)));
    return _mm512_cvtepi32_ps(e);
}

// C (MR, NV*kW) = [C +] A (MR, K) B (K, NV*kW). The accumulators are named variables, not
// an array: GCC keeps an array of vectors in registers but also stores it to the stack on
// every iteration, which made this loop store-bound.
#define FG_ROWS(X) X(0) X(1) X(2) X(3) X(4) X(5) X(6) X(7) X(8) X(9) X(10) X(11)
#define FG_COLS(X, r) X(r, 0) X(r, 1) X(r, 2) X(r, 3)
template <int MR, int NV>
void tile(float* C, int64_t ldc, const float* A, int64_t sar, int64_t sap, const float* B, int64_t ldb, int64_t K,
          bool accumulate) {
    static_assert(MR >= 1 && NV >= 1 && NV <= 4 && MR * NV <= 24, "tile shape");
#define FG_DECL1(r, j) vec c##r##_##j = _mm512_setzero_ps();
#define FG_DECL(r) FG_COLS(FG_DECL1, r)
    FG_ROWS(FG_DECL)
#define FG_LOAD1(r, j) \
    if constexpr (MR > r && NV > j) c##r##_##j = vload(C + r * ldc + j * kW);
#define FG_LOAD(r) FG_COLS(FG_LOAD1, r)
    if (accumulate) { FG_ROWS(FG_LOAD) }
    const float* a = A;
    for (int64_t p = 0; p < K; p++, a += sap) {
        const float* b = B + p * ldb;
        vec b0 = vload(b), b1 = b0, b2 = b0, b3 = b0;
        if constexpr (NV > 1) b1 = vload(b + kW);
        if constexpr (NV > 2) b2 = vload(b + 2 * kW);
        if constexpr (NV > 3) b3 = vload(b + 3 * kW);
#define FG_FMA1(r, j) \
        if constexpr (NV > j) c##r##_##j = vfmadd(ar, b##j, c##r##_##j);
#define FG_FMA(r)                                     \
        if constexpr (MR > r) {                       \
            const vec ar = vbroadcast(a + r * sar);   \
            FG_COLS(FG_FMA1, r)                       \
        }
        FG_ROWS(FG_FMA)
    }
#define FG_STORE1(r, j) \
    if constexpr (MR > r && NV > j) vstore(C + r * ldc + j * kW, c##r##_##j);
#define FG_STORE(r) FG_COLS(FG_STORE1, r)
    FG_ROWS(FG_STORE)
#undef FG_DECL1
#undef FG_DECL
#undef FG_LOAD1
#undef FG_LOAD
#undef FG_FMA1
#undef FG_FMA
#undef FG_STORE1
#undef FG_STORE
}
#undef FG_COLS
#undef FG_ROWS

// Rows of a register tile NV vectors wide: 6 for 2 to 4 vectors (up to 24 accumulators),
// 8 for one vector (8 FMA chains hide the FMA latency of 4 cycles at 2 a cycle; a 6 x 16
// tile would have too few). 8 rather than 12: 64 x 16 x 64 products (D = 16) ran as fast or
// faster (2% full, 2-9% causal: a diagonal tile's row groups sum over fewer masked keys).
template <int NV>
constexpr int kRows = NV == 1 ? 8 : 6;

// A tile of mr <= MR rows (MR = kRows<NV> at the top).
template <int NV, int MR = kRows<NV>>
void tile_rows(int64_t mr, float* c, int64_t ldc, const float* a, int64_t sar, int64_t sap, const float* b,
               int64_t ldb, int64_t K, bool accumulate) {
    if constexpr (MR > 1) {
        if (mr < MR) return tile_rows<NV, MR - 1>(mr, c, ldc, a, sar, sap, b, ldb, K, accumulate);
    }
    tile<MR, NV>(c, ldc, a, sar, sap, b, ldb, K, accumulate);
}

// Column strips of up to 4 vectors (6 x 64 tiles: 24 accumulators, 4 B vectors, 1
// broadcast = 29 of the 32 zmm registers); within a strip each row group computes only the
// vectors its band leaves (1 to 4: a strip of one vector, D = 16 say, takes 8-row groups).
// N is a multiple of kW. The tile shape does not change a result: every element is the
// same FMA chain over the same p either way (a group's extra p only add A's zeros).
void gemm(float* C, int64_t ldc, const float* A, int64_t sar, int64_t sap, const float* B, int64_t ldb, int64_t M,
          int64_t N, int64_t K, bool accumulate, TileBand band) {
    for (int64_t n0 = 0; n0 < N; n0 += 4 * kW) {
        const int64_t w = std::min<int64_t>(4 * kW, N - n0);  // the strip's columns
        const int64_t step = w == kW ? kRows<1> : kRows<4>;
        for (int64_t m0 = 0; m0 < M; m0 += step) {
            const int64_t mr = M - m0 < step ? M - m0 : step;
            // the group's needed columns of this strip, [lo, hi) relative to n0, in whole vectors
            const int64_t hi = std::min(w, band.n_hi + m0 + mr - n0);
            const int64_t lo = std::max<int64_t>(0, band.n_lo + m0 - n0);
            if (hi <= lo) continue;  // masked for every row of the group
            const int64_t v0 = lo / kW, nv = (hi + kW - 1) / kW - v0;
            const int64_t k0 = std::clamp<int64_t>(band.k_lo + m0, 0, K);
            const int64_t k1 = std::clamp<int64_t>(band.k_hi + m0 + mr, k0, K);
            float* c = C + m0 * ldc + n0 + v0 * kW;
            const float* a = A + m0 * sar + k0 * sap;
            const float* b = B + k0 * ldb + n0 + v0 * kW;
            switch (nv) {
                case 4: tile_rows<4>(mr, c, ldc, a, sar, sap, b, ldb, k1 - k0, accumulate); break;
                case 3: tile_rows<3>(mr, c, ldc, a, sar, sap, b, ldb, k1 - k0, accumulate); break;
                case 2: tile_rows<2>(mr, c, ldc, a, sar, sap, b, ldb, k1 - k0, accumulate); break;
                default: tile_rows<1>(mr, c, ldc, a, sar, sap, b, ldb, k1 - k0, accumulate); break;
            }
        }
    }
}

// The 16 x 16 transpose of r[0..15] in place: pairs of rows interleaved, then quadruples
// (r[4i+j] then holds column 4L+j of rows 4i..4i+3 in its 128-bit lane L), then the 4 x 4
// transpose of 128-bit lanes. 64 shuffles for 256 elements.
inline void transpose16(vec r[kW]) {
    vec t[kW];
    for (int i = 0; i < kW; i += 2) {
        t[i] = _mm512_unpacklo_ps(r[i], r[i + 1]);
        t[i + 1] = _mm512_unpackhi_ps(r[i], r[i + 1]);
    }
    for (int i = 0; i < kW; i += 4) {
        r[i] = _mm512_shuffle_ps(t[i], t[i + 2], 0x44);
        r[i + 1] = _mm512_shuffle_ps(t[i], t[i + 2], 0xEE);
        r[i + 2] = _mm512_shuffle_ps(t[i + 1], t[i + 3], 0x44);
        r[i + 3] = _mm512_shuffle_ps(t[i + 1], t[i + 3], 0xEE);
    }
    for (int j = 0; j < 4; j++) {
        const vec u0 = _mm512_shuffle_f32x4(r[j], r[4 + j], 0x44), u1 = _mm512_shuffle_f32x4(r[j], r[4 + j], 0xEE);
        const vec u2 = _mm512_shuffle_f32x4(r[8 + j], r[12 + j], 0x44);
        const vec u3 = _mm512_shuffle_f32x4(r[8 + j], r[12 + j], 0xEE);
        t[j] = _mm512_shuffle_f32x4(u0, u2, 0x88);
        t[4 + j] = _mm512_shuffle_f32x4(u0, u2, 0xDD);
        t[8 + j] = _mm512_shuffle_f32x4(u1, u3, 0x88);
        t[12 + j] = _mm512_shuffle_f32x4(u1, u3, 0xDD);
    }
    for (int i = 0; i < kW; i++) r[i] = t[i];
}

// TileKernels::pack_t by 16 x 16 blocks (np and dp are multiples of kW): rows past n and
// columns past d load as zeros.
void pack_t(float* dst, int64_t ldd, const float* src, int64_t lds, int64_t n, int64_t np, int64_t d, int64_t dp,
            float c) {
    const vec vc = vset1(c), zero = vset1(0.0f);
    for (int64_t i0 = 0; i0 < np; i0 += kW)
        for (int64_t p0 = 0; p0 < dp; p0 += kW) {
            const int64_t rows = std::clamp<int64_t>(n - i0, 0, kW), cols = std::clamp<int64_t>(d - p0, 0, kW);
            vec r[kW];
            for (int i = 0; i < kW; i++) {
                const float* s = src + (i0 + i) * lds + p0;
                r[i] = i >= rows || cols == 0 ? zero : cols == kW ? vload(s) : vload_tail(s, cols);
            }
            transpose16(r);
            for (int q = 0; q < kW; q++) vstore(dst + (p0 + q) * ldd + i0, vmul(r[q], vc));
        }
}

#include "cpu/attention_cols.h"  // gemm_nt, the row kernels, softmax_cols, finish, rowdot and Rows

}  // namespace

const TileKernels<float>& tile_kernels_avx512() {
    static const TileKernels<float> k{kW, gemm, gemm_nt, softmax_tile_rows<Rows, float>, softmax_cols,
                                      pds_tile, pack_t, finish, rowdot};
    return k;
}

}  // namespace femtogpt::cpu::attn_detail
