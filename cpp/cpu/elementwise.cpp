#include "cpu/elementwise.h"

#include <cstring>
#include <utility>
#include <vector>

#include "cpu/chunking.h"
#include "cpu/reduce.h"

namespace femtogpt::cpu {

namespace {

// Applies out[i] = op(a[i], b[i % nb]) over [begin, end) as runs that do not wrap
// around b, so each inner loop is a plain vectorizable stride-1 loop. out may be
// a (in place), so the two are not declared __restrict.
template <typename T, typename Op>
inline void bcast_range(T* out, const T* a, const T* __restrict b, int64_t begin, int64_t end,
                        int64_t nb, Op op) {
    if (nb == 1) {
        const T b0 = b[0];
        for (int64_t i = begin; i < end; i++) out[i] = op(a[i], b0);
        return;
    }
    int64_t i = begin;
    while (i < end) {
        int64_t j = i % nb;
        int64_t len = std::min(nb - j, end - i);
        T* o = out + i;
        const T* x = a + i;
        const T* __restrict y = b + j;
        for (int64_t k = 0; k < len; k++) o[k] = op(x[k], y[k]);
        i += len;
    }
}

}  // namespace

template <typename T>
void add(T* out, const T* a, const T* b, int64_t n, int64_t nb, T alpha) {
    if (alpha == T(1)) {
        for_chunks(n, [&](int64_t s, int64_t e) { bcast_range(out, a, b, s, e, nb, [](T x, T y) { return x + y; }); });
    } else {
        for_chunks(n, [&](int64_t s, int64_t e) {
            bcast_range(out, a, b, s, e, nb, [alpha](T x, T y) { return x + alpha * y; });
        });
    }
}

template <typename T>
void add_reference(T* out, const T* a, const T* b, int64_t n, int64_t nb, T alpha) {
    for (int64_t i = 0; i < n; i++) out[i] = a[i] + alpha * b[i % nb];
}

template <typename T>
void mul(T* out, const T* a, const T* b, int64_t n, int64_t nb) {
    for_chunks(n, [&](int64_t s, int64_t e) { bcast_range(out, a, b, s, e, nb, [](T x, T y) { return x * y; }); });
}

template <typename T>
void mul_reference(T* out, const T* a, const T* b, int64_t n, int64_t nb) {
    for (int64_t i = 0; i < n; i++) out[i] = a[i] * b[i % nb];
}

template <typename T>
void scale(T* out, const T* a, T s, int64_t n) {
    for_chunks(n, [&](int64_t begin, int64_t end) {
        T* __restrict o = out;
        const T* __restrict x = a;
        for (int64_t i = begin; i < end; i++) o[i] = x[i] * s;
    });
}

template <typename T>
void axpy(T* dst, const T* src, T alpha, int64_t n) {
    for_chunks(n, [&](int64_t begin, int64_t end) {
        T* __restrict d = dst;
        const T* __restrict x = src;
        if (alpha == T(1)) {
            for (int64_t i = begin; i < end; i++) d[i] += x[i];
        } else {
            for (int64_t i = begin; i < end; i++) d[i] += alpha * x[i];
        }
    });
}

template <typename T>
void fill(T* dst, T value, int64_t n) {
    for_chunks(n, [&](int64_t begin, int64_t end) {
        for (int64_t i = begin; i < end; i++) dst[i] = value;
    });
}

void scale_many(const FloatSpan* spans, int64_t count, double s) {
    std::vector<std::pair<int64_t, int64_t>> pieces;  // (span, first element)
    for (int64_t k = 0; k < count; k++)
        for (int64_t b = 0; b < spans[k].n; b += kChunk) pieces.emplace_back(k, b);
    const int64_t np = int64_t(pieces.size());
#pragma omp parallel for schedule(static) if (np > 1)
    for (int64_t i = 0; i < np; i++) {
        const FloatSpan& sp = spans[pieces[size_t(i)].first];
        int64_t b = pieces[size_t(i)].second, e = std::min(sp.n, b + kChunk);
        if (sp.f64) {
            double* x = static_cast<double*>(sp.data);
            for (int64_t j = b; j < e; j++) x[j] *= s;
        } else {
            float* x = static_cast<float*>(sp.data);
            const float sf = float(s);
            for (int64_t j = b; j < e; j++) x[j] *= sf;
        }
    }
}

void copy_bytes(void* dst, const void* src, size_t nbytes) {
    // chunks of 256 KiB
    for_chunks(int64_t(nbytes), [&](int64_t s, int64_t e) {
        std::memcpy(static_cast<char*>(dst) + s, static_cast<const char*>(src) + s, size_t(e - s));
    }, int64_t(1) << 18);
}

#define FG_INSTANTIATE(T)                                                          \
    template void add<T>(T*, const T*, const T*, int64_t, int64_t, T);            \
    template void add_reference<T>(T*, const T*, const T*, int64_t, int64_t, T);  \
    template void mul<T>(T*, const T*, const T*, int64_t, int64_t);               \
    template void mul_reference<T>(T*, const T*, const T*, int64_t, int64_t);     \
    template void scale<T>(T*, const T*, T, int64_t);                             \
    template void axpy<T>(T*, const T*, T, int64_t);
FG_INSTANTIATE(float)
FG_INSTANTIATE(double)
#undef FG_INSTANTIATE

template void fill<float>(float*, float, int64_t);
template void fill<double>(double*, double, int64_t);
template void fill<int32_t>(int32_t*, int32_t, int64_t);
template void fill<int64_t>(int64_t*, int64_t, int64_t);

}  // namespace femtogpt::cpu
