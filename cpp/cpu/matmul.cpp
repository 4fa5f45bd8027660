// The matmul driver: Goto/BLIS loops around the micro-kernel of the active ISA.
//
// C (M,N) = alpha * op(A) (M,K) @ op(B) (K,N) + beta * C, float32:
//
//   for jc in N step nc:                 B block (kc,nc) packed once, shared by all threads (L3)
//     for pc in K step kc:
//       pack B block                     threads split its NR-panels, then a barrier
//       for each work item (rows ic..ic+mc, B panels q0..q1), taken dynamically by the threads:
//         pack A block (mc,kc)           private to the thread (L2); small N: A read in place
//         for jr in q0..q1:              B panel (kc,NR) stays in L1
//           for ir in mc step MR:
//             micro-kernel: C tile (MR,NR) (+)= A panel^T @ B panel
//       barrier
//
// Threads split the M x N tile grid (never K), so every element of C is summed by
// one thread in the same order whatever the thread count: results are bitwise
// identical for 1 and n threads. The tile grid is anchored at (0,0), so a given
// element always falls in the same tile and the same k blocks, whose split
// depends on K alone.
//
// float64 (gradient checks only) runs a plain row loop, parallel over rows.
#include "cpu/matmul.h"

#include <algorithm>
#include <exception>

#include "cpu/matmul_kernels.h"
#include "parallel.h"
#include "pool.h"

