// Flash attention (FlashAttention-2 schedule) on the CPU, forward and backward.
//
// Forward, per query block of Bq rows: for each key block of Bk keys the driver forms the
// transposed scores S^T = K_blk (c Q_blk)^T with a register-tiled gemm (c = scale*log2(e),
// so the softmax runs in base 2; K is read in place, Q^T packed once per query block),
// turns them into unnormalized probabilities exp2(S - m) under a running per-query max m
// (lane-wise down the columns: no horizontal reductions), rescales the output accumulator
// rows whose max moved, adds P V_blk, and divides by the row sum once at the end. It saves
// only O and the natural-log log-sum-exp L = (m + log2(l)) * ln(2).
//
// Backward recomputes each tile's P = exp2(c Q K^T - L*log2(e)) from Q, K and L (one FMA per
// element on the raw scores, as backward needs the unscaled Q for dK anyway), with
// Drow = rowsum(dO * O), dV += P^T dO, dP = dO V^T, dS = scale * P * (dP - Drow),
// dK += dS^T Q, dQ += dS K. Key blocks own their dK and dV rows (no races). dQ is the
// one sum that crosses key blocks; it is accumulated race-free in one of two schedules:
//   per head  (B*H a multiple of the thread count, or many heads): one thread does a whole
//             head, key blocks outer (two at a time, sharing a sweep over the query blocks),
//             and adds every tile's dS K straight into the head's dQ;
//   two pass  (few heads): tasks (head, key block) make dK and dV, then tasks (head, query
//             block) recompute dS and sum dQ over key blocks in the same ascending order.
// Both schedules add the same tiles, computed by the same kernels, in the same order, so
// the result is bitwise the same whatever the thread count; the choice is only about
// keeping two cores busy without per-thread dQ copies (which would make the sum's order
// depend on the thread count) or 40% more flops when there are enough heads.
//
// Causal: key blocks entirely above the diagonal are never visited; only blocks that
// straddle it mask element by element (per row, the number of visible keys), and inside
// those the tile products skip the register tiles the mask zeroes (TileBand), so a
// diagonal tile costs about half a full one. Masked probabilities and dS are exact zeros,
// so a key never touches the output or dQ of a query that cannot see it.
// D and the key blocks are zero-padded to the column granularity `nr` of the ISA's kernels.
//
// Backward packs K^T and V^T blocks once per head, shared by its query blocks (the ISA's
// pack_t, a transpose). When D needs no padding, dQ, dK and dV are summed in place in the
// outputs, the first tile of each sum setting it (no zeroing, no copy out). Below
// kDirectMaxQueries queries (KV-cache decoding) the forward takes scores row by row.
#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <vector>

#include "cpu/attention.h"
#include "cpu/isa.h"
#include "parallel.h"
#include "pool.h"

