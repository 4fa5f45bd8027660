// Private to the float32 matmul: the micro-kernel table of each ISA and the
// packing routines they share.
//
// Goto/BLIS scheme (see matmul.cpp for the loops around it). op(A) is cut into
// blocks of mc x kc, packed as ceil(mc/MR) panels of (kc, MR): element (i, p) of
// a panel at [p*MR + i]. op(B) is cut into blocks of kc x nc, packed as
// ceil(nc/NR) panels of (kc, NR): element (p, j) at [p*NR + j]. Short last
// panels are padded with zeros, so the micro-kernel always computes a full
// MR x NR tile; the driver routes edge tiles through a scratch tile.
//
// Each *_avx2.cpp / *_avx512.cpp file is compiled with its own ISA flags. The
// templates below live in an anonymous namespace so that every file gets its
// own copy, compiled for its own ISA: an AVX2 instantiation must never be
// picked by the linker for the generic path.
#pragma once

#include <cstdint>

namespace femtogpt::cpu::gemm_detail {

// C (MR,NR) [row stride ldc] = alpha * Ap (kc,MR)^T @ Bp (kc,NR) + beta * C
// beta == 0: C is written without being read.
using MicroKernel = void (*)(int64_t kc, const float* Ap, const float* Bp, float* C, int64_t ldc, float alpha,
                             float beta);

// Packs rows [0,m) x columns [0,k) of op(A) into panels of (k, MR), zero padded.
// op(A)(i, p) = trans ? A[p*lda + i] : A[i*lda + p].
using PackA = void (*)(float* dst, const float* A, int64_t lda, bool trans, int64_t m, int64_t k);
// Packs rows [0,k) x columns [0,n) of op(B) into panels of (k, NR), zero padded.
// op(B)(p, j) = trans ? B[j*ldb + p] : B[p*ldb + j].
using PackB = void (*)(float* dst, const float* B, int64_t ldb, bool trans, int64_t k, int64_t n);

struct KernelF32 {
    const char* name;
    int mr, nr;      // register tile
    int mc, kc, nc;  // cache blocking: A block (mc,kc) in L2, B panel (kc,NR) in L1, B block (kc,nc) in L3
    MicroKernel kernel;
    PackA pack_a;
    PackB pack_b;
};

// nullptr when the file was compiled without that ISA (e.g. non-x86 builds).
const KernelF32* kernel_f32_generic();
const KernelF32* kernel_f32_avx2();
const KernelF32* kernel_f32_avx512();

// Blocking override for the dev harness (0 = the kernel's default).
struct Blocking {
    int mc = 0, kc = 0, nc = 0;
};
void set_blocking_override(Blocking b);

namespace {

// Plain packing loops; each ISA file instantiates them with its own flags and
// may override the hot cases with intrinsics.
template <int MR>
inline void pack_a_plain(float* dst, const float* A, int64_t lda, bool trans, int64_t m, int64_t k) {
    for (int64_t i0 = 0; i0 < m; i0 += MR, dst += MR * k) {
        const int64_t mr = m - i0 < MR ? m - i0 : MR;
        if (trans) {
            for (int64_t p = 0; p < k; p++) {
                const float* src = A + p * lda + i0;
                float* d = dst + p * MR;
                int64_t i = 0;
                for (; i < mr; i++) d[i] = src[i];
                for (; i < MR; i++) d[i] = 0.0f;
            }
        } else {
            int64_t i = 0;
            for (; i < mr; i++) {
                const float* src = A + (i0 + i) * lda;
                for (int64_t p = 0; p < k; p++) dst[p * MR + i] = src[p];
            }
            for (; i < MR; i++)
                for (int64_t p = 0; p < k; p++) dst[p * MR + i] = 0.0f;
        }
    }
}

template <int NR>
inline void pack_b_plain(float* dst, const float* B, int64_t ldb, bool trans, int64_t k, int64_t n) {
    for (int64_t j0 = 0; j0 < n; j0 += NR, dst += NR * k) {
        const int64_t nr = n - j0 < NR ? n - j0 : NR;
        if (!trans) {
            if (nr == NR) {
                for (int64_t p = 0; p < k; p++) {
                    const float* src = B + p * ldb + j0;
                    float* d = dst + p * NR;
                    for (int j = 0; j < NR; j++) d[j] = src[j];
                }
            } else {
                for (int64_t p = 0; p < k; p++) {
                    const float* src = B + p * ldb + j0;
                    float* d = dst + p * NR;
                    int64_t j = 0;
                    for (; j < nr; j++) d[j] = src[j];
                    for (; j < NR; j++) d[j] = 0.0f;
                }
            }
        } else {
            int64_t j = 0;
            for (; j < nr; j++) {
                const float* src = B + (j0 + j) * ldb;
                for (int64_t p = 0; p < k; p++) dst[p * NR + j] = src[p];
            }
            for (; j < NR; j++)
                for (int64_t p = 0; p < k; p++) dst[p * NR + j] = 0.0f;
        }
    }
}

}  // namespace

}  // namespace femtogpt::cpu::gemm_detail
