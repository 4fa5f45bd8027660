// AVX2+FMA helpers shared by the nn kernels' *_avx2.cpp files (include only from
// files compiled with -mavx2 -mfma). Functions are static: each AVX2 file gets
// its own copy, so no baseline translation unit can ever link to one.
#pragma once

#include <immintrin.h>

#include <cstdint>

#include "cpu/vecmath_common.h"

namespace femtogpt::cpu::avx2 {

// exp(x) for 8 floats, within ~2 ulp of std::exp for x in [-87, 88]: x = n ln2 + r
// with |r| <= ln2/2 (ln2 split in a high part exact in float and a low part),
// exp(r) by its degree-7 Taylor polynomial (truncation < 6e-9 relative), times 2^n
// built in the exponent bits. x > 88 gives exp(88) (no inf); x < -87 gives exactly
// 0 (so masked -inf scores vanish as with std::exp); NaN stays NaN.
static inline __m256 exp_ps(__m256 x_in) {
    // max/min return their second operand when one is NaN: NaN passes the clamp
    const __m256 x = _mm256_min_ps(_mm256_set1_ps(88.0f), _mm256_max_ps(_mm256_set1_ps(-87.0f), x_in));
    const __m256 n = _mm256_round_ps(_mm256_mul_ps(x, _mm256_set1_ps(1.44269504088896341f)),
                                     _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    __m256 r = _mm256_fnmadd_ps(n, _mm256_set1_ps(0.693359375f), x);  // ln2 high part: 8 significant bits
    r = _mm256_fnmadd_ps(n, _mm256_set1_ps(-2.12194440e-4f), r);     // ln2 - high part
    // the polynomial by Estrin's scheme: 4 dependent steps instead of Horner's 7
    const __m256 r2 = _mm256_mul_ps(r, r);
    const __m256 a0 = _mm256_add_ps(_mm256_set1_ps(1.0f), r);
    const __m256 a1 = _mm256_fmadd_ps(r, _mm256_set1_ps(1.0f / 6), _mm256_set1_ps(0.5f));
    const __m256 a2 = _mm256_fmadd_ps(r, _mm256_set1_ps(1.0f / 120), _mm256_set1_ps(1.0f / 24));
    const __m256 a3 = _mm256_fmadd_ps(r, _mm256_set1_ps(1.0f / 5040), _mm256_set1_ps(1.0f / 720));
    const __m256 r4 = _mm256_mul_ps(r2, r2);
    const __m256 b0 = _mm256_fmadd_ps(r2, a1, a0);
    const __m256 b1 = _mm256_fmadd_ps(r2, a3, a2);
    const __m256 p = _mm256_fmadd_ps(r4, b1, b0);
    const __m256i e = _mm256_slli_epi32(_mm256_add_epi32(_mm256_cvtps_epi32(n), _mm256_set1_epi32(127)), 23);
    const __m256 tiny = _mm256_cmp_ps(x_in, _mm256_set1_ps(-87.0f), _CMP_LT_OQ);
    return _mm256_andnot_ps(tiny, _mm256_mul_ps(p, _mm256_castsi256_ps(e)));
}

// 2^y for 8 floats: y = n + f, n an integer and |f| <= 1/2 (exact in float), 2^f by its
// degree-6 Taylor polynomial in f ln2 (truncation < 1.2e-7 relative), times 2^n built in the
// exponent bits. y is clamped to [-127, 127] first: y <= -127 gives exactly 0 (the bits of
// n = -127), y > 127 gives 2^127 (no inf); NaN passes the clamp. Cheaper than exp_ps where the
// caller can fold log2(e) into its own constants (the tanh GELU's exp(-2u)).
static inline __m256 exp2_ps(__m256 y_in) {
    // max/min return their second operand when one is NaN: NaN passes the clamp
    const __m256 y = _mm256_min_ps(_mm256_set1_ps(127.0f), _mm256_max_ps(_mm256_set1_ps(-127.0f), y_in));
    const __m256 n = _mm256_round_ps(y, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    const __m256 f = _mm256_sub_ps(y, n);
    auto c = [](int k) { return _mm256_set1_ps(vecmath::kExp2Taylor[k]); };  // ln2^k / k!
    // Estrin's scheme: 4 dependent steps
    const __m256 f2 = _mm256_mul_ps(f, f), f4 = _mm256_mul_ps(f2, f2);
    const __m256 p01 = _mm256_fmadd_ps(c(1), f, c(0)), p23 = _mm256_fmadd_ps(c(3), f, c(2));
    const __m256 p45 = _mm256_fmadd_ps(c(5), f, c(4));
    const __m256 p = _mm256_fmadd_ps(f4, _mm256_fmadd_ps(f2, c(6), p45), _mm256_fmadd_ps(f2, p23, p01));
    const __m256i e = _mm256_slli_epi32(_mm256_add_epi32(_mm256_cvtps_epi32(n), _mm256_set1_epi32(127)), 23);
    return _mm256_mul_ps(p, _mm256_castsi256_ps(e));
}

// Sum of the 8 lanes, in a fixed order.
static inline float hsum_ps(__m256 v) {
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}

// Max of the 8 lanes.
static inline float hmax_ps(__m256 v) {
    __m128 s = _mm_max_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_max_ps(s, _mm_movehl_ps(s, s));
    s = _mm_max_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}

// A lane mask selecting the first `rem` (0..8) lanes, for maskload/maskstore of a row's tail.
static inline __m256i tail_mask(int64_t rem) {
    return _mm256_cmpgt_epi32(_mm256_set1_epi32(int(rem)), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
}

}  // namespace femtogpt::cpu::avx2