namespace femtogpt::cpu {

namespace attn_detail {

namespace {

// One register tile of C: MR rows x NR columns.
template <typename T, int MR, int NR>
void tile_generic(T* C, int64_t ldc, const T* A, int64_t sar, int64_t sap, const T* B, int64_t ldb, int64_t K,
                  bool accumulate) {
    T c[MR][NR];
    for (int r = 0; r < MR; r++)
        for (int j = 0; j < NR; j++) c[r][j] = accumulate ? C[r * ldc + j] : T(0);
    for (int64_t p = 0; p < K; p++) {
        const T* b = B + p * ldb;
        for (int r = 0; r < MR; r++) {
            T a = A[r * sar + p * sap];
            for (int j = 0; j < NR; j++) c[r][j] += a * b[j];
        }
    }
    for (int r = 0; r < MR; r++)
        for (int j = 0; j < NR; j++) C[r * ldc + j] = c[r][j];
}

constexpr int kGenericMR = 4;
constexpr int kGenericNR = 8;

template <typename T>
void gemm_generic(T* C, int64_t ldc, const T* A, int64_t sar, int64_t sap, const T* B, int64_t ldb, int64_t M,
                  int64_t N, int64_t K, bool accumulate, TileBand band) {
    for (int64_t n0 = 0; n0 < N; n0 += kGenericNR) {
        for (int64_t m0 = 0; m0 < M; m0 += kGenericMR) {
            const int64_t mr = std::min<int64_t>(kGenericMR, M - m0);
            if (n0 >= band.n_hi + m0 + mr || n0 + kGenericNR <= band.n_lo + m0) continue;  // all masked
            const int64_t k0 = std::clamp<int64_t>(band.k_lo + m0, 0, K);
            const int64_t k1 = std::clamp<int64_t>(band.k_hi + m0 + mr, k0, K);
            T* c = C + m0 * ldc + n0;
            const T* a = A + m0 * sar + k0 * sap;
            const T* b = B + k0 * ldb + n0;
            switch (mr) {
                case 4: tile_generic<T, 4, kGenericNR>(c, ldc, a, sar, sap, b, ldb, k1 - k0, accumulate); break;
                case 3: tile_generic<T, 3, kGenericNR>(c, ldc, a, sar, sap, b, ldb, k1 - k0, accumulate); break;
                case 2: tile_generic<T, 2, kGenericNR>(c, ldc, a, sar, sap, b, ldb, k1 - k0, accumulate); break;
                default: tile_generic<T, 1, kGenericNR>(c, ldc, a, sar, sap, b, ldb, k1 - k0, accumulate); break;
            }
        }
    }
}

template <typename T>
void gemm_nt_generic(T* C, int64_t ldc, const T* A, int64_t lda, const T* B, int64_t ldb, int64_t M, int64_t N,
                     int64_t K) {
    for (int64_t r = 0; r < M; r++)
        for (int64_t j = 0; j < N; j++) {
            T acc = 0;
            for (int64_t p = 0; p < K; p++) acc += A[r * lda + p] * B[j * ldb + p];
            C[r * ldc + j] = acc;
        }
}

template <typename T>
T row_max_generic(const T* x, int64_t n) {
    T m = x[0];
    for (int64_t i = 1; i < n; i++) m = std::max(m, x[i]);
    return m;
}

template <typename T>
T exp2_row_generic(T* x, int64_t n, int64_t npad, T c, T sub) {
    T sum = 0;
    for (int64_t i = 0; i < n; i++) {
        x[i] = std::exp2(x[i] * c - sub);
        sum += x[i];
    }
    for (int64_t i = n; i < npad; i++) x[i] = T(0);
    return sum;
}

template <typename T>
void ds_row_generic(T* dp, const T* p, int64_t n, int64_t npad, T d, T scale) {
    for (int64_t i = 0; i < n; i++) dp[i] = p[i] * (dp[i] - d) * scale;
    for (int64_t i = n; i < npad; i++) dp[i] = T(0);
}

template <typename T>
void scale_row_generic(T* x, int64_t n, T a) {
    for (int64_t i = 0; i < n; i++) x[i] *= a;
}

template <typename T>
void softmax_cols_generic(T* st, int64_t ld, int64_t nk, int64_t nq, int64_t base, T* m, T* l, T* o, int64_t ldo,
                          int64_t no) {
    for (int64_t i = 0; i < nq; i++) {
        const int64_t n = visible_keys(base, i, nk);
        T mnew = m[i];
        for (int64_t j = 0; j < n; j++) mnew = std::max(mnew, st[j * ld + i]);
        const T alpha = mnew == -std::numeric_limits<T>::infinity() ? T(0) : std::exp2(m[i] - mnew);
        T sum = 0;
        for (int64_t j = 0; j < n; j++) {
            const T e = std::exp2(st[j * ld + i] - mnew);
            st[j * ld + i] = e;
            sum += e;
        }
        for (int64_t j = n; j < nk; j++) st[j * ld + i] = T(0);
        l[i] = l[i] * alpha + sum;
        m[i] = mnew;
        if (alpha != T(1)) scale_row_generic(o + i * ldo, no, alpha);
    }
}

template <typename T>
struct RowsGeneric {
    static T row_max(const T* x, int64_t n) { return row_max_generic(x, n); }
    static T exp2_row(T* x, int64_t n, int64_t npad, T c, T sub) { return exp2_row_generic(x, n, npad, c, sub); }
    static void ds_row(T* dp, const T* p, int64_t n, int64_t npad, T d, T scale) {
        ds_row_generic(dp, p, n, npad, d, scale);
    }
    static void scale_row(T* x, int64_t n, T a) { scale_row_generic(x, n, a); }
};

}  // namespace

template <typename T>
const TileKernels<T>& tile_kernels_generic() {
    static const TileKernels<T> k{kGenericNR, gemm_generic<T>, gemm_nt_generic<T>,
                                  softmax_tile_rows<RowsGeneric<T>, T>, softmax_cols_generic<T>,
                                  pds_tile_rows<RowsGeneric<T>, T>, pack_t_rows<T>, finish_rows<T>,
                                  rowdot_rows<T>};
    return k;
}
template const TileKernels<float>& tile_kernels_generic<float>();
template const TileKernels<double>& tile_kernels_generic<double>();

}  // namespace attn_detail

namespace {

using attn_detail::TileBand;
using attn_detail::TileKernels;

template <typename T>
const TileKernels<T>& active_kernels();
template <>
const TileKernels<double>& active_kernels<double>() {  // float64 serves gradient checks: plain loops
    return attn_detail::tile_kernels_generic<double>();
}
template <>
const TileKernels<float>& active_kernels<float>() {
    switch (active_isa()) {
        case Isa::avx512: return attn_detail::tile_kernels_avx512();
        case Isa::avx2: return attn_detail::tile_kernels_avx2();
        default: return attn_detail::tile_kernels_generic<float>();
    }
}

constexpr double kLog2e = 1.4426950408889634;

int64_t round_up(int64_t x, int64_t m) { return (x + m - 1) / m * m; }

// Block geometry of one problem, the same for every head.
struct Geometry {
    int64_t Tq, Tk, D, Dp, Bq, Bk, Bkp, nqb, nkb, off;
    bool causal;

