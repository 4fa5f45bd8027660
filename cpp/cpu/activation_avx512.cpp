// GELU (tanh form, GPT-2's) on AVX-512, float32: activation_avx2.cpp's math on 16 lanes,
// with exp(-2u) as 2^y (exp2_ps of vecmath_avx512.h); within ~2e-6 relative of the float64
// formula (held by tests/test_nn_ops.py on a dense sweep). The exact (erf) form stays on the AVX2 kernels.
//   s = 1 / (1 + exp(-2u)) = 0.5 (1 + tanh(u)),  u = sqrt(2/pi) (x + 0.044715 x^3)
//   gelu(x) = x s,  gelu'(x) = s + 2 x s (1 - s) du/dx
#include <algorithm>

#include "cpu/activation.h"
#include "cpu/vecmath_avx512.h"

namespace femtogpt::cpu {

namespace {

constexpr int64_t kParallelElems = 32768;
constexpr int64_t kBlock = 4096;  // elements per OpenMP work item

// y = -2u log2(e) = x (a + b x^2), u = sqrt(2/pi) (x + 0.044715 x^3), clamped to -2u in
// [-104, 88]: 2^y stays finite (so 1 / (1 + 2^y) is tiny, not NaN from rcp14(inf), for x < -10),
// and an infinite y (x = inf, or x^3 past the float range) never reaches 2^y's y - round(y),
// which would be NaN; 2^y is 0 at the floor (2^-150). max and min return their second operand
// when one is NaN, so a NaN x stays NaN
constexpr double kLog2e = 1.4426950408889634;
constexpr float kGeluYCap = float(88 * kLog2e);
inline __m512 gelu_y(__m512 x, __m512 x2) {
    constexpr double a = -2 * 0.7978845608028654 * kLog2e;
    const __m512 y = _mm512_mul_ps(x, _mm512_fmadd_ps(_mm512_set1_ps(float(a * 0.044715)), x2, _mm512_set1_ps(float(a))));
    return _mm512_max_ps(_mm512_set1_ps(float(-104 * kLog2e)), _mm512_min_ps(_mm512_set1_ps(kGeluYCap), y));
}

// 1 / d for 1 <= d < 2^128: rcp14 (relative error < 2^-14) and one Newton step (error ~2^-28
// before rounding), a fraction of a division's cost on the one port that divides.
inline __m512 recip(__m512 d) {
    const __m512 r = _mm512_rcp14_ps(d);
    return _mm512_mul_ps(r, _mm512_fnmadd_ps(d, r, _mm512_set1_ps(2.0f)));
}

// out (16) <- x (16). Where 2^y is capped (x below about -9.4) the result is x / 2^127 rather than
// the true value (below 1e-30): x is floored at -1e20 there so that it stays below 7e-19 (x = -3e38
// gave -1.8); max returns its second operand for a NaN x.
inline __m512 gelu16(__m512 x) {
    const __m512 e = avx512::exp2_ps(gelu_y(x, _mm512_mul_ps(x, x)));
    return _mm512_mul_ps(_mm512_max_ps(_mm512_set1_ps(-1e20f), x), recip(_mm512_add_ps(_mm512_set1_ps(1.0f), e)));
}

// dx (16) <- dout (16), x (16)
inline __m512 gelu_grad16(__m512 g, __m512 x) {
    // past x = 1e18 the derivative is exactly 1, as at 1e18; beyond ~1.8e19 x^2 would be inf and
    // 2 x s (1 - s) du 0 * inf = NaN (min returns its second operand for a NaN x)
    x = _mm512_min_ps(_mm512_set1_ps(1e18f), x);
    const __m512 one = _mm512_set1_ps(1.0f);
    const __m512 x2 = _mm512_mul_ps(x, x);
    const __m512 y = gelu_y(x, x2);
    const __m512 s = recip(_mm512_add_ps(one, avx512::exp2_ps(y)));
    // du/dx = sqrt(2/pi) (1 + 3 * 0.044715 x^2)
    const __m512 du = _mm512_mul_ps(_mm512_set1_ps(0.7978845608028654f),
                                    _mm512_fmadd_ps(_mm512_set1_ps(3 * 0.044715f), x2, one));
    const __m512 t = _mm512_mul_ps(_mm512_mul_ps(_mm512_add_ps(x, x), s), _mm512_mul_ps(_mm512_sub_ps(one, s), du));
    // where y was capped (-2u >= 88, x < -10), 2 x s (1 - s) du would grow like x^3 instead of
    // vanishing: the true derivative is below 1e-30, so 0 (as the AVX2 kernel)
    const __mmask16 tail = _mm512_cmp_ps_mask(y, _mm512_set1_ps(kGeluYCap), _CMP_GE_OQ);
    return _mm512_maskz_mul_ps(__mmask16(~tail), g, _mm512_add_ps(s, t));
}

// out (n) <- gelu(x (n)) on the calling thread, masked tail
void gelu_rows(float* out, const float* x, int64_t n) {
    int64_t i = 0;
    for (; i + 16 <= n; i += 16) _mm512_storeu_ps(out + i, gelu16(_mm512_loadu_ps(x + i)));
    if (i < n) {
        const __mmask16 m = avx512::tail_mask(n - i);
        _mm512_mask_storeu_ps(out + i, m, gelu16(_mm512_maskz_loadu_ps(m, x + i)));
    }
}

// dx (n) <- dout (n) * gelu'(x (n)) on the calling thread, masked tail; dx may be dout or x
void gelu_grad_rows(float* dx, const float* dout, const float* x, int64_t n) {
    int64_t i = 0;
    for (; i + 16 <= n; i += 16)
        _mm512_storeu_ps(dx + i, gelu_grad16(_mm512_loadu_ps(dout + i), _mm512_loadu_ps(x + i)));
    if (i < n) {
        const __mmask16 m = avx512::tail_mask(n - i);
        const __m512 g = _mm512_maskz_loadu_ps(m, dout + i), v = _mm512_maskz_loadu_ps(m, x + i);
        _mm512_mask_storeu_ps(dx + i, m, gelu_grad16(g, v));
    }
}

}  // namespace

// out (n) <- x (n)
void gelu_forward_avx512(float* out, const float* x, int64_t n, GeluApprox approx) {
    if (approx != GeluApprox::tanh) return gelu_forward_avx2(out, x, n, approx);
    const int64_t nblocks = (n + kBlock - 1) / kBlock;
#pragma omp parallel for schedule(static) if (n > kParallelElems)
    for (int64_t b = 0; b < nblocks; b++) gelu_rows(out + b * kBlock, x + b * kBlock, std::min(kBlock, n - b * kBlock));
}

// x (n) <- gelu(x (n)), on the calling thread
void gelu_inplace_serial_avx512(float* x, int64_t n, GeluApprox approx) {
    if (approx != GeluApprox::tanh) return gelu_inplace_serial_avx2(x, n, approx);
    gelu_rows(x, x, n);
}

// dx (n) <- dout (n), x (n)
void gelu_backward_avx512(float* dx, const float* dout, const float* x, int64_t n, GeluApprox approx) {
    if (approx != GeluApprox::tanh) return gelu_backward_avx2(dx, dout, x, n, approx);
    const int64_t nblocks = (n + kBlock - 1) / kBlock;
#pragma omp parallel for schedule(static) if (n > kParallelElems)
    for (int64_t b = 0; b < nblocks; b++)
        gelu_grad_rows(dx + b * kBlock, dout + b * kBlock, x + b * kBlock, std::min(kBlock, n - b * kBlock));
}

// dx <- dout, x: rows of n, on the calling thread
void gelu_backward_rows_avx512(float* dx, int64_t lddx, const float* dout, int64_t lddout, const float* x, int64_t ldx,
                               int64_t rows, int64_t n, GeluApprox approx) {
    if (approx != GeluApprox::tanh) return gelu_backward_rows_avx2(dx, lddx, dout, lddout, x, ldx, rows, n, approx);
    for (int64_t r = 0; r < rows; r++) gelu_grad_rows(dx + r * lddx, dout + r * lddout, x + r * ldx, n);
}

}  // namespace femtogpt::cpu
