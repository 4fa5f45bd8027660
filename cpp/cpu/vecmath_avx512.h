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

// A lane mask selecting the first `rem` (0..16) lanes, for masked loads and stores of a tail.
static inline __mmask16 tail_mask(int64_t rem) { return __mmask16((1u << rem) - 1u); }

}  // namespace femtogpt::cpu::avx512
