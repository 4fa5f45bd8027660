// Scaled dot-product attention on the CPU: a standard path and a flash path.
//
// Size letters: B batch, H heads, Tq queries, Tk keys, D head dimension.
// q (B,H,Tq,D), k and v (B,H,Tk,D), out (B,H,Tq,D) and their gradients may lie anywhere
// rows of D contiguous floats can (Heads, below); lse and probs are contiguous.
//
//   S = scale * Q K^T (Tq,Tk);  P = softmax(S) over keys;  O = P V.
//
// Causal masking aligns the queries to the END of the keys: query i sits at absolute
// position Tk-Tq+i and sees keys 0..Tk-Tq+i (a KV cache's new queries); with Tq == Tk it is
// the usual lower-triangular mask. Causal needs Tq <= Tk, so no row is ever fully masked;
// Tk == 0 (non-causal only) gives zero outputs, lse = -inf and zero gradients.
//
// Standard (the reference): materializes P (B,H,Tq,Tk) and saves it for backward; the
// products run through cpu::gemm. Flash (FlashAttention-2): query blocks outer, key
// blocks inner, online softmax; saves only O and the log-sum-exp L (B,H,Tq); backward
// recomputes P tile by tile. No Tq x Tk buffer ever exists; its scratch grows linearly.
#pragma once

#include <cmath>
#include <cstdint>

