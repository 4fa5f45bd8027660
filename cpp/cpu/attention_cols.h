// The ISA-independent part of the SIMD attention tile kernels, written once for
// attention_avx2.cpp and attention_avx512.cpp, which include it inside their anonymous
// namespace after their vector wrappers (vec, kW, vload, vstore, vload_tail, vstore_tail,
// vstore_zeros, vkeep_tail, vset1, vmax, vsub, vadd, vmul, vdiv, vfmadd, hsum, hmax, exp2v,
// vsplit_exponent, vkeep_from, vany_ne): gemm_nt, the row kernels (row_max, exp2_row, scale_row), the backward's
// P and dS tile (pds_tile), the forward's online softmax on a transposed score tile (see
// TileKernels::softmax_cols in cpu/attention.h), its finish, rowdot, and the Rows adapter.
//
// In softmax_cols, queries run across a row, so a column's max and sum are lane-wise maxima and sums down
// the rows: no horizontal reduction, no branch on whether a row's max moved (alpha is 1
// where it did not, and a block of rows whose alphas are all 1 skips the rescale).
// Not a standalone header.

// log2 of positive normal x: x = 2^e m with m in [sqrt(1/2), sqrt(2)) (vsplit_exponent),
// log2(m) = 2/ln(2) atanh(s) with s = (m-1)/(m+1), |s| <= 0.172, by its series to s^9
// (truncation 2e-9 relative). Within 6e-7 of log2 on [1, 4096).
inline vec log2v(vec x) {
    vec m;
    const vec e = vsplit_exponent(x, &m);
    const vec t = vsub(m, vset1(1.0f));
    const vec s = vdiv(t, vadd(t, vset1(2.0f)));
    const vec z = vmul(s, s);
    vec p = vset1(1.0f / 9);
    p = vfmadd(p, z, vset1(1.0f / 7));
    p = vfmadd(p, z, vset1(1.0f / 5));
    p = vfmadd(p, z, vset1(1.0f / 3));
    p = vfmadd(p, z, vset1(1.0f));
    return vadd(e, vmul(vmul(s, vset1(2.8853900817779268f)), p));  // 2/ln(2)
}

// C (M,N) = A (M,K) B^T, B stored (N,K): four dot products at a time, each over vectors of K.
void gemm_nt(float* C, int64_t ldc, const float* A, int64_t lda, const float* B, int64_t ldb, int64_t M, int64_t N,
             int64_t K) {
    const int64_t kv = K / kW * kW;
    for (int64_t r = 0; r < M; r++) {
        const float* a = A + r * lda;
        int64_t j = 0;
        for (; j + 4 <= N; j += 4) {
            const float *b0 = B + j * ldb, *b1 = b0 + ldb, *b2 = b1 + ldb, *b3 = b2 + ldb;
            vec s0 = vset1(0.0f), s1 = vset1(0.0f), s2 = vset1(0.0f), s3 = vset1(0.0f);
            for (int64_t p = 0; p < kv; p += kW) {
                const vec va = vload(a + p);
                s0 = vfmadd(va, vload(b0 + p), s0);
                s1 = vfmadd(va, vload(b1 + p), s1);
                s2 = vfmadd(va, vload(b2 + p), s2);
                s3 = vfmadd(va, vload(b3 + p), s3);
            }
            if (kv < K) {
                const vec va = vload_tail(a + kv, K - kv);
                s0 = vfmadd(va, vload_tail(b0 + kv, K - kv), s0);
                s1 = vfmadd(va, vload_tail(b1 + kv, K - kv), s1);
                s2 = vfmadd(va, vload_tail(b2 + kv, K - kv), s2);
                s3 = vfmadd(va, vload_tail(b3 + kv, K - kv), s3);
            }
            C[r * ldc + j] = hsum(s0);
            C[r * ldc + j + 1] = hsum(s1);
            C[r * ldc + j + 2] = hsum(s2);
            C[r * ldc + j + 3] = hsum(s3);
        }
        for (; j < N; j++) {
            const float* b0 = B + j * ldb;
            vec s0 = vset1(0.0f);
            for (int64_t p = 0; p < kv; p += kW) s0 = vfmadd(vload(a + p), vload(b0 + p), s0);
            if (kv < K) s0 = vfmadd(vload_tail(a + kv, K - kv), vload_tail(b0 + kv, K - kv), s0);
            C[r * ldc + j] = hsum(s0);
        }
    }
}

inline float row_max(const float* x, int64_t n) {
    const vec ninf = vset1(-__builtin_inff());
    vec m = ninf;
    int64_t i = 0;
    for (; i + kW <= n; i += kW) m = vmax(m, vload(x + i));
    if (i < n) m = vmax(m, vkeep_tail(vload_tail(x + i, n - i), n - i, ninf));
    return hmax(m);
}

