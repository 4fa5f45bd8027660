// Layer normalization: generic kernels (OpenMP over rows) and the reference.
#include "cpu/norm.h"

#include <algorithm>
#include <cmath>
#include <type_traits>
#include <vector>

#include "cpu/isa.h"
#include "parallel.h"
#include "pool.h"

namespace femtogpt::cpu {

namespace {
constexpr int64_t kParallelElems = 32768;  // below this, threads cost more than they save
}

// ---------------------------------------------------------------- reference
// The obvious loops, accumulating in double; the twin every fast path is held to.

// out (N,C), mean (N), rstd (N) <- x (N,C), weight (C) | null, bias (C) | null
template <typename T>
void layernorm_forward_reference(T* out, T* mean, T* rstd, const T* x, const T* weight, const T* bias, int64_t N,
                                 int64_t C, double eps) {
    for (int64_t n = 0; n < N; n++) {
        const T* xr = x + n * C;
        double m = 0;
        for (int64_t c = 0; c < C; c++) m += xr[c];
        m /= double(C);
        double v = 0;
        for (int64_t c = 0; c < C; c++) v += (xr[c] - m) * (xr[c] - m);
        v /= double(C);
        double s = 1.0 / std::sqrt(v + eps);
        for (int64_t c = 0; c < C; c++) {
            double o = (xr[c] - m) * s;  // xhat
            if (weight) o *= weight[c];
            if (bias) o += bias[c];
            out[n * C + c] = T(o);
        }
        mean[n] = T(m);
        rstd[n] = T(s);
    }
}

// dx (N,C), dweight (C) | null, dbias (C) | null <- dout (N,C), x (N,C), weight (C) | null, mean (N), rstd (N)
template <typename T>
void layernorm_backward_reference(T* dx, T* dweight, T* dbias, const T* dout, const T* x, const T* weight,
                                  const T* mean, const T* rstd, int64_t N, int64_t C) {
    std::vector<double> dw(size_t(C), 0.0), db(size_t(C), 0.0);
    for (int64_t n = 0; n < N; n++) {
        const T* xr = x + n * C;
        const T* gr = dout + n * C;
        double m = mean[n], s = rstd[n];
        // out = xhat * w + b, xhat = (x - mean) * rstd:
        // dx = rstd * (dxhat - mean(dxhat) - xhat * mean(dxhat * xhat)), dxhat = dout * w
        double a = 0, b = 0;
        for (int64_t c = 0; c < C; c++) {
            double xhat = (xr[c] - m) * s;
            double dxhat = double(gr[c]) * (weight ? double(weight[c]) : 1.0);
            a += dxhat;
            b += dxhat * xhat;
            dw[size_t(c)] += double(gr[c]) * xhat;
            db[size_t(c)] += gr[c];
        }
        a /= double(C);
        b /= double(C);
        for (int64_t c = 0; c < C; c++) {
            double xhat = (xr[c] - m) * s;
            double dxhat = double(gr[c]) * (weight ? double(weight[c]) : 1.0);
            dx[n * C + c] = T(s * (dxhat - a - xhat * b));
        }
    }
    for (int64_t c = 0; c < C; c++) {
        if (dweight) dweight[c] = T(dw[size_t(c)]);
        if (dbias) dbias[c] = T(db[size_t(c)]);
    }
}

// ---------------------------------------------------------------- generic fast path
// Rows in parallel; each row's sums vectorized by `omp simd` (a fixed lane
// count per build, so still deterministic), accumulating in T.

// out (N,C), mean (N), rstd (N) <- x (N,C), weight (C) | null, bias (C) | null
template <typename T>
void layernorm_forward(T* out, T* mean, T* rstd, const T* x, const T* weight, const T* bias, int64_t N, int64_t C,
                       double eps) {
    if constexpr (std::is_same_v<T, float>) {
        if (active_isa() == Isa::avx512)
            return layernorm_forward_avx512(out, mean, rstd, x, weight, bias, N, C, eps);
        if (active_isa() == Isa::avx2) return layernorm_forward_avx2(out, mean, rstd, x, weight, bias, N, C, eps);
    }
#pragma omp parallel for schedule(static) if (N * C > kParallelElems)
    for (int64_t n = 0; n < N; n++) {
        const T* xr = x + n * C;
        T* o = out + n * C;
        // mean = x0 + mean(x - x0): the sum runs over deviations, not over a large common offset
        const T x0 = xr[0];
        T sum = 0;
#pragma omp simd reduction(+ : sum)
        for (int64_t c = 0; c < C; c++) sum += xr[c] - x0;
        T m = x0 + sum / T(C);
        T var = 0;
#pragma omp simd reduction(+ : var)
        for (int64_t c = 0; c < C; c++) var += (xr[c] - m) * (xr[c] - m);
        var /= T(C);
        T s = T(1) / std::sqrt(var + T(eps));
        if (weight && bias) {
#pragma omp simd
            for (int64_t c = 0; c < C; c++) o[c] = (xr[c] - m) * s * weight[c] + bias[c];
        } else if (weight) {
#pragma omp simd
            for (int64_t c = 0; c < C; c++) o[c] = (xr[c] - m) * s * weight[c];
        } else if (bias) {
#pragma omp simd
            for (int64_t c = 0; c < C; c++) o[c] = (xr[c] - m) * s + bias[c];
        } else {
#pragma omp simd
            for (int64_t c = 0; c < C; c++) o[c] = (xr[c] - m) * s;
        }
        mean[n] = m;
        rstd[n] = s;
    }
}

// dx (N,C), dweight (C) | null, dbias (C) | null <- dout (N,C), x (N,C), weight (C) | null, mean (N), rstd (N)
// Rows go in chunks of layernorm_rows_per_chunk(N); chunk k writes its partial sums of
// dweight/dbias to scratch row k; the partials are then summed in chunk order.
template <typename T>
void layernorm_backward(T* dx, T* dweight, T* dbias, const T* dout, const T* x, const T* weight, const T* mean,
                        const T* rstd, int64_t N, int64_t C) {
    if constexpr (std::is_same_v<T, float>) {
        if (active_isa() == Isa::avx512)
            return layernorm_backward_avx512(dx, dweight, dbias, dout, x, weight, mean, rstd, N, C);
        if (active_isa() == Isa::avx2)
            return layernorm_backward_avx2(dx, dweight, dbias, dout, x, weight, mean, rstd, N, C);
    }
    const int64_t R = layernorm_rows_per_chunk(N);
    const int64_t nchunks = (N + R - 1) / R;
    PoolBuffer scratch(size_t(nchunks) * 2 * size_t(C) * sizeof(T));  // (nchunks, 2, C): dweight, dbias partials
    T* part = scratch.data<T>();
#pragma omp parallel for schedule(static) if (N * C > kParallelElems)
    for (int64_t k = 0; k < nchunks; k++) {
        T* pw = part + k * 2 * C;
        T* pb = pw + C;
        for (int64_t c = 0; c < C; c++) pw[c] = pb[c] = 0;
        for (int64_t n = k * R; n < std::min(N, (k + 1) * R); n++) {
            const T* xr = x + n * C;
            const T* gr = dout + n * C;
            T* dxr = dx + n * C;
            const T m = mean[n], s = rstd[n];
            T a = 0, b = 0;
            if (weight) {
#pragma omp simd reduction(+ : a, b)
                for (int64_t c = 0; c < C; c++) {
                    T dxhat = gr[c] * weight[c];
                    a += dxhat;
                    b += dxhat * ((xr[c] - m) * s);
                }
            } else {
#pragma omp simd reduction(+ : a, b)
                for (int64_t c = 0; c < C; c++) {
                    a += gr[c];
                    b += gr[c] * ((xr[c] - m) * s);
                }
            }
            a /= T(C);
            b /= T(C);
#pragma omp simd
            for (int64_t c = 0; c < C; c++) {  // g read before dx is written: dx may be dout
                const T g = gr[c];
                T xhat = (xr[c] - m) * s;
                T dxhat = weight ? g * weight[c] : g;
                pw[c] += g * xhat;
                pb[c] += g;
                dxr[c] = s * (dxhat - a - xhat * b);
            }
        }
    }
    sum_chunk_partials(dweight, dbias, part, nchunks, C, 2 * C, C);
}

#define FG_INSTANTIATE(T)                                                                                         \
    template void layernorm_forward<T>(T*, T*, T*, const T*, const T*, const T*, int64_t, int64_t, double);       \
    template void layernorm_forward_reference<T>(T*, T*, T*, const T*, const T*, const T*, int64_t, int64_t,      \
                                                 double);                                                         \
    template void layernorm_backward<T>(T*, T*, T*, const T*, const T*, const T*, const T*, const T*, int64_t,    \
                                        int64_t);                                                                 \
    template void layernorm_backward_reference<T>(T*, T*, T*, const T*, const T*, const T*, const T*, const T*,   \
                                                  int64_t, int64_t);
FG_INSTANTIATE(float)
FG_INSTANTIATE(double)
#undef FG_INSTANTIATE

}  // namespace femtogpt::cpu
