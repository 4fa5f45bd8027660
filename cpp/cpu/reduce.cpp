#include "cpu/reduce.h"

#include <algorithm>
#include <type_traits>
#include <utility>
#include <vector>

#include "cpu/chunking.h"
#include "cpu/isa.h"
#include "cpu/tensorops_isa.h"
#include "pool.h"

namespace femtogpt::cpu {

namespace {

// Eight running sums (lanes i % 8), combined pairwise at the end: a fixed order
// that the vectorizer can keep in registers. Square selects sum of squares.
template <bool Square, typename T>
double chunk_sum(const T* __restrict x, int64_t n) {
    double acc[8] = {0, 0, 0, 0, 0, 0, 0, 0};
    int64_t i = 0;
    for (; i + 8 <= n; i += 8) {
        for (int k = 0; k < 8; k++) {
            double v = double(x[i + k]);
            acc[k] += Square ? v * v : v;
        }
    }
    for (int k = 0; i < n; i++, k++) {
        double v = double(x[i]);
        acc[k] += Square ? v * v : v;
    }
    return ((acc[0] + acc[4]) + (acc[2] + acc[6])) + ((acc[1] + acc[5]) + (acc[3] + acc[7]));
}

// chunk_sum with the active ISA's kernel for float32.
template <bool Square, typename T>
double chunk_sum_isa(Isa isa, const T* x, int64_t n) {
    if constexpr (std::is_same_v<T, float>) {
        if (isa == Isa::avx512) return sum_f32_avx512(x, n, Square);
        if (isa == Isa::avx2) return sum_f32_avx2(x, n, Square);
    }
    return chunk_sum<Square>(x, n);
}

template <bool Square, typename T>
double blocked_sum(const T* x, int64_t n) {
    const Isa isa = active_isa();
    int64_t nc = num_chunks(n);
    if (nc <= 1) return chunk_sum_isa<Square>(isa, x, n);
    PoolBuffer partial_buf(size_t(nc) * sizeof(double));
    double* partial = partial_buf.data<double>();
#pragma omp parallel for schedule(static)
    for (int64_t c = 0; c < nc; c++) {
        int64_t begin = c * kChunk;
        partial[c] = chunk_sum_isa<Square>(isa, x + begin, std::min(n, begin + kChunk) - begin);
    }
    double total = 0;
    for (int64_t c = 0; c < nc; c++) total += partial[c];
    return total;
}

}  // namespace

template <typename T>
double sum_all(const T* x, int64_t n) { return blocked_sum<false>(x, n); }

template <typename T>
double sum_all_reference(const T* x, int64_t n) {
    double s = 0;
    for (int64_t i = 0; i < n; i++) s += double(x[i]);
    return s;
}

template <typename T>
double sum_squares(const T* x, int64_t n) { return blocked_sum<true>(x, n); }

template <typename T>
double sum_squares_reference(const T* x, int64_t n) {
    double s = 0;
    for (int64_t i = 0; i < n; i++) s += double(x[i]) * double(x[i]);
    return s;
}

double sum_squares_many(const FloatSpan* spans, int64_t count) {
    std::vector<std::pair<int64_t, int64_t>> pieces;  // (span, first element)
    for (int64_t k = 0; k < count; k++)
        for (int64_t b = 0; b < spans[k].n; b += kChunk) pieces.emplace_back(k, b);
    const int64_t np = int64_t(pieces.size());
    std::vector<double> partial(size_t(np), 0.0);
    const Isa isa = active_isa();
#pragma omp parallel for schedule(static) if (np > 1)
    for (int64_t i = 0; i < np; i++) {
        const FloatSpan& sp = spans[pieces[size_t(i)].first];
        int64_t b = pieces[size_t(i)].second, len = std::min(kChunk, sp.n - b);
        partial[size_t(i)] = sp.f64 ? chunk_sum_isa<true>(isa, static_cast<const double*>(sp.data) + b, len)
                                    : chunk_sum_isa<true>(isa, static_cast<const float*>(sp.data) + b, len);
    }
    double total = 0;
    for (double v : partial) total += v;
    return total;
}

// Row blocks: every block adds its rows, in order, into its own partial row of
// K doubles (contiguous streaming, vectorized along K); the partial rows are
// then added up in block order. The number of blocks depends only on M and K
// (at most 64, and at most 2^18 partial doubles), never on the thread count.
template <typename T>
void sum_rows(T* out, const T* x, int64_t M, int64_t K) {
    if (K <= 0) return;
    if (M <= 0) {
        std::fill(out, out + K, T(0));
        return;
    }
    if (K == 1) {
        out[0] = T(sum_all(x, M));
        return;
    }
    int64_t nblocks = std::max<int64_t>(1, std::min({(M + 15) / 16, (int64_t(1) << 18) / K, int64_t(64)}));
    int64_t rows_per_block = (M + nblocks - 1) / nblocks;
    nblocks = (M + rows_per_block - 1) / rows_per_block;
    PoolBuffer partial_buf(size_t(nblocks * K) * sizeof(double));
    double* partial = partial_buf.data<double>();
    const Isa isa = active_isa();
#pragma omp parallel for schedule(static) if (nblocks > 1 && M * K > kChunk)
    for (int64_t rb = 0; rb < nblocks; rb++) {
        int64_t m0 = rb * rows_per_block, m1 = std::min(M, m0 + rows_per_block);
        double* __restrict acc = partial + rb * K;
        for (int64_t j = 0; j < K; j++) acc[j] = 0;
        if constexpr (std::is_same_v<T, float>) {
            if (isa == Isa::avx512) {
                accumulate_rows_f32_avx512(acc, x + m0 * K, m1 - m0, K);
                continue;
            }
            if (isa == Isa::avx2) {
                accumulate_rows_f32_avx2(acc, x + m0 * K, m1 - m0, K);
                continue;
            }
        }
        for (int64_t m = m0; m < m1; m++) {
            const T* __restrict row = x + m * K;
            for (int64_t j = 0; j < K; j++) acc[j] += double(row[j]);
        }
    }
#pragma omp parallel for schedule(static) if (nblocks * K > kChunk)
    for (int64_t k = 0; k < K; k++) {
        double s = 0;
        for (int64_t rb = 0; rb < nblocks; rb++) s += partial[rb * K + k];
        out[k] = T(s);
    }
}

template <typename T>
void sum_rows_reference(T* out, const T* x, int64_t M, int64_t K) {
    for (int64_t k = 0; k < K; k++) {
        double s = 0;
        for (int64_t m = 0; m < M; m++) s += double(x[m * K + k]);
        out[k] = T(s);
    }
}

#define FG_INSTANTIATE(T)                                                  \
    template double sum_all<T>(const T*, int64_t);                         \
    template double sum_all_reference<T>(const T*, int64_t);               \
    template double sum_squares<T>(const T*, int64_t);                     \
    template double sum_squares_reference<T>(const T*, int64_t);           \
    template void sum_rows<T>(T*, const T*, int64_t, int64_t);             \
    template void sum_rows_reference<T>(T*, const T*, int64_t, int64_t);
FG_INSTANTIATE(float)
FG_INSTANTIATE(double)
#undef FG_INSTANTIATE

}  // namespace femtogpt::cpu