    Geometry(int64_t Tq_, int64_t Tk_, int64_t D_, bool causal_, int64_t block_q, int64_t block_k, int nr)
        : Tq(Tq_), Tk(Tk_), D(D_), causal(causal_) {
        Dp = round_up(D, nr);
        Bq = std::max<int64_t>(1, std::min(block_q, Tq));
        Bk = std::max<int64_t>(1, std::min(block_k, Tk));
        Bkp = round_up(Bk, nr);
        nqb = (Tq + Bq - 1) / Bq;
        nkb = (Tk + Bk - 1) / Bk;
        off = Tk - Tq;
    }
    int64_t rows(int64_t qb) const { return std::min(Bq, Tq - qb * Bq); }
    int64_t keys(int64_t kb) const { return std::min(Bk, Tk - kb * Bk); }
    // Key blocks [0, kb_end) hold a key some row of query block qb sees.
    int64_t kb_end(int64_t qb) const {
        if (!causal) return nkb;
        return (off + qb * Bq + rows(qb) - 1) / Bk + 1;
    }
    // Query blocks [qb_begin, nqb) hold a row that sees some key of key block kb.
    int64_t qb_begin(int64_t kb) const {
        if (!causal) return 0;
        return std::max<int64_t>(0, kb * Bk - off) / Bq;
    }
    // Row r of query block i0 sees keys j0 + c of key block j0 for c < base + r + 1: the
    // TileBand offset of that tile (no limit without a mask).
    int64_t band_base(int64_t i0, int64_t j0) const { return causal ? off + i0 - j0 : TileBand::kAll; }
};

// Scratch slices, each a multiple of 16 elements so every slice stays 64-byte aligned.
int64_t slice(int64_t n) { return round_up(n, 16); }

// (n, D) rows of stride ld -> (n, Dp) rows, zero padded.
template <typename T>
void pack_rows(T* dst, const T* src, int64_t ld, int64_t n, int64_t D, int64_t Dp) {
    for (int64_t i = 0; i < n; i++) {
        std::memcpy(dst + i * Dp, src + i * ld, size_t(D) * sizeof(T));
        for (int64_t d = D; d < Dp; d++) dst[i * Dp + d] = T(0);
    }
}

// Rows (n, Dp) -> (n, D) rows of stride ld.
template <typename T>
void unpack_rows(T* dst, int64_t ld, const T* src, int64_t n, int64_t D, int64_t Dp) {
    for (int64_t i = 0; i < n; i++) std::memcpy(dst + i * ld, src + i * Dp, size_t(D) * sizeof(T));
}

// Threads for a problem: one below about a million multiply-adds (a decoding step, a tiny
// head), where waking a second thread costs more than it saves. Results do not depend on it.
int threads_for(int64_t BH, int64_t Tq, int64_t Tk, int64_t D) {
    constexpr int64_t kMinParallelWork = int64_t(1) << 20;
    return BH * Tq * Tk * D >= kMinParallelWork ? num_threads() : 1;
}

// Whether this many heads keep every thread busy on its own (see the top of the file).
bool per_head_schedule(int64_t BH, int nt) { return BH % nt == 0 || BH >= 4 * int64_t(nt); }

// Heads a thread takes at a time in the per-head schedules: up to the H heads of one batch
// element, while that leaves 8 chunks a thread for the balance. In a GPT's fused layout a
// row's cache lines hold every head's D values (a head of D = 16 is one line of q, k, v,
// out and each gradient), so threads on neighbouring heads contend for lines; whole batch
// elements keep them apart (femto backward on 2 threads: 0.39 -> 0.26 ms).
int64_t head_chunk(int64_t BH, int64_t H, int nt) {
    return std::max<int64_t>(1, std::min<int64_t>(H, BH / (8 * int64_t(nt))));
}

// Asks for the cache lines of n rows of D values (stride ld) ahead of their use, into L2.
// The per-head schedules call it on the next head's inputs while this head computes: in a
// GPT's fused layout a head's rows lie 3C floats apart, one to four lines each, a new page
// every few rows, which the hardware prefetchers do not follow (the small preset's forward
// waited ~20% of its time on them). Only for inputs of kPrefetchBytes: smaller heads (the
// femto preset's, 20 KB) compute in about the time their prefetches take to arrive, and
// the burst held up their own loads (~8% slower); larger ones would not fit beside the
// current head in L2.
constexpr int64_t kPrefetchBytes[2] = {int64_t(1) << 16, int64_t(1) << 19};

bool prefetch_heads(int64_t bytes) { return bytes >= kPrefetchBytes[0] && bytes <= kPrefetchBytes[1]; }

// Smaller heads that are one tile (the femto preset's) instead ask, as they start, for
// their own rows that their first kernel does not read: that kernel (a transposing pack)
// then waits on its rows with the others already on their way, rather than each later
// kernel waiting on its own. It pays where the inputs come from memory, as in a training
// step (femto forward on cold inputs 1 thread: 0.47 -> 0.41 ms); on inputs already in the
// cache the prefetches cost ~1.5%.
bool prefetch_own_rows(int64_t bytes, const Geometry& g) {
    return bytes < kPrefetchBytes[0] && g.nqb == 1 && g.nkb == 1;
}

template <typename T>
void prefetch_rows(const T* p, int64_t ld, int64_t n, int64_t D) {
    constexpr int64_t kLine = 64 / sizeof(T);
    for (int64_t i = 0; i < n; i++)
        for (int64_t d = 0; d < D; d += kLine) __builtin_prefetch(p + i * ld + d, 0, 2);
}

// ---------------------------------------------------------------- forward

// Query blocks run on transposed score tiles, S^T = K_blk (c Q_blk)^T: K is read in place
// as the product's A (so no K^T is packed), Q^T is packed once per query block, and the
// softmax runs down the columns (TileKernels::softmax_cols) with lane-wise maxima and
// sums. O += P V reads P = (S^T)^T through the gemm's A^T strides.
// Below this many queries (decoding against a KV cache) a tile would be mostly padding
// columns: the forward takes the scores row by row instead, one dot product each.
constexpr int64_t kDirectMaxQueries = 8;

// One head's inputs, rows of stride ldq, ldk, ldv; V's rows padded to Dp (packed if D < Dp).
template <typename T>
struct FwdHead {
    const T* q;  // (Tq, D)
    const T* k;  // (Tk, D)
    const T* v;  // (Tk, Dp)
    int64_t ldq, ldk, ldv;
};

template <typename T>
int64_t fwd_slot_size(const Geometry& g) {
    return g.D != g.Dp ? slice(g.Tk * g.Dp) : 0;
}

template <typename T>
FwdHead<T> fwd_pack(T* slot, const T* q, int64_t ldq, const T* k, int64_t ldk, const T* v, int64_t ldv,
                    const Geometry& g) {
    if (g.D != g.Dp) {
        pack_rows(slot, v, ldv, g.Tk, g.D, g.Dp);
        return {q, k, slot, ldq, ldk, g.Dp};
    }
    return {q, k, v, ldq, ldk, ldv};
}

// Bq rounded up to the tile width: the row stride of the transposed tiles.
int64_t fwd_bqp(const Geometry& g, int nr) { return round_up(g.Bq, nr); }

template <typename T>
int64_t fwd_scratch_size(const Geometry& g, int nr) {
    const int64_t bqp = fwd_bqp(g, nr);
    const int64_t cols = slice(g.Dp * bqp) + slice(g.Bk * bqp) + slice(g.Bq * g.Dp) + 2 * slice(bqp);
    const int64_t rows = 2 * slice(g.Bq * g.Dp) + slice(g.Bq * g.Bkp) + 2 * slice(g.Bq);
    return std::max(cols, rows);
}

// out rows and lse of query block qb of one head, on transposed tiles.
template <typename T>
void fwd_qblock(T* out, int64_t ldo, T* lse, const FwdHead<T>& hd, const Geometry& g, int64_t qb, T c,
                const TileKernels<T>& kn, T* scratch) {
    const int64_t i0 = qb * g.Bq, mq = g.rows(qb), D = g.D, Dp = g.Dp, ld = fwd_bqp(g, kn.nr);
    const int64_t nqp = round_up(mq, kn.nr);
    T* qt = scratch;                 // (Dp, ld): (c Q_blk)^T, zero past mq and D
    T* st = qt + slice(Dp * ld);     // (nk, ld): S^T, then P^T
    T* o = st + slice(g.Bk * ld);    // (mq, Dp): unnormalized output
    T* m = o + slice(g.Bq * Dp);     // (ld): running max of S*c per query
    T* l = m + slice(ld);            // (ld): running sum of exp2(S*c - m)
    // Q * c: the scores come out in base-2 units, and their max is the max whatever c's sign
    kn.pack_t(qt, ld, hd.q + i0 * hd.ldq, hd.ldq, mq, ld, D, Dp, c);
    std::fill(m, m + ld, -std::numeric_limits<T>::infinity());
    std::fill(l, l + ld, T(0));
    const int64_t kb_end = g.kb_end(qb);
    for (int64_t kb = 0; kb < kb_end; kb++) {
        const int64_t j0 = kb * g.Bk, nk = g.keys(kb);
        const int64_t base = g.band_base(i0, j0);
        // S^T = K_blk (c Q_blk)^T: key row j needs query columns i >= j - base only
        kn.gemm(st, ld, hd.k + j0 * hd.ldk, hd.ldk, 1, qt, ld, nk, nqp, D, false,
                {TileBand::kAll, -TileBand::kAll, TileBand::kAll, -base});
        kn.softmax_cols(st, ld, nk, mq, base, m, l, o, Dp, Dp);
        // O += P V with P = (P^T)^T: query row i sums keys j < base + i + 1 only. The first key
        // block sets O (every query sees key 0), and the softmax rescales only rows that have a sum
        kn.gemm(o, Dp, st, 1, ld, hd.v + j0 * hd.ldv, hd.ldv, mq, Dp, nk, kb > 0,
                {TileBand::kAll, -TileBand::kAll, base});
    }
    kn.finish(out + i0 * ldo, ldo, lse + i0, o, Dp, m, l, mq, g.D);
}

// The same for a handful of queries (decoding): scores row by row, K read by dot products.
template <typename T>
void fwd_qblock_direct(T* out, int64_t ldo, T* lse, const FwdHead<T>& hd, const Geometry& g, int64_t qb, T c,
                       const TileKernels<T>& kn, T* scratch) {
    const int64_t i0 = qb * g.Bq, mq = g.rows(qb), Dp = g.Dp, ld = g.Bkp;
    T* qbuf = scratch;
    T* s = qbuf + slice(g.Bq * Dp);  // (mq, Bkp): scores, then probabilities
    T* o = s + slice(g.Bq * ld);     // (mq, Dp): unnormalized output
    T* m = o + slice(g.Bq * Dp);     // running max of S*c
    T* l = m + slice(g.Bq);          // running sum of exp2(S*c - m)
    for (int64_t r = 0; r < mq; r++) {
        const T* src = hd.q + (i0 + r) * hd.ldq;
        for (int64_t d = 0; d < g.D; d++) qbuf[r * Dp + d] = src[d] * c;
        for (int64_t d = g.D; d < Dp; d++) qbuf[r * Dp + d] = T(0);
    }
    std::fill(m, m + mq, -std::numeric_limits<T>::infinity());
    std::fill(l, l + mq, T(0));
    const int64_t kb_end = g.kb_end(qb);
    for (int64_t kb = 0; kb < kb_end; kb++) {
        const int64_t j0 = kb * g.Bk, nk = g.keys(kb), nkp = round_up(nk, kn.nr);
        const int64_t base = g.band_base(i0, j0);
        kn.gemm_nt(s, ld, qbuf, Dp, hd.k + j0 * hd.ldk, hd.ldk, mq, nk, g.D);
        kn.softmax_tile(s, ld, mq, nk, nkp, base, m, l, o, Dp, Dp);
        kn.gemm(o, Dp, s, ld, 1, hd.v + j0 * hd.ldv, hd.ldv, mq, Dp, nk, kb > 0,
                {TileBand::kAll, -TileBand::kAll, base});
    }
    kn.finish(out + i0 * ldo, ldo, lse + i0, o, Dp, m, l, mq, g.D);
}

template <typename T>
void fwd_block(T* out, int64_t ldo, T* lse, const FwdHead<T>& hd, const Geometry& g, int64_t qb, T c,
               const TileKernels<T>& kn, T* scratch) {
    if (g.Tq >= kDirectMaxQueries)
        fwd_qblock(out, ldo, lse, hd, g, qb, c, kn, scratch);
    else
        fwd_qblock_direct(out, ldo, lse, hd, g, qb, c, kn, scratch);
}

}  // namespace

// out (B,H,Tq,D), lse (B,H,Tq) <- q (B,H,Tq,D), k (B,H,Tk,D), v (B,H,Tk,D)
template <typename T>
void attention_flash_forward(Heads<T> out, T* lse, Heads<const T> q, Heads<const T> k, Heads<const T> v, int64_t B,
                             int64_t H, int64_t Tq, int64_t Tk, int64_t D, bool causal, T scale, int64_t block_q,
                             int64_t block_k) {
    const int64_t BH = B * H;
    if (Tq == 0 || BH == 0) return;
    if (Tk == 0) {  // nothing to attend to: zero output, empty log-sum-exp
        for (int64_t bh = 0; bh < BH; bh++)
            for (int64_t i = 0; i < Tq; i++) std::fill_n(out.at(bh / H, bh % H) + i * out.row, D, T(0));
        std::fill(lse, lse + BH * Tq, -std::numeric_limits<T>::infinity());
        return;
    }
    const TileKernels<T>& kn = active_kernels<T>();
    const Geometry g(Tq, Tk, D, causal, block_q, block_k, kn.nr);
    const T c = scale * T(kLog2e);
    const int nt = threads_for(BH, Tq, Tk, D);
    const bool per_head = per_head_schedule(BH, nt);
    const int64_t chunk = head_chunk(BH, H, nt);
    const int64_t slot_size = fwd_slot_size<T>(g), scratch_size = fwd_scratch_size<T>(g, kn.nr);
    const int64_t nslots = per_head ? nt : BH;
    PoolBuffer slots(size_t(nslots * slot_size) * sizeof(T));
    PoolBuffer scratch(size_t(nt * scratch_size) * sizeof(T));
    auto head_in = [&](int64_t bh, T* slot) {
        const int64_t b = bh / H, h = bh % H;
        return fwd_pack<T>(slot, q.at(b, h), q.row, k.at(b, h), k.row, v.at(b, h), v.row, g);
    };
    auto out_head = [&](int64_t bh) { return out.at(bh / H, bh % H); };
    const int64_t head_bytes = (Tq + 2 * Tk) * D * int64_t(sizeof(T));
    const bool prefetch = prefetch_heads(head_bytes), prefetch_own = prefetch_own_rows(head_bytes, g);
    if (per_head) {
#pragma omp parallel for schedule(dynamic, chunk) num_threads(nt)
        for (int64_t bh = 0; bh < BH; bh++) {
            const int tid = thread_id();
            if (prefetch && bh + 1 < BH) {
                const int64_t b = (bh + 1) / H, h = (bh + 1) % H;
                prefetch_rows(q.at(b, h), q.row, Tq, D);
                prefetch_rows(k.at(b, h), k.row, Tk, D);
                prefetch_rows(v.at(b, h), v.row, Tk, D);
            }
            if (prefetch_own) {  // K and V, while the (c Q)^T pack waits on Q
                prefetch_rows(k.at(bh / H, bh % H), k.row, Tk, D);
                prefetch_rows(v.at(bh / H, bh % H), v.row, Tk, D);
            }
            FwdHead<T> hd = head_in(bh, slots.data<T>() + tid * slot_size);
            for (int64_t qb = 0; qb < g.nqb; qb++)
                fwd_block<T>(out_head(bh), out.row, lse + bh * Tq, hd, g, qb, c, kn,
                             scratch.data<T>() + tid * scratch_size);
        }
    } else {
        std::vector<FwdHead<T>> heads(static_cast<size_t>(BH));
#pragma omp parallel for schedule(static) num_threads(nt)
        for (int64_t bh = 0; bh < BH; bh++) heads[size_t(bh)] = head_in(bh, slots.data<T>() + bh * slot_size);
        // Latest query blocks first: under a causal mask they are the most work.
#pragma omp parallel for schedule(dynamic, 1) num_threads(nt)
        for (int64_t t = 0; t < BH * g.nqb; t++) {
            const int64_t bh = t / g.nqb, qb = g.nqb - 1 - t % g.nqb;
            fwd_block<T>(out_head(bh), out.row, lse + bh * Tq, heads[size_t(bh)], g, qb, c, kn,
                         scratch.data<T>() + thread_id() * scratch_size);
        }
    }
}

namespace {

// ---------------------------------------------------------------- backward

// One head's operands for backward. Q, K and dO have rows of Dp floats (packed, zero padded,
// when D < Dp; otherwise read in place) with strides ldq, ldk, lddo.
template <typename T>
struct BwdHead {
    const T *q, *k, *dout;  // (Tq,Dp), (Tk,Dp), (Tq,Dp)
    const T *kt, *vt;       // K^T and V^T blocks, (Dp,Bkp) each
    const T *l2, *drow;     // (Tq): lse * log2(e), rowsum(dO * O)
    int64_t ldq, ldk, lddo;
};

// Where one head's gradients go: rows of stride ldq, ldk, ldv.
template <typename T>
struct BwdGrads {
    T *dq, *dk, *dv;
    int64_t ldq, ldk, ldv;
};

template <typename T>
int64_t bwd_slot_size(const Geometry& g) {
    int64_t n = 2 * slice(g.nkb * g.Dp * g.Bkp) + 2 * slice(g.Tq);
    if (g.D != g.Dp) n += 2 * slice(g.Tq * g.Dp) + slice(g.Tk * g.Dp);
    return n;
}

// One head's operands: (b, h) of each.
template <typename T>
struct BwdInputs {
    const T *q, *k, *v, *out, *dout, *lse;
    int64_t ldq, ldk, ldv, ldo, lddo;
};

template <typename T>
BwdHead<T> bwd_pack(T* slot, const BwdInputs<T>& in, const Geometry& g, const TileKernels<T>& kn) {
    BwdHead<T> hd;
    T* kt = slot;
    T* vt = kt + slice(g.nkb * g.Dp * g.Bkp);
    T* l2 = vt + slice(g.nkb * g.Dp * g.Bkp);
    T* drow = l2 + slice(g.Tq);
    for (int64_t kb = 0; kb < g.nkb; kb++) {  // K^T and V^T blocks, (Dp, Bkp) each
        const int64_t j0 = kb * g.Bk, nk = g.keys(kb), at = kb * g.Dp * g.Bkp;
        kn.pack_t(kt + at, g.Bkp, in.k + j0 * in.ldk, in.ldk, nk, g.Bkp, g.D, g.Dp, T(1));
        kn.pack_t(vt + at, g.Bkp, in.v + j0 * in.ldv, in.ldv, nk, g.Bkp, g.D, g.Dp, T(1));
    }
    for (int64_t i = 0; i < g.Tq; i++) l2[i] = in.lse[i] * T(kLog2e);
    kn.rowdot(drow, in.dout, in.lddo, in.out, in.ldo, g.Tq, g.D);
    hd.kt = kt, hd.vt = vt, hd.l2 = l2, hd.drow = drow;
    hd.q = in.q, hd.k = in.k, hd.dout = in.dout, hd.ldq = in.ldq, hd.ldk = in.ldk, hd.lddo = in.lddo;
    if (g.D != g.Dp) {
        T* qp = drow + slice(g.Tq);
        T* dop = qp + slice(g.Tq * g.Dp);
        T* kp = dop + slice(g.Tq * g.Dp);
        pack_rows(qp, in.q, in.ldq, g.Tq, g.D, g.Dp);
        pack_rows(dop, in.dout, in.lddo, g.Tq, g.D, g.Dp);
        pack_rows(kp, in.k, in.ldk, g.Tk, g.D, g.Dp);
        hd.q = qp, hd.dout = dop, hd.k = kp, hd.ldq = hd.ldk = hd.lddo = g.Dp;
    }
    return hd;
}

// Key blocks one sweep of the per-head schedule takes together: they share the sweep over
// the query blocks, so Q, dO and dQ (three (Tq, D) arrays, past the L2 cache at T = 4096)
// stream through once per kKeyBlocksPerSweep key blocks instead of once per key block.
constexpr int64_t kKeyBlocksPerSweep = 2;

// Scratch of one thread: P and dS tiles, dK and dV accumulators for each key block of a
// sweep, and the two-pass schedule's dQ accumulator (the accumulators only when D is padded).
template <typename T>
int64_t bwd_scratch_size(const Geometry& g) {
    return 2 * slice(g.Bq * g.Bkp) + 2 * kKeyBlocksPerSweep * slice(g.Bk * g.Dp) + slice(g.Bq * g.Dp);
}

// P and dS (mq, Bkp) of tile (qb, kb); both schedules make their tiles here.
template <typename T>
void bwd_tile(T* p, T* ds, const BwdHead<T>& hd, const Geometry& g, int64_t qb, int64_t kb, T c, T scale,
              const TileKernels<T>& kn) {
    const int64_t i0 = qb * g.Bq, mq = g.rows(qb), j0 = kb * g.Bk, nk = g.keys(kb), nkp = round_up(nk, kn.nr);
    const int64_t Dp = g.Dp, ld = g.Bkp;
    const TileBand cols{g.band_base(i0, j0), -TileBand::kAll, TileBand::kAll};
    kn.gemm(p, ld, hd.q + i0 * hd.ldq, hd.ldq, 1, hd.kt + kb * Dp * ld, ld, mq, nkp, Dp, false, cols);  // S
    kn.gemm(ds, ld, hd.dout + i0 * hd.lddo, hd.lddo, 1, hd.vt + kb * Dp * ld, ld, mq, nkp, Dp, false,
            cols);  // dP = dO V^T
    // P = exp(S*scale - L), then dS = scale * P * (dP - Drow), each row while it is in L1;
    // both exactly 0 where masked
    kn.pds_tile(p, ds, ld, mq, nk, nkp, cols.n_hi, c, hd.l2 + i0, hd.drow + i0, scale);
}

// dK and dV rows of key blocks [kb0, kb0 + nb) (nb <= kKeyBlocksPerSweep); with dq_acc
// (Tq,Dp), rows of stride ld_acc, also adds each tile's dS K to it (its first key block,
// 0, sets it). Every dQ row still takes its tiles in ascending key-block order, whatever nb.
// dK and dV are summed in place when their rows need no padding, else in scratch; either
// way a key block's first tile sets them, so nothing is zeroed first.
template <typename T>
void bwd_kblocks(const BwdGrads<T>& out, T* dq_acc, int64_t ld_acc, const BwdHead<T>& hd, const Geometry& g,
                 int64_t kb0, int64_t nb, T c, T scale, const TileKernels<T>& kn, T* scratch) {
    const int64_t Dp = g.Dp, ld = g.Bkp;
    const bool padded = g.D != Dp;
    T* p = scratch;
    T* ds = p + slice(g.Bq * ld);
    T* acc = ds + slice(g.Bq * ld);  // when padded, key block b: dK at acc + 2b * stride, dV after it
    const int64_t stride = slice(g.Bk * Dp);
    for (int64_t qb = g.qb_begin(kb0); qb < g.nqb; qb++) {
        const int64_t i0 = qb * g.Bq, mq = g.rows(qb);
        for (int64_t b = 0; b < nb; b++) {
            const int64_t kb = kb0 + b, j0 = kb * g.Bk, nk = g.keys(kb);
            if (qb < g.qb_begin(kb)) continue;  // the whole tile is masked
            const bool first = qb == g.qb_begin(kb);
            T* dk_acc = padded ? acc + 2 * b * stride : out.dk + j0 * out.ldk;
            T* dv_acc = padded ? dk_acc + stride : out.dv + j0 * out.ldv;
            const int64_t lddk = padded ? Dp : out.ldk, lddv = padded ? Dp : out.ldv;
            bwd_tile(p, ds, hd, g, qb, kb, c, scale, kn);
            const int64_t base = g.band_base(i0, j0);
            const TileBand keys_rows{TileBand::kAll, -base, TileBand::kAll};
            const TileBand query_rows{TileBand::kAll, -TileBand::kAll, base};
            kn.gemm(dv_acc, lddv, p, 1, ld, hd.dout + i0 * hd.lddo, hd.lddo, nk, Dp, mq, !first,
                    keys_rows);  // dV += P^T dO
            kn.gemm(dk_acc, lddk, ds, 1, ld, hd.q + i0 * hd.ldq, hd.ldq, nk, Dp, mq, !first,
                    keys_rows);  // dK += dS^T Q
            if (dq_acc)  // dQ += dS K
                kn.gemm(dq_acc + i0 * ld_acc, ld_acc, ds, ld, 1, hd.k + j0 * hd.ldk, hd.ldk, mq, Dp, nk, kb > 0,
                        query_rows);
        }
    }
    if (!padded) return;
    for (int64_t b = 0; b < nb; b++) {
        const int64_t j0 = (kb0 + b) * g.Bk, nk = g.keys(kb0 + b);
        unpack_rows(out.dk + j0 * out.ldk, out.ldk, acc + 2 * b * stride, nk, g.D, Dp);
        unpack_rows(out.dv + j0 * out.ldv, out.ldv, acc + (2 * b + 1) * stride, nk, g.D, Dp);
    }
}

// dQ rows of query block qb (the two-pass schedule's second pass), summed in place when
// they need no padding.
template <typename T>
void bwd_qblock(T* dq, int64_t lddq, const BwdHead<T>& hd, const Geometry& g, int64_t qb, T c, T scale,
                const TileKernels<T>& kn, T* scratch) {
    const int64_t i0 = qb * g.Bq, mq = g.rows(qb), Dp = g.Dp, ld = g.Bkp;
    const bool padded = g.D != Dp;
    T* p = scratch;
    T* ds = p + slice(g.Bq * ld);
    T* dq_acc = padded ? ds + slice(g.Bq * ld) + 2 * kKeyBlocksPerSweep * slice(g.Bk * Dp) : dq + i0 * lddq;
    const int64_t ld_acc = padded ? Dp : lddq;
    const int64_t kb_end = g.kb_end(qb);
    for (int64_t kb = 0; kb < kb_end; kb++) {
        bwd_tile(p, ds, hd, g, qb, kb, c, scale, kn);
        const TileBand query_rows{TileBand::kAll, -TileBand::kAll, g.band_base(i0, kb * g.Bk)};
        kn.gemm(dq_acc, ld_acc, ds, ld, 1, hd.k + kb * g.Bk * hd.ldk, hd.ldk, mq, Dp, g.keys(kb), kb > 0,
                query_rows);  // dQ += dS K
    }
    if (padded) unpack_rows(dq + i0 * lddq, lddq, dq_acc, mq, g.D, Dp);
}

}  // namespace

// dq (B,H,Tq,D), dk, dv (B,H,Tk,D) <- dout, q, out (B,H,Tq,D), k, v (B,H,Tk,D), lse (B,H,Tq)
template <typename T>
void attention_flash_backward(Heads<T> dq, Heads<T> dk, Heads<T> dv, Heads<const T> dout, Heads<const T> q,
                              Heads<const T> k, Heads<const T> v, Heads<const T> out, const T* lse, int64_t B,
                              int64_t H, int64_t Tq, int64_t Tk, int64_t D, bool causal, T scale, int64_t block_q,
                              int64_t block_k) {
    const int64_t BH = B * H;
    if (BH == 0) return;
    auto zero = [&](const Heads<T>& x, int64_t n) {
        // nothing to write: no loop over the heads at all (B*H may be 2^40 with no element; an
        // optimized build dropped the empty loop, an ASan build ran it)
        if (n == 0 || D == 0) return;
        for (int64_t bh = 0; bh < BH; bh++)
            for (int64_t i = 0; i < n; i++) std::fill_n(x.at(bh / H, bh % H) + i * x.row, D, T(0));
    };
    if (Tq == 0 || Tk == 0) {  // no query-key pair: every gradient is zero
        zero(dq, Tq);
        zero(dk, Tk);
        zero(dv, Tk);
        return;
    }
    const TileKernels<T>& kn = active_kernels<T>();
    const Geometry g(Tq, Tk, D, causal, block_q, block_k, kn.nr);
    const T c = scale * T(kLog2e);
    const int nt = threads_for(BH, Tq, Tk, D);
    const bool per_head = per_head_schedule(BH, nt);
    const int64_t chunk = head_chunk(BH, H, nt);
    const int64_t dq_acc_size = per_head && D != g.Dp ? slice(Tq * g.Dp) : 0;
    const int64_t slot_size = bwd_slot_size<T>(g) + dq_acc_size, scratch_size = bwd_scratch_size<T>(g);
    const int64_t nslots = per_head ? nt : BH;
    PoolBuffer slots(size_t(nslots * slot_size) * sizeof(T));
    PoolBuffer scratch(size_t(nt * scratch_size) * sizeof(T));
    auto head_in = [&](int64_t bh, T* slot) {
        const int64_t b = bh / H, h = bh % H;
        const BwdInputs<T> in{q.at(b, h), k.at(b, h), v.at(b, h), out.at(b, h), dout.at(b, h), lse + bh * Tq,
                              q.row,      k.row,      v.row,      out.row,      dout.row};
        return bwd_pack<T>(slot, in, g, kn);
    };
    auto grads = [&](int64_t bh) {
        const int64_t b = bh / H, h = bh % H;
        return BwdGrads<T>{dq.at(b, h), dk.at(b, h), dv.at(b, h), dq.row, dk.row, dv.row};
    };
    const int64_t head_bytes = (3 * Tq + 2 * Tk) * D * int64_t(sizeof(T));
    const bool prefetch = prefetch_heads(head_bytes), prefetch_own = prefetch_own_rows(head_bytes, g);
    if (per_head) {
#pragma omp parallel for schedule(dynamic, chunk) num_threads(nt)
        for (int64_t bh = 0; bh < BH; bh++) {
            const int tid = thread_id();
            if (prefetch && bh + 1 < BH) {
                const int64_t b = (bh + 1) / H, h = (bh + 1) % H;
                prefetch_rows(q.at(b, h), q.row, Tq, D);
                prefetch_rows(k.at(b, h), k.row, Tk, D);
                prefetch_rows(v.at(b, h), v.row, Tk, D);
                prefetch_rows(out.at(b, h), out.row, Tq, D);
                prefetch_rows(dout.at(b, h), dout.row, Tq, D);
            }
            if (prefetch_own) {  // Q, O and dO, while the K^T and V^T packs wait on K and V
                const int64_t b = bh / H, h = bh % H;
                prefetch_rows(q.at(b, h), q.row, Tq, D);
                prefetch_rows(out.at(b, h), out.row, Tq, D);
                prefetch_rows(dout.at(b, h), dout.row, Tq, D);
            }
            T* slot = slots.data<T>() + tid * slot_size;
            BwdHead<T> hd = head_in(bh, slot);
            const BwdGrads<T> gr = grads(bh);
            // dQ is summed in place when its rows need no padding
            T* dq_acc = D != g.Dp ? slot + bwd_slot_size<T>(g) : gr.dq;
            const int64_t ld_acc = D != g.Dp ? g.Dp : gr.ldq;
            for (int64_t kb = 0; kb < g.nkb; kb += kKeyBlocksPerSweep)
                bwd_kblocks<T>(gr, dq_acc, ld_acc, hd, g, kb, std::min(kKeyBlocksPerSweep, g.nkb - kb), c, scale, kn,
                               scratch.data<T>() + tid * scratch_size);
            if (D != g.Dp) unpack_rows(gr.dq, gr.ldq, dq_acc, Tq, D, g.Dp);
        }
        return;
    }
    std::vector<BwdHead<T>> heads(static_cast<size_t>(BH));
#pragma omp parallel for schedule(static) num_threads(nt)
    for (int64_t bh = 0; bh < BH; bh++) heads[size_t(bh)] = head_in(bh, slots.data<T>() + bh * slot_size);
    // Pass 1: dK, dV by key block (earliest first: under a causal mask they are the most work).
#pragma omp parallel for schedule(dynamic, 1) num_threads(nt)
    for (int64_t t = 0; t < BH * g.nkb; t++) {
        const int64_t bh = t / g.nkb, kb = t % g.nkb;
        bwd_kblocks<T>(grads(bh), nullptr, 0, heads[size_t(bh)], g, kb, 1, c, scale, kn,
                       scratch.data<T>() + thread_id() * scratch_size);
    }
    // Pass 2: dQ by query block (latest first, for the same reason).
#pragma omp parallel for schedule(dynamic, 1) num_threads(nt)
    for (int64_t t = 0; t < BH * g.nqb; t++) {
        const int64_t bh = t / g.nqb, qb = g.nqb - 1 - t % g.nqb;
        bwd_qblock<T>(grads(bh).dq, dq.row, heads[size_t(bh)], g, qb, c, scale, kn,
                      scratch.data<T>() + thread_id() * scratch_size);
    }
}

#define FG_INSTANTIATE(T)                                                                                       \
    template void attention_flash_forward<T>(Heads<T>, T*, Heads<const T>, Heads<const T>, Heads<const T>,      \
                                             int64_t, int64_t, int64_t, int64_t, int64_t, bool, T, int64_t,     \
                                             int64_t);                                                          \
    template void attention_flash_backward<T>(Heads<T>, Heads<T>, Heads<T>, Heads<const T>, Heads<const T>,     \
                                              Heads<const T>, Heads<const T>, Heads<const T>, const T*, int64_t, \
                                              int64_t, int64_t, int64_t, int64_t, bool, T, int64_t, int64_t);
FG_INSTANTIATE(float)
FG_INSTANTIATE(double)
#undef FG_INSTANTIATE

}  // namespace femtogpt::cpu
