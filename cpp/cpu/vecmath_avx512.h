// AVX-512 helpers for the nn kernels' *_avx512.cpp files (include only from files compiled
// with the AVX-512 flags). Functions are static: each file gets its own copy, so no baseline
// translation unit can ever link to one.
#pragma once

#include <immintrin.h>

#include <cstdint>

namespace femtogpt::cpu::avx512 {

// exp(x) for 16 floats, within ~2 ulp of std::exp where the result is a normal float: x =
// n ln2 + r, |r| <= ln2/2 (ln2 split in a high part exact in float and a low part), exp(r) by
// its degree-7 Taylor polynomial (Estrin; truncation < 6e-9 relative), times 2^n by vscalefps,
// which gives inf past the float range and denormals, then 0, below it, and keeps NaN. For
// |x| beyond ~1e7 the range reduction loses accuracy: callers clamp x (GELU to [-104, 88]).
static inline __m512 exp_ps(__m512 x) {
    const __m512 n = _mm512_roundscale_ps(_mm512_mul_ps(x, _mm512_set1_ps(1.44269504088896341f)),
                                          _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    __m512 r = _mm512_fnmadd_ps(n, _mm512_set1_ps(0.693359375f), x);  // ln2 high part: 8 significant bits
    r = _mm512_fnmadd_ps(n, _mm512_set1_ps(-2.12194440e-4f), r);      // ln2 - high part
    const __m512 r2 = _mm512_mul_ps(r, r);
    const __m512 a0 = _mm512_add_ps(_mm512_set1_ps(1.0f), r);
    const __m512 a1 = _mm512_fmadd_ps(r, _mm512_set1_ps(1.0f / 6), _mm512_set1_ps(0.5f));
    const __m512 a2 = _mm512_fmadd_ps(r, _mm512_set1_ps(1.0f / 120), _mm512_set1_ps(1.0f / 24));
    const __m512 a3 = _mm512_fmadd_ps(r, _mm512_set1_ps(1.0f / 5040), _mm512_set1_ps(1.0f / 720));
    const __m512 r4 = _mm512_mul_ps(r2, r2);
    const __m512 p = _mm512_fmadd_ps(r4, _mm512_fmadd_ps(r2, a3, a2), _mm512_fmadd_ps(r2, a1, a0));
    return _mm512_scalef_ps(p, n);
}

// 2^y for 16 floats: y = n + f, n = round(y) and |f| <= 1/2 (exact in float), 2^f by its
// degree-6 Taylor polynomial in f ln2 (truncation < 1.2e-7 relative), times 2^n by vscalefps
// (inf past the float range, denormals then 0 below it, NaN kept; no clamp needed for huge |y|,
// where f = 0). Cheaper than exp_ps where the caller can fold log2(e) into its own constants
// (the tanh GELU's exp(-2u)); vecmath_avx2.h's exp2_ps on 16 lanes.
static inline __m512 exp2_ps(__m512 y) {
    const __m512 n = _mm512_roundscale_ps(y, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    const __m512 f = _mm512_sub_ps(y, n);
    auto c = [](int k) {  // ln2^k / k!
        constexpr double ln2 = 0.6931471805599453;
        double v = 1;
        for (int i = 1; i <= k; i++) v *= ln2 / i;
        return _mm512_set1_ps(float(v));
    };
    // Estrin's scheme: 4 dependent steps
    const __m512 f2 = _mm512_mul_ps(f, f), f4 = _mm512_mul_ps(f2, f2);
    const __m512 p01 = _mm512_fmadd_ps(c(1), f, c(0)), p23 = _mm512_fmadd_ps(c(3), f, c(2));
    const __m512 p45 = _mm512_fmadd_ps(c(5), f, c(4));
    const __m512 p = _mm512_fmadd_ps(f4, _mm512_fmadd_ps(f2, c(6), p45), _mm512_fmadd_ps(f2, p23, p01));
    return _mm512_scalef_ps(p, n);
}

// A lane mask selecting the first `rem` (0..16) lanes, for masked loads and stores of a tail.
static inline __mmask16 tail_mask(int64_t rem) { return __mmask16((1u << rem) - 1u); }

}  // namespace femtogpt::cpu::avx512
