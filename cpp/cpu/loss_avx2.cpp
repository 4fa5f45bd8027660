// Cross-entropy on AVX2+FMA, float32: the generic algorithm (row max, sum of
// exp, lse; backward exp(logit - lse) on the fly) with 8-lane vectors, the exp
// of vecmath_avx2.h and masked row tails. One thread per row, fixed order.
#include <algorithm>
#include <cmath>
#include <limits>

#include "cpu/loss.h"
#include "cpu/vecmath_avx2.h"
#include "parallel.h"

namespace femtogpt::cpu {

namespace {
constexpr int64_t kParallelElems = 32768;
}

// losses (N), lse (N) <- logits (N,V), targets (N)
template <typename I>
void cross_entropy_forward_avx2(float* losses, float* lse, const float* logits, const I* targets, int64_t N,
                                int64_t V, int64_t ignore_index) {
    const int64_t Vv = V & ~int64_t(7);
    const __m256i tm = avx2::tail_mask(V - Vv);
    const bool tail = V > Vv;
    const __m256 ninf = _mm256_set1_ps(-std::numeric_limits<float>::infinity());
#pragma omp parallel for schedule(static) if (N * V > kParallelElems)
    for (int64_t n = 0; n < N; n++) {
        const float* z = logits + n * V;
        __m256 vmax = ninf;
        for (int64_t v = 0; v < Vv; v += 8) vmax = _mm256_max_ps(vmax, _mm256_loadu_ps(z + v));
        if (tail) vmax = _mm256_max_ps(vmax, _mm256_blendv_ps(ninf, _mm256_maskload_ps(z + Vv, tm),
                                                              _mm256_castsi256_ps(tm)));
        const float m = avx2::hmax_ps(vmax);
        const __m256 vm = _mm256_set1_ps(m);
        __m256 s0 = _mm256_setzero_ps(), s1 = _mm256_setzero_ps();
        int64_t v = 0;
        for (; v + 16 <= Vv; v += 16) {
            s0 = _mm256_add_ps(s0, avx2::exp_ps(_mm256_sub_ps(_mm256_loadu_ps(z + v), vm)));
            s1 = _mm256_add_ps(s1, avx2::exp_ps(_mm256_sub_ps(_mm256_loadu_ps(z + v + 8), vm)));
        }
        if (v < Vv) s0 = _mm256_add_ps(s0, avx2::exp_ps(_mm256_sub_ps(_mm256_loadu_ps(z + v), vm)));
        if (tail)
            s1 = _mm256_add_ps(s1, _mm256_and_ps(avx2::exp_ps(_mm256_sub_ps(_mm256_maskload_ps(z + Vv, tm), vm)),
                                                 _mm256_castsi256_ps(tm)));
        const float l = m + std::log(avx2::hsum_ps(_mm256_add_ps(s0, s1)));
        lse[n] = l;
        const int64_t t = int64_t(targets[n]);
        losses[n] = t == ignore_index ? 0.0f : l - z[t];
    }
}

// dlogits (N,V) <- g (N, stride g_stride), logits (N,V), targets (N), lse (N)
template <typename I>
void cross_entropy_backward_avx2(float* dlogits, const float* g, int64_t g_stride, const float* logits,
                                 const I* targets, const float* lse, int64_t N, int64_t V, int64_t ignore_index) {
    const int64_t Vv = V & ~int64_t(7);
    const __m256i tm = avx2::tail_mask(V - Vv);
    const bool tail = V > Vv;
#pragma omp parallel for schedule(static) if (N * V > kParallelElems)
    for (int64_t n = 0; n < N; n++) {
        const int64_t t = int64_t(targets[n]);
        float* d = dlogits + n * V;
        if (t == ignore_index) {
            std::fill(d, d + V, 0.0f);
            continue;
        }
        const float* z = logits + n * V;
        const float gn = g[n * g_stride];
        const __m256 vg = _mm256_set1_ps(gn), vl = _mm256_set1_ps(lse[n]);
        for (int64_t v = 0; v < Vv; v += 8)
            _mm256_storeu_ps(d + v, _mm256_mul_ps(vg, avx2::exp_ps(_mm256_sub_ps(_mm256_loadu_ps(z + v), vl))));
        if (tail)
            _mm256_maskstore_ps(d + Vv, tm,
                                _mm256_mul_ps(vg, avx2::exp_ps(_mm256_sub_ps(_mm256_maskload_ps(z + Vv, tm), vl))));
        d[t] -= gn;
    }
}

template void cross_entropy_forward_avx2<int32_t>(float*, float*, const float*, const int32_t*, int64_t, int64_t,
                                                  int64_t);
template void cross_entropy_forward_avx2<int64_t>(float*, float*, const float*, const int64_t*, int64_t, int64_t,
                                                  int64_t);
template void cross_entropy_backward_avx2<int32_t>(float*, const float*, int64_t, const float*, const int32_t*,
                                                   const float*, int64_t, int64_t, int64_t);
template void cross_entropy_backward_avx2<int64_t>(float*, const float*, int64_t, const float*, const int64_t*,
                                                   const float*, int64_t, int64_t, int64_t);

}  // namespace femtogpt::cpu