namespace femtogpt::cpu {

namespace gemm_detail {

namespace {

Blocking g_blocking_override;

// Below this many flops per thread a second thread costs more than it saves.
constexpr int64_t kMinFlopsPerThread = int64_t(1) << 19;
constexpr int kMaxTile = 1024;
// Up to this N the kernel reads A in place instead of packing it (see sgemm).
constexpr int64_t kDirectAMaxN = 256;
// A transposed, read in place, takes a new cache line (and page, for long rows) every
// k step: measured slower than packing at every N tried, so never.
constexpr int64_t kDirectATransMaxN = 0;  // floats in the edge-tile scratch (>= MR*NR of every kernel)

int team_size() {
#ifdef _OPENMP
    return omp_get_num_threads();
#else
    return 1;
#endif
}

bool in_parallel() {
#ifdef _OPENMP
    return omp_in_parallel();
#else
    return false;
#endif
}

int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }
int64_t round_up(int64_t a, int64_t b) { return ceil_div(a, b) * b; }

// C (M,N) = beta * C, writing zeros without reading when beta == 0.
template <typename T>
void scale_c(T* C, int64_t ldc, int64_t M, int64_t N, T beta) {
    for (int64_t i = 0; i < M; i++) {
        T* c = C + i * ldc;
        if (beta == T(0)) {
            std::fill(c, c + N, T(0));
        } else if (beta != T(1)) {
            for (int64_t j = 0; j < N; j++) c[j] *= beta;
        }
    }
}

const KernelF32& active_kernel_f32() {
    switch (active_isa()) {
        case Isa::avx512:
            if (const KernelF32* k = kernel_f32_avx512()) return *k;
            [[fallthrough]];
        case Isa::avx2:
            if (const KernelF32* k = kernel_f32_avx2()) return *k;
            [[fallthrough]];
        default:
            return *kernel_f32_generic();
    }
}

// Single-precision GEMM on at most `nthreads` threads.
void sgemm(float* C, int64_t ldc, const float* A, int64_t lda, const float* B, int64_t ldb, int64_t M, int64_t N,
           int64_t K, bool ta, bool tb, float alpha, float beta, int nthreads) {
    if (M <= 0 || N <= 0) return;
    if (K <= 0 || alpha == 0.0f) {  // empty sum: A and B are not read
        scale_c(C, ldc, M, N, beta);
        return;
    }
    const KernelF32& kr = active_kernel_f32();
    const int MR = kr.mr, NR = kr.nr;
    const Blocking ov = g_blocking_override;
    const int64_t MC = round_up(ov.mc > 0 ? ov.mc : kr.mc, MR);
    const int64_t KC = ov.kc > 0 ? ov.kc : kr.kc;
    const int64_t NC = round_up(ov.nc > 0 ? ov.nc : kr.nc, NR);

    // k blocks of equal size (K=257 gives 129+128, not 256+1); the split depends
    // only on K, never on the threads.
    const int64_t kcb = ceil_div(K, ceil_div(K, KC));
    const int64_t ncb = std::min(NC, round_up(N, NR));
    const int64_t mtiles = ceil_div(M, MR), ntiles = ceil_div(N, NR);
    // Packing A pays off when each A panel meets many B panels; with few (small N)
    // the kernel reads A's rows in place (same FMAs, same order, same bits).
    const bool direct_a =
        kr.kernel_strided && (ov.direct_a >= 0 ? ov.direct_a > 0 : N <= (ta ? kDirectATransMaxN : kDirectAMaxN));
    const int64_t rs_a = ta ? 1 : lda, cs_a = ta ? lda : 1;  // op(A)(i, p) at A[i*rs_a + p*cs_a]

    int nt = std::max(1, nthreads);
    if (in_parallel()) nt = 1;
    nt = int(std::min<int64_t>(nt, std::max<int64_t>(1, 2 * M * N * K / kMinFlopsPerThread)));
    nt = int(std::min<int64_t>(nt, mtiles * ntiles));

    // Work items of a (jc, pc) step: M blocks (about MC rows, whole MR tiles, as many
    // as a multiple of the threads) times groups of B panels (more than one only when
    // there are too few M blocks to go round). Threads take items dynamically, which
    // keeps them busy when the machine is shared; an item's arithmetic does not
    // depend on the thread that runs it.
    int64_t mblocks = std::min(mtiles, ceil_div(mtiles * MR, MC));
    if (nt > 1) mblocks = std::min(mtiles, round_up(mblocks, nt));
    const int64_t max_block_tiles = ceil_div(mtiles, mblocks);
    const int64_t npanels_max = ceil_div(ncb, NR);
    const int64_t ngroups =
        mblocks >= 2 * nt ? 1 : std::min(npanels_max, round_up(ceil_div(2 * nt, mblocks), nt));
    const int64_t items = mblocks * ngroups;

    const int64_t a_stride = round_up(max_block_tiles * MR * kcb, 16);  // floats per thread's A block
    PoolBuffer bbuf(size_t(kcb * ncb) * sizeof(float));
    PoolBuffer abuf(size_t(a_stride * nt) * sizeof(float));
    float* const Bp = bbuf.data<float>();

#pragma omp parallel num_threads(nt) if (nt > 1)
    {
        const int team = team_size(), tid = thread_id();
        float* const Ap = abuf.data<float>() + a_stride * tid;
        alignas(64) float tile[kMaxTile];

        for (int64_t jc = 0; jc < N; jc += ncb) {
            const int64_t nc = std::min(ncb, N - jc);
            const int64_t npanels = ceil_div(nc, NR);
            for (int64_t pc = 0; pc < K; pc += kcb) {
                const int64_t kc = std::min(kcb, K - pc);
                {  // every thread packs a share of the B block
                    const int64_t p0 = npanels * tid / team, p1 = npanels * (tid + 1) / team;
                    if (p1 > p0) {
                        const int64_t j = jc + p0 * NR;
                        const float* src = tb ? B + j * ldb + pc : B + pc * ldb + j;
                        kr.pack_b(Bp + p0 * NR * kc, src, ldb, tb, std::min(nc, p1 * NR) - p0 * NR, kc);
                    }
                }
#pragma omp barrier
                const float beff = pc == 0 ? beta : 1.0f;
#pragma omp for schedule(dynamic, 1) nowait
                for (int64_t item = 0; item < items; item++) {
                    const int64_t mb = item / ngroups, g = item % ngroups;
                    const int64_t ic = std::min(M, mtiles * mb / mblocks * MR);
                    const int64_t mc = std::min(M, mtiles * (mb + 1) / mblocks * MR) - ic;
                    const int64_t q0 = npanels * g / ngroups, q1 = npanels * (g + 1) / ngroups;
                    if (mc <= 0 || q1 <= q0) continue;
                    const float* ablock = A + ic * rs_a + pc * cs_a;
                    // Rows [0, direct_rows) of the block are read in place, the rest packed.
                    const int64_t direct_rows = direct_a ? mc / MR * MR : 0;
                    if (direct_rows < mc)
                        kr.pack_a(Ap, ablock + direct_rows * rs_a, lda, !ta, mc - direct_rows, kc);
                    for (int64_t jr = q0; jr < q1; jr++) {
                        const int64_t nr = std::min<int64_t>(NR, nc - jr * NR);
                        const float* bpanel = Bp + jr * NR * kc;
                        for (int64_t ir = 0; ir < mc; ir += MR) {
                            const int64_t mr = std::min<int64_t>(MR, mc - ir);
                            float* c = C + (ic + ir) * ldc + jc + jr * NR;
                            const bool full = mr == MR && nr == NR;
                            float* dst = full ? c : tile;  // edge tile: compute in full, write the valid part
                            const int64_t ldd = full ? ldc : NR;
                            const float bdst = full ? beff : 0.0f;
                            if (ir < direct_rows)
                                kr.kernel_strided(kc, ablock + ir * rs_a, rs_a, cs_a, bpanel, dst, ldd, alpha, bdst);
                            else
                                kr.kernel(kc, Ap + (ir - direct_rows) * kc, bpanel, dst, ldd, alpha, bdst);
                            if (!full)
                                for (int64_t i = 0; i < mr; i++)
                                    for (int64_t j = 0; j < nr; j++) {
                                        float& cij = c[i * ldc + j];
                                        cij = beff == 0.0f ? tile[i * NR + j] : tile[i * NR + j] + beff * cij;
                                    }
                        }
                    }
                }
#pragma omp barrier
            }
        }
    }
}

// Double-precision GEMM: one row of C at a time, parallel over rows.
void dgemm(double* C, int64_t ldc, const double* A, int64_t lda, const double* B, int64_t ldb, int64_t M,
           int64_t N, int64_t K, bool ta, bool tb, double alpha, double beta, int nthreads) {
    if (M <= 0 || N <= 0) return;
    if (K <= 0 || alpha == 0.0) {
        scale_c(C, ldc, M, N, beta);
        return;
    }
    int nt = std::max(1, nthreads);
    if (in_parallel()) nt = 1;
    nt = int(std::min<int64_t>({int64_t(nt), M, std::max<int64_t>(1, 2 * M * N * K / kMinFlopsPerThread)}));
    const int64_t stride = round_up(K + N, 8);
    PoolBuffer buf(size_t(stride * nt) * sizeof(double));

#pragma omp parallel num_threads(nt) if (nt > 1)
    {
        double* arow = buf.data<double>() + stride * thread_id();  // op(A) row i (K)
        double* acc = arow + K;                                     // its product row (N)
#pragma omp for schedule(static)
        for (int64_t i = 0; i < M; i++) {
            for (int64_t p = 0; p < K; p++) arow[p] = ta ? A[p * lda + i] : A[i * lda + p];
            if (!tb) {
                std::fill(acc, acc + N, 0.0);
                for (int64_t p = 0; p < K; p++) {
                    const double a = arow[p];
                    const double* b = B + p * ldb;
                    for (int64_t j = 0; j < N; j++) acc[j] += a * b[j];
                }
            } else {
                for (int64_t j = 0; j < N; j++) {
                    const double* b = B + j * ldb;
                    double s = 0.0;
                    for (int64_t p = 0; p < K; p++) s += arow[p] * b[p];
                    acc[j] = s;
                }
            }
            double* c = C + i * ldc;
            for (int64_t j = 0; j < N; j++) c[j] = beta == 0.0 ? alpha * acc[j] : alpha * acc[j] + beta * c[j];
        }
    }
}

void gemm_nt(float* C, int64_t ldc, const float* A, int64_t lda, const float* B, int64_t ldb, int64_t M, int64_t N,
             int64_t K, bool ta, bool tb, float alpha, float beta, int nthreads) {
    sgemm(C, ldc, A, lda, B, ldb, M, N, K, ta, tb, alpha, beta, nthreads);
}
void gemm_nt(double* C, int64_t ldc, const double* A, int64_t lda, const double* B, int64_t ldb, int64_t M,
             int64_t N, int64_t K, bool ta, bool tb, double alpha, double beta, int nthreads) {
    dgemm(C, ldc, A, lda, B, ldb, M, N, K, ta, tb, alpha, beta, nthreads);
}

}  // namespace

void set_blocking_override(Blocking b) { g_blocking_override = b; }

}  // namespace gemm_detail

