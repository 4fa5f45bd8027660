// AVX-512 helpers for the nn kernels' *_avx512.cpp files (include only from files compiled
// with the AVX-512 flags). Functions are static: each file gets its own copy, so no baseline
// translation unit can ever link to one.
#pragma once

#include <immintrin.h>

#include <cstdint>

#include "cpu/vecmath_common.h"

namespace femtogpt::cpu::avx512 {

// 2^y for 16 finite floats: y = n + f, n = round(y) and |f| <= 1/2 (exact in float), 2^f by
// its degree-6 Taylor polynomial in f ln2 (truncation < 1.2e-7 relative), times 2^n by vscalefps
// (inf past the float range, denormals then 0 below it; NaN kept). Unlike vecmath_avx2.h's
// exp2_ps it does not clamp y: an infinite y gives NaN (inf - round(inf)), so callers clamp (the
// tanh GELU to [-150, 127]). Where a caller can fold log2(e) into its own constants, cheaper
// than an exp.
static inline __m512 exp2_ps(__m512 y) {
    const __m512 n = _mm512_roundscale_ps(y, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    const __m512 f = _mm512_sub_ps(y, n);
    auto c = [](int k) { return _mm512_set1_ps(vecmath::kExp2Taylor[k]); };  // ln2^k / k!
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
