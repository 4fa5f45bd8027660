// fma_chains for AVX2+FMA: 12 chains of 8 lanes (cpu/peak.h).
#include <immintrin.h>

#include "cpu/peak.h"
#include "cpu/vecmath_avx2.h"

namespace femtogpt::cpu {

float fma_chains_avx2(int64_t iters, double* flops) {
    __m256 a[kPeakChains];
    for (int c = 0; c < kPeakChains; c++) a[c] = _mm256_set1_ps(1.0f + 0.1f * float(c));
    // a <- a m + k stays near k / (1 - m) = 1: no overflow, no denormals however long it runs
    const __m256 m = _mm256_set1_ps(0.999999f), k = _mm256_set1_ps(1e-6f);
    for (int64_t i = 0; i < iters; i++)
#pragma GCC unroll 12
        for (int c = 0; c < kPeakChains; c++) a[c] = _mm256_fmadd_ps(a[c], m, k);
    __m256 s = _mm256_setzero_ps();
    for (int c = 0; c < kPeakChains; c++) s = _mm256_add_ps(s, a[c]);
    *flops = 2.0 * 8 * kPeakChains * double(iters);
    return avx2::hsum_ps(s);  // all 8 lanes
}

}  // namespace femtogpt::cpu