template <typename T>
void gemm(T* C, int64_t ldc, const T* A, int64_t lda, const T* B, int64_t ldb, int64_t M, int64_t N, int64_t K,
          bool trans_a, bool trans_b, T alpha, T beta) {
    gemm_detail::gemm_nt(C, ldc, A, lda, B, ldb, M, N, K, trans_a, trans_b, alpha, beta, num_threads());
}

template <typename T>
void gemm_batched(T* C, int64_t stride_c, int64_t ldc, const T* A, int64_t stride_a, int64_t lda, const T* B,
                  int64_t stride_b, int64_t ldb, int64_t batch, int64_t M, int64_t N, int64_t K, bool trans_a,
                  bool trans_b, T alpha, T beta) {
    using gemm_detail::gemm_nt;
    if (batch <= 0 || M <= 0 || N <= 0) return;
    const int nt = gemm_detail::in_parallel() ? 1 : num_threads();
    // One B for every A, A and C stacked row after row: one tall product, (batch*M, K) @ (K, N).
    if (batch == 1 || (stride_b == 0 && !trans_a && stride_a == M * lda && stride_c == M * ldc)) {
        gemm_nt(C, ldc, A, lda, B, ldb, batch * M, N, K, trans_a, trans_b, alpha, beta, nt);
        return;
    }
    // Many small products (attention's per-head ones): one whole product per thread.
    // The same per-product code runs either way, so the result does not depend on it.
    const bool small = M * N * K <= (int64_t(1) << 21);
    if (nt > 1 && batch >= nt && (small || batch >= 4 * nt)) {
        std::exception_ptr error;  // an exception must not leave an OpenMP region
#pragma omp parallel for schedule(static) num_threads(nt)
        for (int64_t b = 0; b < batch; b++) {
            try {
                gemm_nt(C + b * stride_c, ldc, A + b * stride_a, lda, B + b * stride_b, ldb, M, N, K, trans_a,
                        trans_b, alpha, beta, 1);
            } catch (...) {
#pragma omp critical(femtogpt_gemm_error)
                if (!error) error = std::current_exception();
            }
        }
        if (error) std::rethrow_exception(error);
        return;
    }
    for (int64_t b = 0; b < batch; b++)
        gemm_nt(C + b * stride_c, ldc, A + b * stride_a, lda, B + b * stride_b, ldb, M, N, K, trans_a, trans_b,
                alpha, beta, nt);
}

#define FG_INSTANTIATE(T)                                                                                     \
    template void gemm<T>(T*, int64_t, const T*, int64_t, const T*, int64_t, int64_t, int64_t, int64_t, bool, \
                          bool, T, T);                                                                        \
    template void gemm_batched<T>(T*, int64_t, int64_t, const T*, int64_t, int64_t, const T*, int64_t,       \
                                  int64_t, int64_t, int64_t, int64_t, int64_t, bool, bool, T, T);
FG_INSTANTIATE(float)
FG_INSTANTIATE(double)
#undef FG_INSTANTIATE

}  // namespace femtogpt::cpu
