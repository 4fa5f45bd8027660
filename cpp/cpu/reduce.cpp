#include "cpu/reduce.h"

#include <algorithm>

#include "cpu/chunking.h"
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

template <bool Square, typename T>
double blocked_sum(const T* x, int64_t n) {
    int64_t nc = num_chunks(n);
    if (nc <= 1) return chunk_sum<Square>(x, n);
    PoolBuffer partial_buf(size_t(nc) * sizeof(double));
    double* partial = partial_buf.data<double>();
#pragma omp parallel for schedule(static)
    for (int64_t c = 0; c < nc; c++) {
        int64_t begin = c * kChunk;
        partial[c] = chunk_sum<Square>(x + begin, std::min(n, begin + kChunk) - begin);
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

// Tiles of kTile columns times blocks of rows; every (row block, tile) task sums
// its rows in order into kTile double accumulators, writes them to a partial row,
// and the partial rows are added up in row-block order. The number of row blocks
// grows when there are few tiles, so a narrow K (a bias of 3) still spreads over
// the threads.
template <typename T>
void sum_rows(T* out, const T* x, int64_t M, int64_t K) {
    constexpr int64_t kTile = 64;
    if (K <= 0) return;
    if (M <= 0) {
        std::fill(out, out + K, T(0));
        return;
    }
    if (K == 1) {
        out[0] = T(sum_all(x, M));
        return;
    }
    int64_t ntiles = (K + kTile - 1) / kTile;
    int64_t nblocks = std::max<int64_t>(1, std::min((M + 63) / 64, (64 + ntiles - 1) / ntiles));
    int64_t rows_per_block = (M + nblocks - 1) / nblocks;
    nblocks = (M + rows_per_block - 1) / rows_per_block;
    PoolBuffer partial_buf(size_t(nblocks * K) * sizeof(double));
    double* partial = partial_buf.data<double>();
    int64_t ntasks = nblocks * ntiles;
#pragma omp parallel for schedule(static) if (ntasks > 1 && M * K > kChunk)
    for (int64_t task = 0; task < ntasks; task++) {
        int64_t rb = task / ntiles, tile = task % ntiles;
        int64_t m0 = rb * rows_per_block, m1 = std::min(M, m0 + rows_per_block);
        int64_t c0 = tile * kTile, w = std::min(kTile, K - c0);
        double acc[kTile];
        for (int64_t j = 0; j < w; j++) acc[j] = 0;
        for (int64_t m = m0; m < m1; m++) {
            const T* __restrict row = x + m * K + c0;
            for (int64_t j = 0; j < w; j++) acc[j] += double(row[j]);
        }
        for (int64_t j = 0; j < w; j++) partial[rb * K + c0 + j] = acc[j];
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
