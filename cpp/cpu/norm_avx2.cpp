// Layer normalization on AVX2+FMA, float32: the generic algorithm (two-pass
// mean/variance per row; backward in fixed row chunks) with 8-lane vectors and
// masked tails. Each row is still reduced by one thread in a fixed order.
#include <algorithm>
#include <cmath>

#include "cpu/norm.h"
#include "cpu/vecmath_avx2.h"
#include "parallel.h"
#include "pool.h"

namespace femtogpt::cpu {

namespace {
constexpr int64_t kParallelElems = 32768;
}

// out (N,C), mean (N), rstd (N) <- x (N,C), weight (C) | null, bias (C) | null
void layernorm_forward_avx2(float* out, float* mean, float* rstd, const float* x, const float* weight,
                            const float* bias, int64_t N, int64_t C, double eps) {
    const int64_t Cv = C & ~int64_t(7);
    const __m256i tm = avx2::tail_mask(C - Cv);
    const bool tail = C > Cv;
#pragma omp parallel for schedule(static) if (N * C > kParallelElems)
    for (int64_t n = 0; n < N; n++) {
        const float* xr = x + n * C;
        float* o = out + n * C;
        // mean = x0 + mean(x - x0): the sum runs over deviations, not over a large common offset
        const float x0 = xr[0];
        const __m256 vx0 = _mm256_set1_ps(x0);
        __m256 acc0 = _mm256_setzero_ps(), acc1 = _mm256_setzero_ps();
        int64_t c = 0;
        for (; c + 16 <= Cv; c += 16) {
            acc0 = _mm256_add_ps(acc0, _mm256_sub_ps(_mm256_loadu_ps(xr + c), vx0));
            acc1 = _mm256_add_ps(acc1, _mm256_sub_ps(_mm256_loadu_ps(xr + c + 8), vx0));
        }
        if (c < Cv) acc0 = _mm256_add_ps(acc0, _mm256_sub_ps(_mm256_loadu_ps(xr + c), vx0));
        if (tail)
            acc1 = _mm256_add_ps(acc1, _mm256_and_ps(_mm256_sub_ps(_mm256_maskload_ps(xr + Cv, tm), vx0),
                                                     _mm256_castsi256_ps(tm)));
        const float m = x0 + avx2::hsum_ps(_mm256_add_ps(acc0, acc1)) / float(C);
        const __m256 vm = _mm256_set1_ps(m);
        acc0 = _mm256_setzero_ps();
        acc1 = _mm256_setzero_ps();
        for (c = 0; c + 16 <= Cv; c += 16) {
            __m256 d0 = _mm256_sub_ps(_mm256_loadu_ps(xr + c), vm);
            __m256 d1 = _mm256_sub_ps(_mm256_loadu_ps(xr + c + 8), vm);
            acc0 = _mm256_fmadd_ps(d0, d0, acc0);
            acc1 = _mm256_fmadd_ps(d1, d1, acc1);
        }
        if (c < Cv) {
            __m256 d0 = _mm256_sub_ps(_mm256_loadu_ps(xr + c), vm);
            acc0 = _mm256_fmadd_ps(d0, d0, acc0);
        }
        if (tail) {  // masked-off lanes load 0; zero their difference too
            __m256 d1 = _mm256_and_ps(_mm256_sub_ps(_mm256_maskload_ps(xr + Cv, tm), vm), _mm256_castsi256_ps(tm));
            acc1 = _mm256_fmadd_ps(d1, d1, acc1);
        }
        const float var = avx2::hsum_ps(_mm256_add_ps(acc0, acc1)) / float(C);
        const float s = 1.0f / std::sqrt(var + float(eps));
        const __m256 vs = _mm256_set1_ps(s);
        // out = (x - m) * s * w + b: the missing affine parts are 1 and 0
        auto row = [&](int64_t c, __m256 xv) {
            __m256 y = _mm256_mul_ps(_mm256_sub_ps(xv, vm), vs);
            if (weight) y = _mm256_mul_ps(y, tail && c == Cv ? _mm256_maskload_ps(weight + c, tm)
                                                             : _mm256_loadu_ps(weight + c));
            if (bias) y = _mm256_add_ps(y, tail && c == Cv ? _mm256_maskload_ps(bias + c, tm)
                                                           : _mm256_loadu_ps(bias + c));
            return y;
        };
        for (c = 0; c < Cv; c += 8) _mm256_storeu_ps(o + c, row(c, _mm256_loadu_ps(xr + c)));
        if (tail) _mm256_maskstore_ps(o + Cv, tm, row(Cv, _mm256_maskload_ps(xr + Cv, tm)));
        mean[n] = m;
        rstd[n] = s;
    }
}

// dx (N,C), dweight (C) | null, dbias (C) | null <- dout (N,C), x (N,C), weight (C) | null, mean (N), rstd (N)
void layernorm_backward_avx2(float* dx, float* dweight, float* dbias, const float* dout, const float* x,
                             const float* weight, const float* mean, const float* rstd, int64_t N, int64_t C) {
    const int64_t R = layernorm_rows_per_chunk(N);
    const int64_t nchunks = (N + R - 1) / R;
    const int64_t Cv = C & ~int64_t(7);
    const __m256i tm = avx2::tail_mask(C - Cv);
    const bool tail = C > Cv;
    // (nchunks, 2, Cp) partial sums of dweight, dbias; Cp = C rounded up to 8 so tails need no masks here
    const int64_t Cp = (C + 7) & ~int64_t(7);
    PoolBuffer scratch(size_t(nchunks) * 2 * size_t(Cp) * sizeof(float));
    float* part = scratch.data<float>();
    auto load = [&](const float* p, int64_t c) {
        return tail && c == Cv ? _mm256_maskload_ps(p + c, tm) : _mm256_loadu_ps(p + c);
    };
#pragma omp parallel for schedule(static) if (N * C > kParallelElems)
    for (int64_t k = 0; k < nchunks; k++) {
        float* pw = part + k * 2 * Cp;
        float* pb = pw + Cp;
        std::fill(pw, pw + 2 * Cp, 0.0f);
        for (int64_t n = k * R; n < std::min(N, (k + 1) * R); n++) {
            const float* xr = x + n * C;
            const float* gr = dout + n * C;
            float* dxr = dx + n * C;
            const __m256 vm = _mm256_set1_ps(mean[n]), vs = _mm256_set1_ps(rstd[n]);
            __m256 va = _mm256_setzero_ps(), vb = _mm256_setzero_ps();
            for (int64_t c = 0; c < Cp; c += 8) {  // masked lanes load 0 for g: they add nothing
                const __m256 g = load(gr, c);
                const __m256 xhat = _mm256_mul_ps(_mm256_sub_ps(load(xr, c), vm), vs);
                const __m256 dxhat = weight ? _mm256_mul_ps(g, load(weight, c)) : g;
                va = _mm256_add_ps(va, dxhat);
                vb = _mm256_fmadd_ps(dxhat, xhat, vb);
                _mm256_store_ps(pw + c, _mm256_fmadd_ps(g, xhat, _mm256_load_ps(pw + c)));
                _mm256_store_ps(pb + c, _mm256_add_ps(g, _mm256_load_ps(pb + c)));
            }
            const __m256 a = _mm256_set1_ps(avx2::hsum_ps(va) / float(C));
            const __m256 b = _mm256_set1_ps(avx2::hsum_ps(vb) / float(C));
            for (int64_t c = 0; c < Cp; c += 8) {
                const __m256 g = load(gr, c);
                const __m256 xhat = _mm256_mul_ps(_mm256_sub_ps(load(xr, c), vm), vs);
                const __m256 dxhat = weight ? _mm256_mul_ps(g, load(weight, c)) : g;
                // dx = rstd * (dxhat - a - xhat * b)
                const __m256 d = _mm256_mul_ps(vs, _mm256_fnmadd_ps(xhat, b, _mm256_sub_ps(dxhat, a)));
                if (tail && c == Cv)
                    _mm256_maskstore_ps(dxr + c, tm, d);
                else
                    _mm256_storeu_ps(dxr + c, d);
            }
        }
    }
    sum_chunk_partials(dweight, dbias, part, nchunks, C, 2 * Cp, Cp);
}

}  // namespace femtogpt::cpu
