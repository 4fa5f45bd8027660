// Softmax and log-softmax on AVX2+FMA, float32: the generic algorithm with
// 8-lane rows, the vector exp of vecmath_avx2.h and masked tails. One thread per
// row, each row's sums in a fixed order.
#include <cmath>
#include <limits>

#include "cpu/softmax.h"
#include "cpu/vecmath_avx2.h"
#include "parallel.h"

namespace femtogpt::cpu {

namespace {

constexpr int64_t kParallelElems = 32768;

// The lanes of one row: full vectors [0, Cv), then a masked tail of C - Cv lanes.
struct Row {
    int64_t C, Cv;
    __m256i tm;
    bool tail;
    explicit Row(int64_t C_) : C(C_), Cv(C_ & ~int64_t(7)), tm(avx2::tail_mask(C_ - Cv)), tail(C_ > Cv) {}
    __m256 load(const float* p) const { return _mm256_maskload_ps(p + Cv, tm); }  // the tail; other lanes 0
    __m256 keep(__m256 v) const { return _mm256_and_ps(v, _mm256_castsi256_ps(tm)); }
    void store(float* p, __m256 v) const { _mm256_maskstore_ps(p + Cv, tm, v); }
};

inline float row_max(const float* x, const Row& r) {
    const __m256 ninf = _mm256_set1_ps(-std::numeric_limits<float>::infinity());
    __m256 m = ninf;
    for (int64_t c = 0; c < r.Cv; c += 8) m = _mm256_max_ps(m, _mm256_loadu_ps(x + c));
    if (r.tail) m = _mm256_max_ps(m, _mm256_blendv_ps(ninf, r.load(x), _mm256_castsi256_ps(r.tm)));
    return avx2::hmax_ps(m);
}

inline float sum_exp(const float* x, float m, const Row& r) {
    const __m256 vm = _mm256_set1_ps(m);
    __m256 s = _mm256_setzero_ps();
    for (int64_t c = 0; c < r.Cv; c += 8) s = _mm256_add_ps(s, avx2::exp_ps(_mm256_sub_ps(_mm256_loadu_ps(x + c), vm)));
    if (r.tail) s = _mm256_add_ps(s, r.keep(avx2::exp_ps(_mm256_sub_ps(r.load(x), vm))));
    return avx2::hsum_ps(s);
}

}  // namespace

// out (N,C) <- x (N,C)
void softmax_forward_avx2(float* out, const float* x, int64_t N, int64_t C) {
    const Row r(C);
#pragma omp parallel for schedule(static) if (N * C > kParallelElems)
    for (int64_t n = 0; n < N; n++) {
        const float* xr = x + n * C;
        float* o = out + n * C;
        const __m256 vm = _mm256_set1_ps(row_max(xr, r));
        __m256 s = _mm256_setzero_ps();
        for (int64_t c = 0; c < r.Cv; c += 8) {
            const __m256 e = avx2::exp_ps(_mm256_sub_ps(_mm256_loadu_ps(xr + c), vm));
            _mm256_storeu_ps(o + c, e);
            s = _mm256_add_ps(s, e);
        }
        __m256 et = _mm256_setzero_ps();
        if (r.tail) {
            et = r.keep(avx2::exp_ps(_mm256_sub_ps(r.load(xr), vm)));
            s = _mm256_add_ps(s, et);
        }
        const __m256 inv = _mm256_set1_ps(1.0f / avx2::hsum_ps(s));
        for (int64_t c = 0; c < r.Cv; c += 8) _mm256_storeu_ps(o + c, _mm256_mul_ps(_mm256_loadu_ps(o + c), inv));
        if (r.tail) r.store(o, _mm256_mul_ps(et, inv));
    }
}

// dx (N,C) <- dout (N,C), out (N,C): out * (dout - sum(dout * out))
void softmax_backward_avx2(float* dx, const float* dout, const float* out, int64_t N, int64_t C) {
    const Row r(C);
#pragma omp parallel for schedule(static) if (N * C > kParallelElems)
    for (int64_t n = 0; n < N; n++) {
        const float* g = dout + n * C;
        const float* y = out + n * C;
        __m256 acc = _mm256_setzero_ps();
        for (int64_t c = 0; c < r.Cv; c += 8) acc = _mm256_fmadd_ps(_mm256_loadu_ps(g + c), _mm256_loadu_ps(y + c), acc);
        if (r.tail) acc = _mm256_fmadd_ps(r.load(g), r.load(y), acc);
        const __m256 dot = _mm256_set1_ps(avx2::hsum_ps(acc));
        for (int64_t c = 0; c < r.Cv; c += 8)
            _mm256_storeu_ps(dx + n * C + c,
                             _mm256_mul_ps(_mm256_loadu_ps(y + c), _mm256_sub_ps(_mm256_loadu_ps(g + c), dot)));
        if (r.tail) r.store(dx + n * C, _mm256_mul_ps(r.load(y), _mm256_sub_ps(r.load(g), dot)));
    }
}

// out (N,C) <- x (N,C): x - max - log(sum exp(x - max))
void log_softmax_forward_avx2(float* out, const float* x, int64_t N, int64_t C) {
    const Row r(C);
#pragma omp parallel for schedule(static) if (N * C > kParallelElems)
    for (int64_t n = 0; n < N; n++) {
        const float* xr = x + n * C;
        const float m = row_max(xr, r);
        const __m256 lse = _mm256_set1_ps(m + std::log(sum_exp(xr, m, r)));
        for (int64_t c = 0; c < r.Cv; c += 8) _mm256_storeu_ps(out + n * C + c, _mm256_sub_ps(_mm256_loadu_ps(xr + c), lse));
        if (r.tail) r.store(out + n * C, _mm256_sub_ps(r.load(xr), lse));
    }
}

// dx (N,C) <- dout (N,C), out (N,C): dout - exp(out) * sum(dout)
void log_softmax_backward_avx2(float* dx, const float* dout, const float* out, int64_t N, int64_t C) {
    const Row r(C);
#pragma omp parallel for schedule(static) if (N * C > kParallelElems)
    for (int64_t n = 0; n < N; n++) {
        const float* g = dout + n * C;
        const float* y = out + n * C;
        __m256 acc = _mm256_setzero_ps();
        for (int64_t c = 0; c < r.Cv; c += 8) acc = _mm256_add_ps(acc, _mm256_loadu_ps(g + c));
        if (r.tail) acc = _mm256_add_ps(acc, r.load(g));
        const __m256 s = _mm256_set1_ps(avx2::hsum_ps(acc));
        for (int64_t c = 0; c < r.Cv; c += 8)
            _mm256_storeu_ps(dx + n * C + c,
                             _mm256_fnmadd_ps(avx2::exp_ps(_mm256_loadu_ps(y + c)), s, _mm256_loadu_ps(g + c)));
        if (r.tail) r.store(dx + n * C, _mm256_fnmadd_ps(avx2::exp_ps(r.load(y)), s, r.load(g)));
    }
}

}  // namespace femtogpt::cpu
