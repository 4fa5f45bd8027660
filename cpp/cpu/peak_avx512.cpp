// fma_chains for AVX-512: 12 chains of 16 lanes (cpu/peak.h).
#include <immintrin.h>

#include "cpu/peak.h"

namespace femtogpt::cpu {

float fma_chains_avx512(int64_t iters, double* flops) {
    __m512 a[kPeakChains];
    for (int c = 0; c < kPeakChains; c++) a[c] = _mm512_set1_ps(1.0f + 0.1f * float(c));
    // a <- a m + k stays near k / (1 - m) = 1: no overflow, no denormals however long it runs
    const __m512 m = _mm512_set1_ps(0.999999f), k = _mm512_set1_ps(1e-6f);
    for (int64_t i = 0; i < iters; i++)
#pragma GCC unroll 12
        for (int c = 0; c < kPeakChains; c++) a[c] = _mm512_fmadd_ps(a[c], m, k);
    __m512 s = _mm512_setzero_ps();
    for (int c = 0; c < kPeakChains; c++) s = _mm512_add_ps(s, a[c]);
    *flops = 2.0 * 16 * kPeakChains * double(iters);
    return _mm512_reduce_add_ps(s);
}

}  // namespace femtogpt::cpu
