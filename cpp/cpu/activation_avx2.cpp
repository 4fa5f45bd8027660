// GELU on AVX2+FMA, float32: the tanh form with exp(-2u) computed as 2^y (exp2_ps), the exact
// form with exp_ps, both of vecmath_avx2.h; both stay within ~2e-6 relative of the float64 formula
// (held by tests/test_nn_ops.py on a dense sweep).
// tanh form, the generic path's math:
//   s = 1 / (1 + exp(-2u)) = 0.5 (1 + tanh(u)),  u = sqrt(2/pi) (x + 0.044715 x^3)
//   gelu(x) = x s,  gelu'(x) = s + 2 x s (1 - s) du/dx
// exact form: gelu(x) = x Phi(x), gelu'(x) = Phi(x) + x phi(x), with
//   Phi(x) = 0.5 erfc(z) for x < 0, 1 - 0.5 erfc(z) otherwise, z = |x| / sqrt(2),
//   erfc(z) = t exp(-z^2 + P(t - 1/2)), t = 2 / (2 + z),
// P a degree-10 polynomial fitted (least squares on Chebyshev nodes, z in [0, 10])
// to log(erfc(z) / t) + z^2: relative error of erfc < 4e-7 for z < 1, < 1.5e-6 for
// z < 4 in float32 (the rounding of z^2 dominates), and a relative-accurate tail
// for x << 0, where 1 + erf(x/sqrt 2) would cancel.
#include <algorithm>

#include "cpu/activation.h"
#include "cpu/vecmath_avx2.h"
#include "parallel.h"

