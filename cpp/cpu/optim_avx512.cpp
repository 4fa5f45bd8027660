// AdamW's element update for float32, 16 lanes (AVX-512F). Keep in step with optim_avx2.cpp.
#include <immintrin.h>

#include "cpu/tensorops_isa.h"

namespace femtogpt::cpu {

namespace {

struct Consts16 {
    __m512 b1, b2, c1, c2, step, inv, eps, decay;
};

// Elements [i, i+16) (Masked: only the lanes set in mask, for the tail).
template <bool Masked>
inline void update16(float* p, const float* g, float* m, float* v, int64_t i, __mmask16 mask, const Consts16& k) {
    __m512 gi = Masked ? _mm512_maskz_loadu_ps(mask, g + i) : _mm512_loadu_ps(g + i);
    __m512 mi = Masked ? _mm512_maskz_loadu_ps(mask, m + i) : _mm512_loadu_ps(m + i);
    __m512 vi = Masked ? _mm512_maskz_loadu_ps(mask, v + i) : _mm512_loadu_ps(v + i);
    __m512 pi = Masked ? _mm512_maskz_loadu_ps(mask, p + i) : _mm512_loadu_ps(p + i);
    mi = _mm512_fmadd_ps(k.b1, mi, _mm512_mul_ps(k.c1, gi));                     // m = b1 m + (1-b1) g
    vi = _mm512_fmadd_ps(k.b2, vi, _mm512_mul_ps(_mm512_mul_ps(k.c2, gi), gi));  // v = b2 v + (1-b2) g g
    __m512 denom = _mm512_fmadd_ps(_mm512_sqrt_ps(vi), k.inv, k.eps);           // sqrt(v)/sqrt(bc2) + eps
    __m512 upd = _mm512_div_ps(_mm512_mul_ps(k.step, mi), denom);
    pi = _mm512_fmsub_ps(pi, k.decay, upd);                                     // p (1 - lr wd) - update
    if (Masked) {
        _mm512_mask_storeu_ps(m + i, mask, mi);
        _mm512_mask_storeu_ps(v + i, mask, vi);
        _mm512_mask_storeu_ps(p + i, mask, pi);
    } else {
        _mm512_storeu_ps(m + i, mi);
        _mm512_storeu_ps(v + i, vi);
        _mm512_storeu_ps(p + i, pi);
    }
}

}  // namespace

void adamw_f32_avx512(float* p, const float* g, float* m, float* v, int64_t n, const AdamWConstsF32& c) {
    const Consts16 k{_mm512_set1_ps(c.beta1),     _mm512_set1_ps(c.beta2),        _mm512_set1_ps(c.one_minus_beta1),
                     _mm512_set1_ps(c.one_minus_beta2), _mm512_set1_ps(c.step_size), _mm512_set1_ps(c.inv_bc2_sqrt),
                     _mm512_set1_ps(c.eps),       _mm512_set1_ps(c.decay)};
    int64_t i = 0;
    for (; i + 16 <= n; i += 16) update16<false>(p, g, m, v, i, __mmask16(0xFFFF), k);
    if (i < n) update16<true>(p, g, m, v, i, __mmask16((1u << (n - i)) - 1), k);
}

}  // namespace femtogpt::cpu