inline float exp2_row(float* x, int64_t n, int64_t npad, float c, float sub) {
    const vec vc = vset1(c), vnegsub = vset1(-sub), zero = vset1(0.0f);
    vec sum = zero;
    int64_t i = 0;
    for (; i + kW <= n; i += kW) {
        const vec e = exp2v(vfmadd(vload(x + i), vc, vnegsub));
        vstore(x + i, e);
        sum = vadd(sum, e);
    }
    if (i < n) {  // npad is a multiple of the tile width, so this whole vector is in the row
        const vec e = vkeep_tail(exp2v(vfmadd(vload_tail(x + i, n - i), vc, vnegsub)), n - i, zero);
        vstore(x + i, e);
        sum = vadd(sum, e);
        i += kW;
    }
    for (; i < npad; i += kW) vstore_zeros(x + i);
    return hsum(sum);
}

// TileKernels::pds_tile in one pass over each row: P = exp2(S c - sub[r]) and
// dS = P (dP - d[r]) scale a vector at a time, while both are in registers. nkp is a
// multiple of the vector width, so the vector holding a row's last visible key lies
// within the row; its lanes past it (S and dP there may be unset) become 0.
void pds_tile(float* p, float* ds, int64_t ld, int64_t mq, int64_t nk, int64_t nkp, int64_t base, float c,
              const float* sub, const float* d, float scale) {
    const vec vc = vset1(c), vs = vset1(scale), zero = vset1(0.0f);
    for (int64_t r = 0; r < mq; r++) {
        float* pr = p + r * ld;
        float* dr = ds + r * ld;
        const int64_t n = visible_keys(base, r, nk);
        const vec vnegsub = vset1(-sub[r]), vd = vset1(d[r]);
        int64_t i = 0;
        for (; i < n; i += kW) {
            vec e = exp2v(vfmadd(vload(pr + i), vc, vnegsub));
            vec g = vmul(vmul(e, vsub(vload(dr + i), vd)), vs);
            if (n - i < kW) e = vkeep_tail(e, n - i, zero), g = vkeep_tail(g, n - i, zero);
            vstore(pr + i, e);
            vstore(dr + i, g);
        }
        for (; i < nkp; i += kW) vstore_zeros(pr + i), vstore_zeros(dr + i);
    }
}

inline void scale_row(float* x, int64_t n, float a) {
    const vec va = vset1(a);
    int64_t i = 0;
    for (; i + kW <= n; i += kW) vstore(x + i, vmul(vload(x + i), va));
    if (i < n) vstore_tail(x + i, vmul(vload_tail(x + i, n - i), va), n - i);
}

// Column vector [ci, ci + kW): key row j is visible to lane q when ci + q >= j - base, so
// rows below full_end are visible to every lane and rows from part_end on to none.
void softmax_cols(float* st, int64_t ld, int64_t nk, int64_t nq, int64_t base, float* m, float* l, float* o,
                  int64_t ldo, int64_t no) {
    const vec ninf = vset1(-__builtin_inff()), zero = vset1(0.0f);
    alignas(64) float alpha_lanes[kW], lold_lanes[kW];
    for (int64_t ci = 0; ci < nq; ci += kW) {
        const int64_t full_end = visible_keys(base, ci, nk), part_end = visible_keys(base, ci + kW - 1, nk);
        float* col = st + ci;
        // column max: four chains (max is exact in any order)
        vec m0 = ninf, m1 = ninf, m2 = ninf, m3 = ninf;
        int64_t j = 0;
        for (; j + 4 <= full_end; j += 4) {
            m0 = vmax(m0, vload(col + j * ld));
            m1 = vmax(m1, vload(col + (j + 1) * ld));
            m2 = vmax(m2, vload(col + (j + 2) * ld));
            m3 = vmax(m3, vload(col + (j + 3) * ld));
        }
        for (; j < full_end; j++) m0 = vmax(m0, vload(col + j * ld));
        for (; j < part_end; j++) m0 = vmax(m0, vkeep_from(vload(col + j * ld), j - base - ci, ninf));
        const vec mold = vload(m + ci);
        const vec mnew = vmax(mold, vmax(vmax(m0, m1), vmax(m2, m3)));
        const vec alpha = exp2v(vsub(mold, mnew));  // 0 while mold is -inf; exactly 1 where the max held
        vstore(m + ci, mnew);
        // probabilities and their column sums
        vec s0 = zero, s1 = zero;
        for (j = 0; j + 2 <= full_end; j += 2) {
            const vec e0 = exp2v(vsub(vload(col + j * ld), mnew));
            const vec e1 = exp2v(vsub(vload(col + (j + 1) * ld), mnew));
            vstore(col + j * ld, e0);
            vstore(col + (j + 1) * ld, e1);
            s0 = vadd(s0, e0);
            s1 = vadd(s1, e1);
        }
        for (; j < full_end; j++) {
            const vec e = exp2v(vsub(vload(col + j * ld), mnew));
            vstore(col + j * ld, e);
            s0 = vadd(s0, e);
        }
        for (; j < part_end; j++) {
            const vec e = vkeep_from(exp2v(vsub(vload(col + j * ld), mnew)), j - base - ci, zero);
            vstore(col + j * ld, e);
            s0 = vadd(s0, e);
        }
        for (; j < nk; j++) vstore(col + j * ld, zero);
        const vec lold = vload(l + ci);
        vstore(l + ci, vfmadd(lold, alpha, vadd(s0, s1)));
        // a query whose sum was 0 has seen no key yet: its output row is still 0 (the
        // first key block of every query, all of them when there is one block)
        if (vany_ne(alpha, 1.0f) && vany_ne(lold, 0.0f)) {
            vstore(alpha_lanes, alpha);
            vstore(lold_lanes, lold);
            const int64_t lanes = nq - ci < kW ? nq - ci : kW;
            for (int64_t q = 0; q < lanes; q++)
                if (alpha_lanes[q] != 1.0f && lold_lanes[q] != 0.0f)
                    scale_row(o + (ci + q) * ldo, no, alpha_lanes[q]);
        }
    }
}

