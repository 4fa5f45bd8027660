// AdamW's element update for float32, 8 lanes (AVX2+FMA). Keep in step with optim_avx512.cpp.
#include <immintrin.h>

#include "cpu/tensorops_isa.h"

namespace femtogpt::cpu {

namespace {

struct Consts8 {
    __m256 b1, b2, c1, c2, step, inv, eps, decay;
};

// Elements [i, i+8) (Masked: only the lanes set in mask, for the tail).
template <bool Masked>
inline void update8(float* p, const float* g, float* m, float* v, int64_t i, __m256i mask, const Consts8& k) {
    __m256 gi = Masked ? _mm256_maskload_ps(g + i, mask) : _mm256_loadu_ps(g + i);
    __m256 mi = Masked ? _mm256_maskload_ps(m + i, mask) : _mm256_loadu_ps(m + i);
    __m256 vi = Masked ? _mm256_maskload_ps(v + i, mask) : _mm256_loadu_ps(v + i);
    __m256 pi = Masked ? _mm256_maskload_ps(p + i, mask) : _mm256_loadu_ps(p + i);
    mi = _mm256_fmadd_ps(k.b1, mi, _mm256_mul_ps(k.c1, gi));                     // m = b1 m + (1-b1) g
    vi = _mm256_fmadd_ps(k.b2, vi, _mm256_mul_ps(_mm256_mul_ps(k.c2, gi), gi));  // v = b2 v + (1-b2) g g
    __m256 denom = _mm256_fmadd_ps(_mm256_sqrt_ps(vi), k.inv, k.eps);           // sqrt(v)/sqrt(bc2) + eps
    __m256 upd = _mm256_div_ps(_mm256_mul_ps(k.step, mi), denom);
    pi = _mm256_fmsub_ps(pi, k.decay, upd);                                     // p (1 - lr wd) - update
    if (Masked) {
        _mm256_maskstore_ps(m + i, mask, mi);
        _mm256_maskstore_ps(v + i, mask, vi);
        _mm256_maskstore_ps(p + i, mask, pi);
    } else {
        _mm256_storeu_ps(m + i, mi);
        _mm256_storeu_ps(v + i, vi);
        _mm256_storeu_ps(p + i, pi);
    }
}

}  // namespace

void adamw_f32_avx2(float* p, const float* g, float* m, float* v, int64_t n, const AdamWConstsF32& c) {
    const Consts8 k{_mm256_set1_ps(c.beta1),     _mm256_set1_ps(c.beta2),        _mm256_set1_ps(c.one_minus_beta1),
                    _mm256_set1_ps(c.one_minus_beta2), _mm256_set1_ps(c.step_size), _mm256_set1_ps(c.inv_bc2_sqrt),
                    _mm256_set1_ps(c.eps),       _mm256_set1_ps(c.decay)};
    int64_t i = 0;
    for (; i + 8 <= n; i += 8) update8<false>(p, g, m, v, i, __m256i(), k);
    if (i < n) {
        const __m256i lane = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
        update8<true>(p, g, m, v, i, _mm256_cmpgt_epi32(_mm256_set1_epi32(int(n - i)), lane), k);
    }
}

}  // namespace femtogpt::cpu