namespace femtogpt::cpu {

// Largest head dimension the flash path takes (its tile scratch grows with D).
constexpr int64_t kAttentionMaxHeadDim = 512;

// Where the heads of one (B,H,T,D) operand lie: element (b,h,t,d) is at
// data[b*batch + h*head + t*row + d] (d contiguous). A contiguous (B,H,T,D) tensor has
// batch = H*T*D, head = T*D, row = D; the q, k and v of a GPT's fused projection (B,T,3,H,D)
// are read in place with batch = T*3*H*D, head = D, row = 3*H*D.
template <typename T>
struct Heads {
    T* data;
    int64_t batch, head, row;
    T* at(int64_t b, int64_t h) const { return data + b * batch + h * head; }
};

template <typename T>
Heads<T> contiguous_heads(T* data, int64_t H, int64_t T_, int64_t D) {
    return {data, H * T_ * D, T_ * D, D};
}

// out (B,H,Tq,D), probs (B,H,Tq,Tk) <- q (B,H,Tq,D), k (B,H,Tk,D), v (B,H,Tk,D); probs contiguous
template <typename T>
void attention_standard_forward(Heads<T> out, T* probs, Heads<const T> q, Heads<const T> k, Heads<const T> v,
                                int64_t B, int64_t H, int64_t Tq, int64_t Tk, int64_t D, bool causal, T scale);

// dq (B,H,Tq,D), dk, dv (B,H,Tk,D) <- dout, q, out (B,H,Tq,D), k, v (B,H,Tk,D), probs (B,H,Tq,Tk)
template <typename T>
void attention_standard_backward(Heads<T> dq, Heads<T> dk, Heads<T> dv, Heads<const T> dout, Heads<const T> q,
                                 Heads<const T> k, Heads<const T> v, Heads<const T> out, const T* probs, int64_t B,
                                 int64_t H, int64_t Tq, int64_t Tk, int64_t D, bool causal, T scale);

// out (B,H,Tq,D), lse (B,H,Tq) contiguous <- q (B,H,Tq,D), k (B,H,Tk,D), v (B,H,Tk,D)
template <typename T>
void attention_flash_forward(Heads<T> out, T* lse, Heads<const T> q, Heads<const T> k, Heads<const T> v, int64_t B,
                             int64_t H, int64_t Tq, int64_t Tk, int64_t D, bool causal, T scale, int64_t block_q,
                             int64_t block_k);

// dq (B,H,Tq,D), dk, dv (B,H,Tk,D) <- dout, q, out (B,H,Tq,D), k, v (B,H,Tk,D), lse (B,H,Tq)
template <typename T>
void attention_flash_backward(Heads<T> dq, Heads<T> dk, Heads<T> dv, Heads<const T> dout, Heads<const T> q,
                              Heads<const T> k, Heads<const T> v, Heads<const T> out, const T* lse, int64_t B,
                              int64_t H, int64_t Tq, int64_t Tk, int64_t D, bool causal, T scale, int64_t block_q,
                              int64_t block_k);

// The same on contiguous (B,H,T,D) arrays.
template <typename T>
void attention_standard_forward(T* out, T* probs, const T* q, const T* k, const T* v, int64_t B, int64_t H,
                                int64_t Tq, int64_t Tk, int64_t D, bool causal, T scale) {
    attention_standard_forward<T>(contiguous_heads(out, H, Tq, D), probs, contiguous_heads(q, H, Tq, D),
                                  contiguous_heads(k, H, Tk, D), contiguous_heads(v, H, Tk, D), B, H, Tq, Tk, D,
                                  causal, scale);
}

template <typename T>
void attention_standard_backward(T* dq, T* dk, T* dv, const T* dout, const T* q, const T* k, const T* v,
                                 const T* out, const T* probs, int64_t B, int64_t H, int64_t Tq, int64_t Tk,
                                 int64_t D, bool causal, T scale) {
    attention_standard_backward<T>(contiguous_heads(dq, H, Tq, D), contiguous_heads(dk, H, Tk, D),
                                   contiguous_heads(dv, H, Tk, D), contiguous_heads(dout, H, Tq, D),
                                   contiguous_heads(q, H, Tq, D), contiguous_heads(k, H, Tk, D),
                                   contiguous_heads(v, H, Tk, D), contiguous_heads(out, H, Tq, D), probs, B, H, Tq,
                                   Tk, D, causal, scale);
}

template <typename T>
void attention_flash_forward(T* out, T* lse, const T* q, const T* k, const T* v, int64_t B, int64_t H, int64_t Tq,
                             int64_t Tk, int64_t D, bool causal, T scale, int64_t block_q, int64_t block_k) {
    attention_flash_forward<T>(contiguous_heads(out, H, Tq, D), lse, contiguous_heads(q, H, Tq, D),
                               contiguous_heads(k, H, Tk, D), contiguous_heads(v, H, Tk, D), B, H, Tq, Tk, D, causal,
                               scale, block_q, block_k);
}

template <typename T>
void attention_flash_backward(T* dq, T* dk, T* dv, const T* dout, const T* q, const T* k, const T* v,
                              const T* out, const T* lse, int64_t B, int64_t H, int64_t Tq, int64_t Tk, int64_t D,
                              bool causal, T scale, int64_t block_q, int64_t block_k) {
    attention_flash_backward<T>(contiguous_heads(dq, H, Tq, D), contiguous_heads(dk, H, Tk, D),
                                contiguous_heads(dv, H, Tk, D), contiguous_heads(dout, H, Tq, D),
                                contiguous_heads(q, H, Tq, D), contiguous_heads(k, H, Tk, D),
                                contiguous_heads(v, H, Tk, D), contiguous_heads(out, H, Tq, D), lse, B, H, Tq, Tk, D,
                                causal, scale, block_q, block_k);
}

namespace attn_detail {

// What a causal mask lets a tile product skip. For the register-tile row group [m0, m0+mr)
// of C: columns at or past n_hi + m0 + mr, and columns before n_lo + m0, are not needed
// (they may be left unwritten), and the sum over p runs over [k_lo + m0, k_hi + m0 + mr)
// only (A is zero elsewhere in those rows). The defaults skip nothing.
struct TileBand {
    static constexpr int64_t kAll = int64_t(1) << 60;
    int64_t n_hi = kAll, k_lo = -kAll, k_hi = kAll, n_lo = -kAll;
};

// The tile micro-kernels the flash driver is built from, one table per ISA. Row lengths
// handed to `gemm` as N are multiples of `nr` (the driver pads D and the key blocks).
template <typename T>
struct TileKernels {
    int nr;  // the gemm's column granularity (a register tile's width or one vector)
    // C (M,N) = [C +] A (M,K) B (K,N); A's element (r,p) is A[r*sar + p*sap] (so A^T
    // is sar=1, sap=lda), B and C row-major with row strides ldb, ldc; `band` as above.
    void (*gemm)(T* C, int64_t ldc, const T* A, int64_t sar, int64_t sap, const T* B, int64_t ldb, int64_t M,
                 int64_t N, int64_t K, bool accumulate, TileBand band);
    // C (M,N) = A (M,K) B^T with B stored (N,K): C[r*ldc + j] = sum_p A[r*lda + p] B[j*ldb + p];
    // any N and K (the decode path's scores, K read in place)
    void (*gemm_nt)(T* C, int64_t ldc, const T* A, int64_t lda, const T* B, int64_t ldb, int64_t M, int64_t N,
                    int64_t K);
    // The element-wise passes work on whole tiles (mq rows of stride ld), one call per tile
    // rather than per row. Row r of a tile sees its first visible_keys(base, r, nk) keys
    // (base: TileBand's; kAll without a mask); the rest of the row, up to nkp, is set to 0.
    //
    // Forward online softmax: s holds scores in base-2 units; per row the running max m[r]
    // and sum l[r] take in the visible scores, s becomes exp2(s - m[r]), and the output row
    // o + r*ldo (no elements) is rescaled by exp2(m_old - m_new) when the max moved.
    void (*softmax_tile)(T* s, int64_t ld, int64_t mq, int64_t nk, int64_t nkp, int64_t base, T* m, T* l, T* o,
                         int64_t ldo, int64_t no);
    // The same online softmax on a transposed tile: st (nk, ld) holds S^T, keys down and
    // queries across, in base-2 units; key row j is visible to query column i when
    // i >= j - base. For each column i < nq the running max m[i] and sum l[i] take in its
    // visible scores, st becomes exp2(st - m[i]) there and exactly 0 where masked, and the
    // output row o + i*ldo (no elements) is multiplied by exp2(m_old - m_new). Columns from
    // nq up to the vector width's round-up may be touched; m and l must have room for them.
    void (*softmax_cols)(T* st, int64_t ld, int64_t nk, int64_t nq, int64_t base, T* m, T* l, T* o, int64_t ldo,
                         int64_t no);
    // The backward's P and dS of a tile, row by row: p = exp2(p * c - sub[r]) from the scores,
    // then ds = p * (ds - d[r]) * scale from dP, on the visible keys
    void (*pds_tile)(T* p, T* ds, int64_t ld, int64_t mq, int64_t nk, int64_t nkp, int64_t base, T c, const T* sub,
                     const T* d, T scale);
    // Transposing pack of n rows of d elements (stride lds) into d rows of n (stride ldd),
    // times c, zero padded to dp rows of np: dst[p*ldd + i] = c * src[i*lds + p] for i < n,
    // p < d; 0 for n <= i < np or d <= p < dp. np and dp are multiples of nr.
    void (*pack_t)(T* dst, int64_t ldd, const T* src, int64_t lds, int64_t n, int64_t np, int64_t d, int64_t dp,
                   T c);
    // The forward's last step for mq query rows: out row r (stride ldo, d elements) = o row r
    // (stride ldacc) times 1/l[r], and lse[r] = (m[r] + log2(l[r])) * ln(2), from the running
    // max m (base 2) and sum l > 0
    void (*finish)(T* out, int64_t ldo, T* lse, const T* o, int64_t ldacc, const T* m, const T* l, int64_t mq,
                   int64_t d);
    // Row dot products, the backward's Drow = rowsum(dO * O): dst[i] = sum over p < d of
    // x[i*ldx + p] * y[i*ldy + p] for i < n, in an order fixed by d alone
    void (*rowdot)(T* dst, const T* x, int64_t ldx, const T* y, int64_t ldy, int64_t n, int64_t d);
};

// Keys row r of a tile sees: base + r + 1, clamped to [0, nk] (kAll + r + 1 cannot overflow).
inline int64_t visible_keys(int64_t base, int64_t r, int64_t nk) {
    const int64_t n = base + r + 1;
    return n < 0 ? 0 : n > nk ? nk : n;
}

// Tile passes written once over an ISA's row kernels, so the row kernels inline into one
// loop over the tile: softmax_tile_rows for every ISA, pds_tile_rows for generic (the SIMD
// files fuse P and dS into one pass, pds_tile in attention_cols.h). R provides
//   T row_max(const T* x, int64_t n): max over i < n of x[i] (n >= 1);
//   T exp2_row(T* x, int64_t n, int64_t npad, T c, T sub): x[i] = exp2(x[i] * c - sub) for
//     i < n, 0 for n <= i < npad (a multiple of the tile width); returns the sum;
//   void ds_row(T* dp, const T* p, int64_t n, int64_t npad, T d, T scale) (pds_tile_rows):
//     dp[i] = p[i] * (dp[i] - d) * scale for i < n, 0 for n <= i < npad;
//   void scale_row(T* x, int64_t n, T a): x[i] *= a for i < n.
template <typename R, typename T>
void softmax_tile_rows(T* s, int64_t ld, int64_t mq, int64_t nk, int64_t nkp, int64_t base, T* m, T* l, T* o,
                       int64_t ldo, int64_t no) {
    for (int64_t r = 0; r < mq; r++) {
        T* row = s + r * ld;
        const int64_t n = visible_keys(base, r, nk);
        if (n == 0) {
            for (int64_t i = 0; i < nkp; i++) row[i] = T(0);
            continue;
        }
        const T rmax = R::row_max(row, n);
        const T mnew = m[r] > rmax ? m[r] : rmax;
        const T sum = R::exp2_row(row, n, nkp, T(1), mnew);
        if (mnew != m[r] && l[r] != T(0)) {  // the max moved: rescale what came before
            const T alpha = std::exp2(m[r] - mnew);
            l[r] *= alpha;
            R::scale_row(o + r * ldo, no, alpha);
        }
        l[r] += sum;
        m[r] = mnew;
    }
}

template <typename R, typename T>
void pds_tile_rows(T* p, T* ds, int64_t ld, int64_t mq, int64_t nk, int64_t nkp, int64_t base, T c, const T* sub,
                   const T* d, T scale) {
    for (int64_t r = 0; r < mq; r++) {
        const int64_t n = visible_keys(base, r, nk);
        R::exp2_row(p + r * ld, n, nkp, c, sub[r]);
        R::ds_row(ds + r * ld, p + r * ld, n, nkp, d[r], scale);
    }
}

// TileKernels::pack_t in plain loops (generic and AVX2): source rows outer, so the loads
// run along rows; the scattered stores stay within the (dp, np) block, a few KiB.
template <typename T>
void pack_t_rows(T* dst, int64_t ldd, const T* src, int64_t lds, int64_t n, int64_t np, int64_t d, int64_t dp, T c) {
    for (int64_t i = 0; i < n; i++)
        for (int64_t p = 0; p < d; p++) dst[p * ldd + i] = src[i * lds + p] * c;
    for (int64_t p = 0; p < dp; p++)
        for (int64_t i = p < d ? n : 0; i < np; i++) dst[p * ldd + i] = T(0);
}

// TileKernels::finish in plain loops (generic; libm's log2).
template <typename T>
void finish_rows(T* out, int64_t ldo, T* lse, const T* o, int64_t ldacc, const T* m, const T* l, int64_t mq,
                 int64_t d) {
    for (int64_t r = 0; r < mq; r++) {
        const T inv = T(1) / l[r];
        for (int64_t i = 0; i < d; i++) out[r * ldo + i] = o[r * ldacc + i] * inv;
        lse[r] = (m[r] + std::log2(l[r])) * T(0.6931471805599453);
    }
}

// TileKernels::rowdot in plain loops (generic): four interleaved sums a row (element p into
// sum p % 4), one short vector for the compiler instead of a chain of d dependent adds.
template <typename T>
void rowdot_rows(T* dst, const T* x, int64_t ldx, const T* y, int64_t ldy, int64_t n, int64_t d) {
    for (int64_t i = 0; i < n; i++) {
        const T* a = x + i * ldx;
        const T* b = y + i * ldy;
        T s[4] = {0, 0, 0, 0};
        int64_t p = 0;
        for (; p + 4 <= d; p += 4)
            for (int j = 0; j < 4; j++) s[j] += a[p + j] * b[p + j];
        for (; p < d; p++) s[p % 4] += a[p] * b[p];
        dst[i] = (s[0] + s[1]) + (s[2] + s[3]);
    }
}

template <typename T>
const TileKernels<T>& tile_kernels_generic();
const TileKernels<float>& tile_kernels_avx2();    // attention_avx2.cpp
const TileKernels<float>& tile_kernels_avx512();  // attention_avx512.cpp

}  // namespace attn_detail

}  // namespace femtogpt::cpu
