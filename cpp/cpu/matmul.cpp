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
// identical for 1 and n threads. (A long K into a small C is cut into chunks fixed
// by K alone, summed in chunk order: see sgemm_split_k.) The tile grid is anchored at (0,0), so a given
// element always falls in the same tile and the same k blocks, whose split
// depends on K alone.
//
// float64 (gradient checks only) runs a plain row loop, parallel over rows.
#include "cpu/matmul.h"

#include <algorithm>
#include <exception>
#include <type_traits>

#include "common.h"
#include "cpu/matmul_kernels.h"
#include "parallel.h"
#include "pool.h"

namespace femtogpt::cpu {

namespace gemm_detail {

namespace {

Blocking g_blocking_override;

// Below this many flops per thread a second thread costs more than it saves.
constexpr int64_t kMinFlopsPerThread = int64_t(1) << 19;
constexpr int kMaxTile = 1024;  // floats in the edge-tile scratch (>= MR*NR of every kernel)
constexpr int64_t kFloatsPerLine = 16;  // floats in a 64-byte cache line
// A B of at most this many floats that fits one block is packed by every thread for
// itself: a few microseconds of copying instead of two barriers, which cost far more
// when a thread has lost its core to another process.
constexpr int64_t kPrivateBMaxFloats = int64_t(1) << 16;
// Up to this N the kernel reads A in place instead of packing it (see sgemm).
constexpr int64_t kDirectAMaxN = 256;
// A transposed, read in place, takes a new cache line (and page, for long rows) every
// k step: measured slower than packing at every N tried, so never.
constexpr int64_t kDirectATransMaxN = 0;

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

// One float32 product C (M,N) = alpha * op(A) @ op(B) + beta * C, planned for nt threads.
struct SgemmPlan {
    float* C;
    const float* A;
    const float* B;
    int64_t ldc, lda, ldb, M, N, K;
    bool ta, tb;
    float alpha, beta;
    const KernelF32* kr;
    int64_t MR, NR, kcb, ncb, mtiles;
    bool direct_a;       // read op(A) in place, at A[i*rs_a + p*cs_a]
    int64_t rs_a, cs_a;
    int64_t mblocks, ngroups, items;
    bool private_b;      // one small B block: each thread packs all of it, no barriers
    int64_t b_floats, a_floats;  // scratch: a B block, each thread's A block
    GemmFusion<float> fusion;    // GELU on packed operand blocks, bias on finished tiles
};

SgemmPlan plan_sgemm(float* C, int64_t ldc, const float* A, int64_t lda, const float* B, int64_t ldb, int64_t M,
                     int64_t N, int64_t K, bool ta, bool tb, float alpha, float beta, int nt,
                     const GemmFusion<float>& fusion = {}) {
    SgemmPlan P{};
    P.fusion = fusion;
    P.C = C;
    P.A = A;
    P.B = B;
    P.ldc = ldc;
    P.lda = lda;
    P.ldb = ldb;
    P.M = M;
    P.N = N;
    P.K = K;
    P.ta = ta;
    P.tb = tb;
    P.alpha = alpha;
    P.beta = beta;
    const KernelF32& kr = active_kernel_f32();
    FG_CHECK(kr.mr * kr.nr <= kMaxTile, "matmul: register tile ", kr.mr, "x", kr.nr, " exceeds the edge scratch");
    P.kr = &kr;
    P.MR = kr.mr;
    P.NR = kr.nr;
    const Blocking ov = g_blocking_override;
    const int64_t MC = round_up(ov.mc > 0 ? ov.mc : kr.mc, P.MR);
    const int64_t KC = ov.kc > 0 ? ov.kc : kr.kc;
    const int64_t NC = round_up(ov.nc > 0 ? ov.nc : kr.nc, P.NR);
    // k blocks of equal size (K=257 gives 129+128, not 256+1); the split depends
    // only on K, never on the threads.
    P.kcb = ceil_div(K, ceil_div(K, KC));
    P.ncb = std::min(NC, round_up(N, P.NR));
    P.mtiles = ceil_div(M, P.MR);
    // Packing A pays off when each A panel meets many B panels; with few (small N)
    // the kernel reads A's rows in place (same FMAs, same order, same bits), or, with a
    // GELU on A, from a GELU'd copy of the rows in the scratch (see sgemm_item).
    P.direct_a =
        kr.kernel_strided && (ov.direct_a >= 0 ? ov.direct_a > 0 : N <= (ta ? kDirectATransMaxN : kDirectAMaxN));
    P.rs_a = ta ? 1 : lda;
    P.cs_a = ta ? lda : 1;
    // Work items of a (jc, pc) step: M blocks (about MC rows, whole MR tiles, as many
    // as a multiple of the threads) times groups of B panels (more than one only when
    // there are too few M blocks to go round). Each thread takes a contiguous run of
    // items (static schedule), so thread t always gets the same rows of C, as it does the
    // same rows in the elementwise kernels around the product: consecutive ops of a
    // training step find their rows in their own core's L2 (femto training: +5 to 7%
    // over taking items dynamically, small +3%). An item's arithmetic does not depend
    // on the thread that runs it.
    P.mblocks = std::min(P.mtiles, ceil_div(P.mtiles * P.MR, MC));
    if (nt > 1) P.mblocks = std::min(P.mtiles, round_up(P.mblocks, nt));
    const int64_t npanels_max = ceil_div(P.ncb, P.NR);
    P.ngroups = P.mblocks >= 2 * nt ? 1 : std::min(npanels_max, round_up(ceil_div(2 * nt, P.mblocks), nt));
    P.items = P.mblocks * P.ngroups;
    P.private_b = nt > 1 && P.kcb >= K && P.ncb >= N && K * N <= kPrivateBMaxFloats;
    P.b_floats = round_up(P.kcb * P.ncb, 16);
    P.a_floats = round_up(ceil_div(P.mtiles, P.mblocks) * P.MR * P.kcb, 16);
    return P;
}

// C (mr,nr) += bias (nr) on every row: a finished tile, still in L1
inline void add_bias(float* c, int64_t ldc, const float* bias, int64_t mr, int64_t nr) {
    for (int64_t i = 0; i < mr; i++)
        for (int64_t j = 0; j < nr; j++) c[i * ldc + j] += bias[j];
}

// sums (R) = the row sums of one packed A panel (kc, R): each row summed over p in order,
// R rows side by side (a fixed R vectorizes across the rows)
template <int R>
void sum_panel_rows(float* sums, const float* panel, int64_t kc) {
    float acc[R] = {};
    for (int64_t p = 0; p < kc; p++)
        for (int r = 0; r < R; r++) acc[r] += panel[p * R + r];
    for (int r = 0; r < R; r++) sums[r] = acc[r];
}

// sums (mc) (=|+=) the rows of an A block (mc, kc): rows [0, direct) read in place at
// a[i*rs + p*cs], the rest from the packed panels (kc, MR) at Ap. One sum per k block,
// in k order, so a row's total does not depend on how the rows were shared out.
void sum_a_rows(float* sums, const float* a, int64_t rs, int64_t cs, int64_t direct, const float* Ap, int64_t mc,
                int64_t MR, int64_t kc, bool first) {
    auto put = [&](int64_t i, float s) { sums[i] = first ? s : sums[i] + s; };
    for (int64_t i = 0; i < direct; i++) {
        float s = 0.0f;
        for (int64_t p = 0; p < kc; p++) s += a[i * rs + p * cs];
        put(i, s);
    }
    float panel_sums[kMaxTile];
    for (int64_t r0 = 0; r0 < mc - direct; r0 += MR) {  // one packed panel (padded rows sum to 0)
        const float* panel = Ap + r0 * kc;
        switch (MR) {
            case 4: sum_panel_rows<4>(panel_sums, panel, kc); break;
            case 6: sum_panel_rows<6>(panel_sums, panel, kc); break;
            case 14: sum_panel_rows<14>(panel_sums, panel, kc); break;
            default:
                for (int64_t r = 0; r < MR; r++) {
                    float s = 0.0f;
                    for (int64_t p = 0; p < kc; p++) s += panel[p * MR + r];
                    panel_sums[r] = s;
                }
        }
        for (int64_t r = 0; r < std::min(MR, mc - direct - r0); r++) put(direct + r0 + r, panel_sums[r]);
    }
}

// Runs work item `item` of step (jc, pc): packs its A block into Ap (or reads A in
// place) and multiplies it with the packed B block Bp.
void sgemm_item(const SgemmPlan& P, int64_t item, int64_t jc, int64_t nc, int64_t pc, int64_t kc, const float* Bp,
                float* Ap) {
    const KernelF32& kr = *P.kr;
    const int64_t MR = P.MR, NR = P.NR, M = P.M, ldc = P.ldc;
    const int64_t npanels = ceil_div(nc, NR);
    const int64_t mb = item / P.ngroups, g = item % P.ngroups;
    const int64_t ic = std::min(M, P.mtiles * mb / P.mblocks * MR);
    const int64_t mc = std::min(M, P.mtiles * (mb + 1) / P.mblocks * MR) - ic;
    const int64_t q0 = npanels * g / P.ngroups, q1 = npanels * (g + 1) / P.ngroups;
    if (mc <= 0 || q1 <= q0) return;
    const float beff = pc == 0 ? P.beta : 1.0f;
    const float* ablock = P.A + ic * P.rs_a + pc * P.cs_a;
    // Rows [0, direct_rows) of the block are read without packing, the rest packed. They are
    // read in place, at adirect[i*rs + p*cs]; with a GELU on A they are first copied, GELU'd,
    // row by row into the scratch (a map, not a transpose into panels), and the packed rest
    // follows them there.
    const int64_t direct_rows = P.direct_a ? mc / MR * MR : 0;
    const float* adirect = ablock;
    int64_t rs = P.rs_a, cs = P.cs_a;
    float* Apacked = Ap;
    if (direct_rows > 0 && P.fusion.gelu_a) {
        for (int64_t i = 0; i < direct_rows; i++) {
            const float* row = ablock + i * P.rs_a;
            if (P.cs_a == 1)
                std::copy(row, row + kc, Ap + i * kc);
            else
                for (int64_t p = 0; p < kc; p++) Ap[i * kc + p] = row[p * P.cs_a];
        }
        gelu_inplace_serial(Ap, direct_rows * kc, P.fusion.approx);
        adirect = Ap;
        rs = kc;
        cs = 1;
        Apacked = Ap + direct_rows * kc;
    }
    if (direct_rows < mc) {
        kr.pack_a(Apacked, ablock + direct_rows * P.rs_a, P.lda, !P.ta, mc - direct_rows, kc);
        if (P.fusion.gelu_a)
            gelu_inplace_serial(Apacked, ceil_div(mc - direct_rows, MR) * MR * kc, P.fusion.approx);
    }
    // Row sums: once per (rows, k block), by the item of the first column block and group
    // (the others pack the same rows again); k blocks come in order, a barrier apart.
    if (P.fusion.a_row_sums && jc == 0 && g == 0)
        sum_a_rows(P.fusion.a_row_sums + ic, adirect, rs, cs, direct_rows, Apacked, mc, MR, kc, pc == 0);
    // the bias goes on once a tile's sum is complete, after its last k block
    const float* bias = pc + kc == P.K ? P.fusion.bias : nullptr;
    // so does the GELU gradient, whose products are made in one k block (gelu_grad_in_tiles): a
    // tile is computed into the scratch, then written as gelu'(G) times it, each row of G read
    // before the row of C is written (G may be C)
    const float* ggrad = pc + kc == P.K ? P.fusion.gelu_grad : nullptr;
    alignas(64) float tile[kMaxTile];
    for (int64_t jr = q0; jr < q1; jr++) {
        const int64_t nr = std::min(NR, nc - jr * NR);
        const float* bpanel = Bp + jr * NR * kc;
        for (int64_t ir = 0; ir < mc; ir += MR) {
            const int64_t mr = std::min(MR, mc - ir);
            float* c = P.C + (ic + ir) * ldc + jc + jr * NR;
            const bool full = mr == MR && nr == NR && !ggrad;
            float* dst = full ? c : tile;  // edge tile: compute in full, write the valid part
            const int64_t ldd = full ? ldc : NR;
            const float bdst = full ? beff : 0.0f;
            const float* gtile = ggrad ? ggrad + (ic + ir) * P.fusion.ld_gelu_grad + jc + jr * NR : nullptr;
            if (ggrad)  // G's rows (an activation, often in memory) arrive while the kernel runs
                for (int64_t i = 0; i < mr; i++)
                    for (int64_t j = 0; j < nr; j += kFloatsPerLine)
                        __builtin_prefetch(gtile + i * P.fusion.ld_gelu_grad + j, 0, 3);
            // a full tile takes its bias in the kernel's stores; an edge tile after its copy, below
            const float* tile_bias = bias ? bias + jc + jr * NR : nullptr;
            const float* kernel_bias = full ? tile_bias : nullptr;
            if (ir < direct_rows)
                kr.kernel_strided(kc, adirect + ir * rs, rs, cs, bpanel, dst, ldd, P.alpha, bdst, kernel_bias);
            else
                kr.kernel(kc, Apacked + (ir - direct_rows) * kc, bpanel, dst, ldd, P.alpha, bdst, kernel_bias);
            if (ggrad)
                gelu_backward_rows(c, ldc, tile, NR, gtile, P.fusion.ld_gelu_grad, mr, nr, P.fusion.approx);
            else if (!full)
                for (int64_t i = 0; i < mr; i++)
                    for (int64_t j = 0; j < nr; j++) {
                        float& cij = c[i * ldc + j];
                        cij = beff == 0.0f ? tile[i * NR + j] : tile[i * NR + j] + beff * cij;
                    }
            if (tile_bias && !full) add_bias(c, ldc, tile_bias, mr, nr);
        }
    }
}

// Thread `tid` of `team`'s share of the product. kParallel: called inside a parallel
// region of exactly that team (shared Bp, barriers, dynamic items); otherwise the one
// thread does everything with no OpenMP construct at all, so it may run inside
// someone else's parallel region (one product per thread of a batch).
template <bool kParallel>
void sgemm_run(const SgemmPlan& P, float* Bp, float* Ap, int tid, int team) {
    const KernelF32& kr = *P.kr;
    const int64_t NR = P.NR, ldb = P.ldb;
    for (int64_t jc = 0; jc < P.N; jc += P.ncb) {
        const int64_t nc = std::min(P.ncb, P.N - jc);
        const int64_t npanels = ceil_div(nc, NR);
        for (int64_t pc = 0; pc < P.K; pc += P.kcb) {
            const int64_t kc = std::min(P.kcb, P.K - pc);
            {  // every thread packs a share of the B block (all of it, if private)
                const int64_t p0 = P.private_b ? 0 : npanels * tid / team;
                const int64_t p1 = P.private_b ? npanels : npanels * (tid + 1) / team;
                if (p1 > p0) {
                    const int64_t j = jc + p0 * NR;
                    const float* src = P.tb ? P.B + j * ldb + pc : P.B + pc * ldb + j;
                    kr.pack_b(Bp + p0 * NR * kc, src, ldb, P.tb, std::min(nc, p1 * NR) - p0 * NR, kc);
                    if (P.fusion.gelu_b) gelu_inplace_serial(Bp + p0 * NR * kc, (p1 - p0) * NR * kc, P.fusion.approx);
                }
            }
            if constexpr (kParallel) {
                if (!P.private_b) {
#pragma omp barrier
                }
#pragma omp for schedule(static) nowait
                for (int64_t item = 0; item < P.items; item++) sgemm_item(P, item, jc, nc, pc, kc, Bp, Ap);
                if (!P.private_b) {  // before the B block is packed again (or the region's end)
#pragma omp barrier
                }
            } else {
                for (int64_t item = 0; item < P.items; item++) sgemm_item(P, item, jc, nc, pc, kc, Bp, Ap);
            }
        }
    }
}

// A long sum into a small C (a weight gradient: C the size of a weight, K = batch x tokens)
// leaves each thread too few tiles of C to pay for the barriers around every shared B block
// (on a 2-core AVX-512 Xeon, (64,2048)@(2048,192) ran at 163 GFLOP/s on one thread and 203 on
// two without the split, 295 on two with it). Such products cut K into
// chunks of about kSplitChunk instead: each chunk's partial product is made by one thread
// on its own, with no barrier, and the partials are then added in chunk order. The chunks
// depend on K alone, so the sums are still bitwise the same whatever the thread count.
constexpr int64_t kSplitChunk = 512;
constexpr int64_t kSplitMaxMN = 256 * 256;

bool split_k(int64_t M, int64_t N, int64_t K) { return K >= 2 * kSplitChunk && M * N <= kSplitMaxMN; }

void sgemm_split_k(float* C, int64_t ldc, const float* A, int64_t lda, const float* B, int64_t ldb, int64_t M,
                   int64_t N, int64_t K, bool ta, bool tb, float alpha, float beta, int nthreads,
                   const GemmFusion<float>& fusion) {
    GemmFusion<float> chunk_fusion = fusion;  // the GELUs apply per chunk, the bias once to the sum,
    chunk_fusion.bias = nullptr;              // row sums per chunk, then added in chunk order
    const int64_t nchunks = ceil_div(K, kSplitChunk), chunk = ceil_div(K, nchunks);
    const int nt = int(std::min<int64_t>(in_parallel() ? 1 : std::max(1, nthreads), nchunks));
    const int64_t mn = round_up(M * N, 16);
    // Every thread's scratch fits the larger plan of the two chunk lengths: a shorter last chunk
    // may split into fewer, longer k blocks (K = 1154, kc 192: chunks of 385 run in k blocks of
    // 129, the last chunk of 384 in blocks of 192).
    auto scratch_floats = [&](int64_t kc) {
        const SgemmPlan P = plan_sgemm(nullptr, N, A, lda, B, ldb, M, N, kc, ta, tb, alpha, 0.0f, 1, chunk_fusion);
        return P.b_floats + P.a_floats;
    };
    const int64_t per_thread = std::max(scratch_floats(chunk), scratch_floats(K - (nchunks - 1) * chunk));
    const int64_t msums = fusion.a_row_sums ? round_up(M, 16) : 0;
    PoolBuffer buf(size_t(nchunks * (mn + msums) + nt * per_thread) * sizeof(float));
    float* const partials = buf.data<float>();  // chunk c: (M, N) at partials + c * mn
    float* const row_sums = partials + nchunks * mn;  // chunk c: (M) at row_sums + c * msums
    float* const scratch = row_sums + nchunks * msums;
#pragma omp parallel num_threads(nt) if (nt > 1)
    {
        float* ws = scratch + per_thread * thread_id();
#pragma omp for schedule(static)  // a contiguous run of K (token) chunks a thread, as above
        for (int64_t c = 0; c < nchunks; c++) {
            const int64_t k0 = c * chunk, kc = std::min(chunk, K - k0);
            const float* a = ta ? A + k0 * lda : A + k0;
            const float* b = tb ? B + k0 : B + k0 * ldb;
            GemmFusion<float> f = chunk_fusion;
            if (f.a_row_sums) f.a_row_sums = row_sums + c * msums;
            const SgemmPlan P = plan_sgemm(partials + c * mn, N, a, lda, b, ldb, M, N, kc, ta, tb, alpha, 0.0f, 1, f);
            sgemm_run<false>(P, ws, ws + P.b_floats, 0, 1);
        }
        // C = sum of the partials in chunk order (+ beta C) (+ bias)
#pragma omp for schedule(static)
        for (int64_t i = 0; i < M; i++) {
            float* c = C + i * ldc;
            for (int64_t j = 0; j < N; j++) {
                float s = partials[i * N + j];
                for (int64_t q = 1; q < nchunks; q++) s += partials[q * mn + i * N + j];
                c[j] = beta == 0.0f ? s : s + beta * c[j];
            }
            if (fusion.bias) add_bias(c, ldc, fusion.bias, 1, N);
            if (fusion.a_row_sums) {
                float s = row_sums[i];
                for (int64_t q = 1; q < nchunks; q++) s += row_sums[q * msums + i];
                fusion.a_row_sums[i] = s;
            }
        }
    }
}

// Threads worth using for an M x N x K product.
int sgemm_threads(int64_t M, int64_t N, int64_t K, int nthreads) {
    if (in_parallel()) return 1;
    int64_t nt = std::max(1, nthreads);
    nt = std::min<int64_t>(nt, std::max<int64_t>(1, 2 * M * N * K / kMinFlopsPerThread));
    return int(nt);
}

// sums (M) <- the row sums of g(op(A)) (M,K), row by row in k order (the float64 path, and
// a product with no columns to hand the sums to)
template <typename T>
void row_sums_direct(T* sums, const T* A, int64_t lda, int64_t M, int64_t K, bool ta, const GemmFusion<T>& f) {
    PoolBuffer row(size_t(std::max<int64_t>(K, 1)) * sizeof(T));
    T* r = row.data<T>();
    for (int64_t i = 0; i < M; i++) {
        for (int64_t p = 0; p < K; p++) r[p] = ta ? A[p * lda + i] : A[i * lda + p];
        if (f.gelu_a) gelu_inplace_serial(r, K, f.approx);
        T s = 0;
        for (int64_t p = 0; p < K; p++) s += r[p];
        sums[i] = s;
    }
}

// Whether a product's tiles are finished in one pass over K by sgemm_item (one k block, no
// split), so that its GELU-gradient epilogue can work tile by tile (GemmFusion::gelu_grad).
bool gelu_grad_in_tiles(int64_t M, int64_t N, int64_t K) {
    const int64_t KC = g_blocking_override.kc > 0 ? g_blocking_override.kc : active_kernel_f32().kc;
    return K > 0 && K <= KC && !split_k(M, N, K);
}

// Single-precision GEMM on at most `nthreads` threads.
void sgemm(float* C, int64_t ldc, const float* A, int64_t lda, const float* B, int64_t ldb, int64_t M, int64_t N,
           int64_t K, bool ta, bool tb, float alpha, float beta, int nthreads, const GemmFusion<float>& fusion = {}) {
    if (M <= 0) return;
    if (N <= 0) {
        if (fusion.a_row_sums) row_sums_direct(fusion.a_row_sums, A, lda, M, K, ta, fusion);
        return;
    }
    if (fusion.gelu_grad && (K <= 0 || alpha == 0.0f)) {  // an empty product: C = 0 * gelu'(G), as unfused
        PoolBuffer zeros(size_t(N) * sizeof(float));  // one row of zeros, read for every row (stride 0)
        std::fill_n(zeros.data<float>(), N, 0.0f);
        gelu_backward_rows(C, ldc, zeros.data<float>(), 0, fusion.gelu_grad, fusion.ld_gelu_grad, M, N, fusion.approx);
        if (fusion.a_row_sums) row_sums_direct(fusion.a_row_sums, A, lda, M, std::max<int64_t>(K, 0), ta, fusion);
        return;
    }
    if (fusion.gelu_grad && !gelu_grad_in_tiles(M, N, K)) {  // the product, then the derivative over it
        GemmFusion<float> product = fusion;
        product.gelu_grad = nullptr;
        sgemm(C, ldc, A, lda, B, ldb, M, N, K, ta, tb, alpha, beta, nthreads, product);
        const int nt = in_parallel() ? 1 : std::max(1, nthreads);
#pragma omp parallel for schedule(static) num_threads(nt) if (nt > 1 && M * N > kPrivateBMaxFloats)
        for (int64_t i = 0; i < M; i++)
            gelu_backward_rows(C + i * ldc, ldc, C + i * ldc, ldc, fusion.gelu_grad + i * fusion.ld_gelu_grad,
                               fusion.ld_gelu_grad, 1, N, fusion.approx);
        return;
    }
    if (K <= 0 || alpha == 0.0f) {  // empty sum: A (but for its row sums) and B are not read
        scale_c(C, ldc, M, N, beta);
        if (fusion.bias)
            for (int64_t i = 0; i < M; i++) add_bias(C + i * ldc, ldc, fusion.bias, 1, N);
        if (fusion.a_row_sums) row_sums_direct(fusion.a_row_sums, A, lda, M, std::max<int64_t>(K, 0), ta, fusion);
        return;
    }
    if (split_k(M, N, K)) {
        sgemm_split_k(C, ldc, A, lda, B, ldb, M, N, K, ta, tb, alpha, beta, nthreads, fusion);
        return;
    }
    const int nt = sgemm_threads(M, N, K, nthreads);
    const SgemmPlan P = plan_sgemm(C, ldc, A, lda, B, ldb, M, N, K, ta, tb, alpha, beta, nt, fusion);
    const int64_t b_copies = P.private_b ? nt : 1;
    PoolBuffer buf(size_t(P.b_floats * b_copies + P.a_floats * nt) * sizeof(float));
    float* const Bp = buf.data<float>();
    float* const Ap = Bp + P.b_floats * b_copies;
    if (nt == 1) {
        sgemm_run<false>(P, Bp, Ap, 0, 1);
        return;
    }
#pragma omp parallel num_threads(nt)
    {
        const int tid = thread_id();
        sgemm_run<true>(P, Bp + (P.private_b ? P.b_floats * tid : 0), Ap + P.a_floats * tid, tid, team_size());
    }
}

// `batch` independent products, one whole product per thread: scratch for every
// thread comes from one allocation made before the parallel loop.
void sgemm_batch_per_thread(float* C, int64_t stride_c, int64_t ldc, const float* A, int64_t stride_a, int64_t lda,
                            const float* B, int64_t stride_b, int64_t ldb, int64_t batch, int64_t M, int64_t N,
                            int64_t K, bool ta, bool tb, float alpha, float beta, int nt) {
    if (K <= 0 || alpha == 0.0f) {
        for (int64_t b = 0; b < batch; b++) scale_c(C + b * stride_c, ldc, M, N, beta);
        return;
    }
    const SgemmPlan P0 = plan_sgemm(C, ldc, A, lda, B, ldb, M, N, K, ta, tb, alpha, beta, 1);
    const int64_t per_thread = P0.b_floats + P0.a_floats;
    PoolBuffer buf(size_t(per_thread * nt) * sizeof(float));
#pragma omp parallel for schedule(static) num_threads(nt) if (nt > 1)
    for (int64_t b = 0; b < batch; b++) {
        SgemmPlan P = P0;
        P.C = C + b * stride_c;
        P.A = A + b * stride_a;
        P.B = B + b * stride_b;
        float* ws = buf.data<float>() + per_thread * thread_id();
        sgemm_run<false>(P, ws, ws + P.b_floats, 0, 1);
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
void gemm_fused(T* C, int64_t ldc, const T* A, int64_t lda, const T* B, int64_t ldb, int64_t M, int64_t N, int64_t K,
                bool trans_a, bool trans_b, T alpha, T beta, const GemmFusion<T>& fusion) {
    if constexpr (std::is_same_v<T, float>) {
        gemm_detail::sgemm(C, ldc, A, lda, B, ldb, M, N, K, trans_a, trans_b, alpha, beta, num_threads(), fusion);
    } else {
        // float64 (gradient checks): GELU'd copies of the operands, the product (into a scratch
        // when a GELU gradient follows: G may be C), then the bias or the GELU gradient
        const int64_t a_rows = trans_a ? K : M, b_rows = trans_b ? N : K;
        PoolBuffer abuf(fusion.gelu_a ? size_t(a_rows * lda) * sizeof(T) : 0);
        PoolBuffer bbuf(fusion.gelu_b ? size_t(b_rows * ldb) * sizeof(T) : 0);
        if (fusion.gelu_a) {
            gelu_forward(abuf.data<T>(), A, a_rows * lda, fusion.approx);
            A = abuf.data<T>();
        }
        if (fusion.gelu_b) {
            gelu_forward(bbuf.data<T>(), B, b_rows * ldb, fusion.approx);
            B = bbuf.data<T>();
        }
        PoolBuffer product(fusion.gelu_grad ? size_t(M * N) * sizeof(T) : 0);
        if (fusion.gelu_grad) {
            gemm(product.data<T>(), N, A, lda, B, ldb, M, N, K, trans_a, trans_b, alpha, T(0));
            gelu_backward_rows(C, ldc, product.data<T>(), N, fusion.gelu_grad, fusion.ld_gelu_grad, M, N,
                               fusion.approx);
        } else {
            gemm(C, ldc, A, lda, B, ldb, M, N, K, trans_a, trans_b, alpha, beta);
        }
        if (fusion.a_row_sums) {  // of the GELU'd copy already: no second GELU
            GemmFusion<T> plain;
            gemm_detail::row_sums_direct(fusion.a_row_sums, A, lda, M, K, trans_a, plain);
        }
        if (fusion.bias)
            for (int64_t i = 0; i < M; i++)
                for (int64_t j = 0; j < N; j++) C[i * ldc + j] += fusion.bias[j];
    }
}

template <typename T>
void gemm_batched(T* C, int64_t stride_c, int64_t ldc, const T* A, int64_t stride_a, int64_t lda, const T* B,
                  int64_t stride_b, int64_t ldb, int64_t batch, int64_t M, int64_t N, int64_t K, bool trans_a,
                  bool trans_b, T alpha, T beta) {
    using gemm_detail::gemm_nt;
    if (batch <= 0 || M <= 0 || N <= 0) return;
    const int nt = in_parallel() ? 1 : num_threads();
    // One B for every A, A and C stacked row after row: one tall product, (batch*M, K) @ (K, N).
    if (batch == 1 || (stride_b == 0 && !trans_a && stride_a == M * lda && stride_c == M * ldc)) {
        gemm_nt(C, ldc, A, lda, B, ldb, batch * M, N, K, trans_a, trans_b, alpha, beta, nt);
        return;
    }
    // Many small products (attention's per-head ones): one whole product per thread.
    // The same per-product code runs either way, so the result does not depend on it.
    const bool small = M * N * K <= (int64_t(1) << 21);
    const bool per_thread = nt == 1 || (batch >= nt && (small || batch >= 4 * nt));
    if constexpr (std::is_same_v<T, float>) {
        if (per_thread) {
            gemm_detail::sgemm_batch_per_thread(C, stride_c, ldc, A, stride_a, lda, B, stride_b, ldb, batch, M, N, K,
                                                trans_a, trans_b, alpha, beta, nt);
            return;
        }
    } else if (per_thread && nt > 1) {
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

template <typename T>
bool gemm_gelu_grad_in_place(int64_t M, int64_t N, int64_t K) {
    if constexpr (std::is_same_v<T, float>)
        return gemm_detail::gelu_grad_in_tiles(M, N, K);
    else
        return true;  // the float64 path makes the product in a scratch first
}

#define FG_INSTANTIATE(T)                                                                                     \
    template bool gemm_gelu_grad_in_place<T>(int64_t, int64_t, int64_t);                                  \
    template void gemm<T>(T*, int64_t, const T*, int64_t, const T*, int64_t, int64_t, int64_t, int64_t, bool, \
                          bool, T, T);                                                                        \
    template void gemm_fused<T>(T*, int64_t, const T*, int64_t, const T*, int64_t, int64_t, int64_t, int64_t,   \
                                bool, bool, T, T, const GemmFusion<T>&);                                      \
    template void gemm_batched<T>(T*, int64_t, int64_t, const T*, int64_t, int64_t, const T*, int64_t,       \
                                  int64_t, int64_t, int64_t, int64_t, int64_t, bool, bool, T, T);
FG_INSTANTIATE(float)
FG_INSTANTIATE(double)
#undef FG_INSTANTIATE

}  // namespace femtogpt::cpu