// TileKernels::finish a vector of rows at a time: 1/l by a true division (as the scalar
// loop's), log2 by log2v (libm's log2 per row cost more than the rest of a D = 16 head's
// finish); lanes past mq compute on l = 1 and are not stored.
void finish(float* out, int64_t ldo, float* lse, const float* o, int64_t ldacc, const float* m, const float* l,
            int64_t mq, int64_t d) {
    const vec one = vset1(1.0f);
    alignas(64) float inv[kW];
    for (int64_t r0 = 0; r0 < mq; r0 += kW) {
        const int64_t n = mq - r0 < kW ? mq - r0 : kW;
        const vec vl = n == kW ? vload(l + r0) : vkeep_tail(vload_tail(l + r0, n), n, one);
        const vec vm = n == kW ? vload(m + r0) : vload_tail(m + r0, n);
        vstore(inv, vdiv(one, vl));
        const vec vlse = vmul(vadd(vm, log2v(vl)), vset1(0.6931471805599453f));
        if (n == kW) vstore(lse + r0, vlse); else vstore_tail(lse + r0, vlse, n);
        for (int64_t r = 0; r < n; r++) {
            const float* src = o + (r0 + r) * ldacc;
            float* dst = out + (r0 + r) * ldo;
            const vec a = vset1(inv[r]);
            int64_t i = 0;
            for (; i + kW <= d; i += kW) vstore(dst + i, vmul(vload(src + i), a));
            if (i < d) vstore_tail(dst + i, vmul(vload_tail(src + i, d - i), a), d - i);
        }
    }
}

// TileKernels::rowdot: a vector of products a row (two chains past two vectors), summed
// across lanes at the end.
void rowdot(float* dst, const float* x, int64_t ldx, const float* y, int64_t ldy, int64_t n, int64_t d) {
    const int64_t dv = d / kW * kW;
    for (int64_t i = 0; i < n; i++) {
        const float* a = x + i * ldx;
        const float* b = y + i * ldy;
        vec s0 = vset1(0.0f), s1 = vset1(0.0f);
        int64_t p = 0;
        for (; p + 2 * kW <= dv; p += 2 * kW) {
            s0 = vfmadd(vload(a + p), vload(b + p), s0);
            s1 = vfmadd(vload(a + p + kW), vload(b + p + kW), s1);
        }
        if (p < dv) s0 = vfmadd(vload(a + p), vload(b + p), s0);
        if (dv < d) s1 = vfmadd(vload_tail(a + dv, d - dv), vload_tail(b + dv, d - dv), s1);
        dst[i] = hsum(vadd(s0, s1));
    }
}

// This file's row kernels, as the struct the shared tile templates of cpu/attention.h take.
struct Rows {
    static float row_max(const float* x, int64_t n) { return femtogpt::cpu::attn_detail::row_max(x, n); }
    static float exp2_row(float* x, int64_t n, int64_t npad, float c, float sub) {
        return femtogpt::cpu::attn_detail::exp2_row(x, n, npad, c, sub);
    }
    static void scale_row(float* x, int64_t n, float a) { femtogpt::cpu::attn_detail::scale_row(x, n, a); }
};
