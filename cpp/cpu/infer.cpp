// Generic and reference kernels of cached inference, and the linear_rows driver that
// splits output columns over threads (see infer.h for the contracts).
#include "cpu/infer.h"

#include <algorithm>
#include <cmath>
#include <vector>

#include "cpu/isa.h"
#include "parallel.h"

namespace femtogpt::cpu {

namespace {

// A thread's share must be worth this much work (flops, with every weight byte read
// counting 4: small batches are bound by streaming the weights) to pay for its fork and
// join. (Whether a team pays at all on a busy machine, the engine finds out by timing.)
constexpr int64_t kMinWorkPerThread = int64_t(1) << 21;
constexpr int64_t kColumnAlign = 8;  // thread ranges of output columns start at multiples of this

// out columns [n0, n1), plain loops in T.
template <typename T>
void linear_rows_generic(T* out, int64_t ldo, const T* x, int64_t ldx, const T* w, const T* bias, int64_t M,
                         int64_t n0, int64_t n1, int64_t K, bool accumulate) {
    for (int64_t n = n0; n < n1; n++) {
        const T* wr = w + n * K;
        for (int64_t m = 0; m < M; m++) {
            const T* xr = x + m * ldx;
            T s = 0;
            for (int64_t k = 0; k < K; k++) s += xr[k] * wr[k];
            if (bias) s += bias[n];
            T& o = out[m * ldo + n];
            o = accumulate ? o + s : s;
        }
    }
}

}  // namespace

template <typename T>
void linear_rows_reference(T* out, int64_t ldo, const T* x, int64_t ldx, const T* w, const T* bias, int64_t M,
                           int64_t N, int64_t K, bool accumulate) {
    for (int64_t m = 0; m < M; m++)
        for (int64_t n = 0; n < N; n++) {
            double s = 0;
            for (int64_t k = 0; k < K; k++) s += double(x[m * ldx + k]) * double(w[n * K + k]);
            if (bias) s += double(bias[n]);
            T& o = out[m * ldo + n];
            o = accumulate ? T(double(o) + s) : T(s);
        }
}

int linear_rows_threads(int64_t M, int64_t N, int64_t K) {
    int64_t nt = in_parallel() ? 1 : num_threads();
    nt = std::min(nt, std::max<int64_t>(1, (2 * M * N * K + 16 * N * K) / kMinWorkPerThread));
    return int(std::min(nt, std::max<int64_t>(1, N / kColumnAlign)));
}

template <typename T>
void linear_rows(T* out, int64_t ldo, const T* x, int64_t ldx, const T* w, const T* bias, int64_t M, int64_t N,
                 int64_t K, bool accumulate) {
    if (M <= 0 || N <= 0) return;
    const bool avx2 = std::is_same_v<T, float> && active_isa() != Isa::generic;
    const int64_t nt = linear_rows_threads(M, N, K);
    auto run = [&](int64_t n0, int64_t n1) {
        if (n1 <= n0) return;
        if constexpr (std::is_same_v<T, float>) {
            if (avx2) return linear_rows_avx2(out, ldo, x, ldx, w, bias, M, n0, n1, K, accumulate);
        }
        linear_rows_generic(out, ldo, x, ldx, w, bias, M, n0, n1, K, accumulate);
    };
    if (nt <= 1) return run(0, N);
    const int64_t chunks = (N + kColumnAlign - 1) / kColumnAlign;
#pragma omp parallel for schedule(static) num_threads(int(nt))
    for (int64_t t = 0; t < nt; t++) {
        const int64_t c0 = chunks * t / nt, c1 = chunks * (t + 1) / nt;
        run(std::min(N, c0 * kColumnAlign), std::min(N, c1 * kColumnAlign));
    }
}

template <typename T>
void pack_linear_tiles(T* wp, const T* w, int64_t N, int64_t K) {
    if constexpr (std::is_same_v<T, float>) {
        if (best_isa() != Isa::generic) return pack_linear_tiles_avx2(wp, w, N, K);
    }
    const int64_t P = kPackTile;
    for (int64_t t = 0; t < N / P; t++)
        for (int64_t kc = 0; kc < K / P; kc++) {
            T* dst = wp + (t * (K / P) + kc) * P * P;
            for (int64_t j = 0; j < P; j++) std::copy_n(w + (t * P + j) * K + kc * P, P, dst + j * P);
        }
}

void linear_packed(float* out, int64_t ldo, const float* x, int64_t ldx, const float* wp, const float* bias,
                   int64_t M, int64_t N, int64_t K, bool accumulate) {
    if (M <= 0 || N <= 0) return;
    const int64_t nt = linear_rows_threads(M, N, K);
    if (nt <= 1) return linear_packed_avx2(out, ldo, x, ldx, wp, bias, M, 0, N, K, accumulate);
    const int64_t chunks = N / kPackTile;
#pragma omp parallel for schedule(static) num_threads(int(nt))
    for (int64_t t = 0; t < nt; t++) {
        const int64_t c0 = chunks * t / nt, c1 = chunks * (t + 1) / nt;
        if (c1 > c0) linear_packed_avx2(out, ldo, x, ldx, wp, bias, M, c0 * kPackTile, c1 * kPackTile, K, accumulate);
    }
}

template <typename T>
void attention_cached_reference(T* out, int64_t ldo, const T* q, int64_t ldq, const T* kt, int64_t ldk, const T* v,
                                int64_t past, int64_t n, int64_t D, T scale) {
    std::vector<double> s(size_t(past + n));
    std::vector<double> acc(static_cast<size_t>(D));
    for (int64_t i = 0; i < n; i++) {
        const int64_t tk = past + i + 1;
        double mx = -INFINITY;
        for (int64_t t = 0; t < tk; t++) {
            double d = 0;
            for (int64_t j = 0; j < D; j++) d += double(q[i * ldq + j]) * double(kt[j * ldk + t]);
            s[size_t(t)] = d * double(scale);
            mx = std::max(mx, s[size_t(t)]);
        }
        double z = 0;
        std::fill(acc.begin(), acc.end(), 0.0);
        for (int64_t t = 0; t < tk; t++) {
            const double p = std::exp(s[size_t(t)] - mx);
            z += p;
            for (int64_t j = 0; j < D; j++) acc[size_t(j)] += p * double(v[t * D + j]);
        }
        for (int64_t j = 0; j < D; j++) out[i * ldo + j] = T(acc[size_t(j)] / z);
    }
}

template <typename T>
void attention_cached(T* out, int64_t ldo, const T* q, int64_t ldq, const T* kt, int64_t ldk, const T* v,
                      int64_t past, int64_t n, int64_t D, T scale, T* scratch) {
    if constexpr (std::is_same_v<T, float>) {
        if (active_isa() != Isa::generic)
            return attention_cached_avx2(out, ldo, q, ldq, kt, ldk, v, past, n, D, scale, scratch);
    }
    for (int64_t i = 0; i < n; i++) {
        const int64_t tk = past + i + 1;
        const T* qi = q + i * ldq;
        std::fill(scratch, scratch + tk, T(0));
        for (int64_t j = 0; j < D; j++) {  // scores of all keys, one dimension at a time
            const T qj = qi[j];
            const T* kj = kt + j * ldk;
            for (int64_t t = 0; t < tk; t++) scratch[t] += qj * kj[t];
        }
        T mx = -INFINITY;
        for (int64_t t = 0; t < tk; t++) {
            scratch[t] *= scale;
            mx = std::max(mx, scratch[t]);
        }
        T z = 0;
        for (int64_t t = 0; t < tk; t++) {
            scratch[t] = std::exp(scratch[t] - mx);
            z += scratch[t];
        }
        T* o = out + i * ldo;
        std::fill(o, o + D, T(0));
        for (int64_t t = 0; t < tk; t++) {
            const T p = scratch[t];
            for (int64_t j = 0; j < D; j++) o[j] += p * v[t * D + j];
        }
        const T inv = T(1) / z;
        for (int64_t j = 0; j < D; j++) o[j] *= inv;
    }
}

template <typename T>
void layernorm_rows(T* out, const T* x, const T* weight, const T* bias, int64_t N, int64_t C, double eps) {
    if constexpr (std::is_same_v<T, float>) {
        if (active_isa() != Isa::generic) return layernorm_rows_avx2(out, x, weight, bias, N, C, eps);
    }
    for (int64_t n = 0; n < N; n++) {
        const T* xr = x + n * C;
        T* o = out + n * C;
        T sum = 0;
        for (int64_t c = 0; c < C; c++) sum += xr[c];
        const T m = sum / T(C);
        T var = 0;
        for (int64_t c = 0; c < C; c++) var += (xr[c] - m) * (xr[c] - m);
        const T s = T(1) / std::sqrt(var / T(C) + T(eps));
        for (int64_t c = 0; c < C; c++) {
            T y = (xr[c] - m) * s;
            if (weight) y *= weight[c];
            if (bias) y += bias[c];
            o[c] = y;
        }
    }
}

template <typename T>
void gelu_tanh_rows(T* out, const T* x, int64_t n) {
    if constexpr (std::is_same_v<T, float>) {
        if (active_isa() != Isa::generic) return gelu_tanh_rows_avx2(out, x, n);
    }
    for (int64_t i = 0; i < n; i++) {
        const T v = x[i];
        out[i] = T(0.5) * v * (T(1) + std::tanh(T(0.7978845608028654) * (v + T(0.044715) * v * v * v)));
    }
}

#define FG_INSTANTIATE(T)                                                                                          \
    template void linear_rows<T>(T*, int64_t, const T*, int64_t, const T*, const T*, int64_t, int64_t, int64_t,     \
                                 bool);                                                                            \
    template void pack_linear_tiles<T>(T*, const T*, int64_t, int64_t);                                            \
    template void linear_rows_reference<T>(T*, int64_t, const T*, int64_t, const T*, const T*, int64_t, int64_t,   \
                                           int64_t, bool);                                                         \
    template void attention_cached<T>(T*, int64_t, const T*, int64_t, const T*, int64_t, const T*, int64_t,        \
                                      int64_t, int64_t, T, T*);                                                    \
    template void attention_cached_reference<T>(T*, int64_t, const T*, int64_t, const T*, int64_t, const T*,       \
                                                int64_t, int64_t, int64_t, T);                               \
    template void layernorm_rows<T>(T*, const T*, const T*, const T*, int64_t, int64_t, double);                   \
    template void gelu_tanh_rows<T>(T*, const T*, int64_t);
FG_INSTANTIATE(float)
FG_INSTANTIATE(double)
#undef FG_INSTANTIATE

}  // namespace femtogpt::cpu