namespace femtogpt::cpu {

namespace {

constexpr int64_t kParallelElems = 32768;
constexpr int64_t kBlock = 4096;  // elements per OpenMP work item

// y = -2u log2(e) = x (a + b x^2), u = sqrt(2/pi) (x + 0.044715 x^3): two dependent steps after x^2
inline __m256 gelu_y(__m256 x, __m256 x2) {
    constexpr double a = -2 * 0.7978845608028654 * 1.4426950408889634;
    return _mm256_mul_ps(x, _mm256_fmadd_ps(_mm256_set1_ps(float(a * 0.044715)), x2, _mm256_set1_ps(float(a))));
}

// out (8) <- x (8). Where 2^y is capped (x below about -9.4) the result is x / 2^127 rather than
// the true value (below 1e-30): the numerator is floored at -1e20 so that it stays below 6e-19
// (x = -3e38 gave -1.76); max returns its second operand for a NaN x.
inline __m256 gelu8(__m256 x) {
    const __m256 e = avx2::exp2_ps(gelu_y(x, _mm256_mul_ps(x, x)));
    return _mm256_div_ps(_mm256_max_ps(_mm256_set1_ps(-1e20f), x), _mm256_add_ps(_mm256_set1_ps(1.0f), e));
}

// dx (8) <- dout (8), x (8)
inline __m256 gelu_grad8(__m256 g, __m256 x) {
    // past x = 1e18 the derivative is exactly 1, as at 1e18; beyond ~1.8e19 x^2 would be inf and
    // 2 x s (1 - s) du 0 * inf = NaN (min returns its second operand for a NaN x)
    x = _mm256_min_ps(_mm256_set1_ps(1e18f), x);
    const __m256 one = _mm256_set1_ps(1.0f);
    const __m256 x2 = _mm256_mul_ps(x, x);
    const __m256 y = gelu_y(x, x2);
    const __m256 s = _mm256_div_ps(one, _mm256_add_ps(one, avx2::exp2_ps(y)));
    // du/dx = sqrt(2/pi) (1 + 3 * 0.044715 x^2)
    const __m256 du = _mm256_mul_ps(_mm256_set1_ps(0.7978845608028654f),
                                    _mm256_fmadd_ps(_mm256_set1_ps(3 * 0.044715f), x2, one));
    const __m256 t = _mm256_mul_ps(_mm256_mul_ps(_mm256_add_ps(x, x), s), _mm256_mul_ps(_mm256_sub_ps(one, s), du));
    // Past -2u = 88 (x < -10) the derivative is below 1e-30, and 2 x s (1 - s) du, with 2^y clamped,
    // would grow like x^3 from there (-1e6 at x = -1e15) instead of vanishing: so 0.
    const __m256 tail = _mm256_cmp_ps(y, _mm256_set1_ps(float(88 * 1.4426950408889634)), _CMP_GT_OQ);
    return _mm256_andnot_ps(tail, _mm256_mul_ps(g, _mm256_add_ps(s, t)));
}

// Phi(x) (the standard normal CDF) for 8 floats; also exp(-x^2/2) in *gauss when asked.
inline __m256 normal_cdf8(__m256 x, __m256* gauss) {
    static constexpr float P[11] = {-6.717940791e-01f, 1.345286385e+00f,  1.893711949e-01f, -3.751564706e-01f,
                                    -1.578338892e-01f, 2.820050204e-01f,  1.097603732e-01f, -2.917039445e-01f,
                                    -1.416724451e-02f, 2.575329665e-01f, -1.321883585e-01f};
    const __m256 sign = _mm256_set1_ps(-0.0f);
    const __m256 z = _mm256_mul_ps(_mm256_andnot_ps(sign, x), _mm256_set1_ps(0.7071067811865476f));
    const __m256 t = _mm256_div_ps(_mm256_set1_ps(2.0f), _mm256_add_ps(_mm256_set1_ps(2.0f), z));
    const __m256 u = _mm256_sub_ps(t, _mm256_set1_ps(0.5f));
    // P(u) by Estrin's scheme (4 dependent steps instead of Horner's 10)
    auto c = [](int k) { return _mm256_set1_ps(P[k]); };
    const __m256 u2 = _mm256_mul_ps(u, u), u4 = _mm256_mul_ps(u2, u2), u8 = _mm256_mul_ps(u4, u4);
    const __m256 q0 = _mm256_fmadd_ps(c(1), u, c(0)), q1 = _mm256_fmadd_ps(c(3), u, c(2));
    const __m256 q2 = _mm256_fmadd_ps(c(5), u, c(4)), q3 = _mm256_fmadd_ps(c(7), u, c(6));
    const __m256 q4 = _mm256_fmadd_ps(c(9), u, c(8));
    const __m256 w0 = _mm256_fmadd_ps(q1, u2, q0), w1 = _mm256_fmadd_ps(q3, u2, q2);
    const __m256 w2 = _mm256_fmadd_ps(c(10), u2, q4);
    const __m256 p = _mm256_fmadd_ps(w2, u8, _mm256_fmadd_ps(w1, u4, w0));
    const __m256 mz2 = _mm256_mul_ps(_mm256_xor_ps(z, sign), z);  // -z^2
    if (gauss) *gauss = avx2::exp_ps(mz2);
    const __m256 half_erfc = _mm256_mul_ps(_mm256_mul_ps(_mm256_set1_ps(0.5f), t), avx2::exp_ps(_mm256_add_ps(mz2, p)));
    const __m256 neg = _mm256_cmp_ps(x, _mm256_setzero_ps(), _CMP_LT_OQ);
    return _mm256_blendv_ps(_mm256_sub_ps(_mm256_set1_ps(1.0f), half_erfc), half_erfc, neg);
}

inline __m256 gelu_erf8(__m256 x) { return _mm256_mul_ps(x, normal_cdf8(x, nullptr)); }

inline __m256 gelu_erf_grad8(__m256 g, __m256 x) {
    __m256 gauss;
    const __m256 cdf = normal_cdf8(x, &gauss);
    // Phi(x) + x phi(x), phi(x) = exp(-x^2/2) / sqrt(2 pi)
    const __m256 pdf = _mm256_mul_ps(gauss, _mm256_set1_ps(0.3989422804014327f));
    return _mm256_mul_ps(g, _mm256_fmadd_ps(x, pdf, cdf));
}

// out (n) <- x (n) on the calling thread, one 8-lane function f per vector, masked tail
template <typename F>
void map1_serial(float* out, const float* x, int64_t n, F f) {
    int64_t i = 0;
    for (; i + 8 <= n; i += 8) _mm256_storeu_ps(out + i, f(_mm256_loadu_ps(x + i)));
    if (i < n) {
        const __m256i m = avx2::tail_mask(n - i);
        _mm256_maskstore_ps(out + i, m, f(_mm256_maskload_ps(x + i, m)));
    }
}

// The same, over OpenMP blocks of kBlock elements
template <typename F>
void map1(float* out, const float* x, int64_t n, F f) {
    const int64_t nblocks = (n + kBlock - 1) / kBlock;
#pragma omp parallel for schedule(static) if (n > kParallelElems)
    for (int64_t b = 0; b < nblocks; b++) {
        const int64_t begin = b * kBlock;
        map1_serial(out + begin, x + begin, std::min(kBlock, n - begin), f);
    }
}

// dx (n) <- dout (n), x (n) on the calling thread, f(dout8, x8) per vector, masked tail;
// dx may be dout or x (each vector is read before it is written)
template <typename F>
void map2_serial(float* dx, const float* dout, const float* x, int64_t n, F f) {
    int64_t i = 0;
    for (; i + 8 <= n; i += 8) _mm256_storeu_ps(dx + i, f(_mm256_loadu_ps(dout + i), _mm256_loadu_ps(x + i)));
    if (i < n) {
        const __m256i m = avx2::tail_mask(n - i);
        _mm256_maskstore_ps(dx + i, m, f(_mm256_maskload_ps(dout + i, m), _mm256_maskload_ps(x + i, m)));
    }
}

// The same, over OpenMP blocks of kBlock elements
template <typename F>
void map2(float* dx, const float* dout, const float* x, int64_t n, F f) {
    const int64_t nblocks = (n + kBlock - 1) / kBlock;
#pragma omp parallel for schedule(static) if (n > kParallelElems)
    for (int64_t b = 0; b < nblocks; b++) {
        const int64_t begin = b * kBlock;
        map2_serial(dx + begin, dout + begin, x + begin, std::min(kBlock, n - begin), f);
    }
}

}  // namespace

// out (n) <- x (n)
void gelu_forward_avx2(float* out, const float* x, int64_t n, GeluApprox approx) {
    // lambdas, not function pointers: each gets its own map1 instance with the math inlined
    if (approx == GeluApprox::tanh)
        map1(out, x, n, [](__m256 v) { return gelu8(v); });
    else
        map1(out, x, n, [](__m256 v) { return gelu_erf8(v); });
}

// x (n) <- gelu(x (n)), on the calling thread
void gelu_inplace_serial_avx2(float* x, int64_t n, GeluApprox approx) {
    if (approx == GeluApprox::tanh)
        map1_serial(x, x, n, [](__m256 v) { return gelu8(v); });
    else
        map1_serial(x, x, n, [](__m256 v) { return gelu_erf8(v); });
}

// dx (n) <- dout (n), x (n)
void gelu_backward_avx2(float* dx, const float* dout, const float* x, int64_t n, GeluApprox approx) {
    if (approx == GeluApprox::tanh)
        map2(dx, dout, x, n, [](__m256 g, __m256 v) { return gelu_grad8(g, v); });
    else
        map2(dx, dout, x, n, [](__m256 g, __m256 v) { return gelu_erf_grad8(g, v); });
}

// dx <- dout, x: rows of n, on the calling thread
void gelu_backward_rows_avx2(float* dx, int64_t lddx, const float* dout, int64_t lddout, const float* x, int64_t ldx,
                             int64_t rows, int64_t n, GeluApprox approx) {
    for (int64_t r = 0; r < rows; r++) {
        if (approx == GeluApprox::tanh)
            map2_serial(dx + r * lddx, dout + r * lddout, x + r * ldx, n,
                        [](__m256 g, __m256 v) { return gelu_grad8(g, v); });
        else
            map2_serial(dx + r * lddx, dout + r * lddout, x + r * ldx, n,
                        [](__m256 g, __m256 v) { return gelu_erf_grad8(g, v); });
    }
}

}  // namespace femtogpt::cpu
