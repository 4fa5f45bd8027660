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

// C (MR,NR) [row stride ldc] = alpha * Ap (kc,MR)^T @ Bp (kc,NR) + beta * C, then + bias (NR)
// on every row unless bias is null (a second rounding, as a separate pass would make it).
// beta == 0: C is written without being read.
using MicroKernel = void (*)(int64_t kc, const float* Ap, const float* Bp, float* C, int64_t ldc, float alpha,
                             float beta, const float* bias);

// The same, reading op(A) in place: element (i, p) at A[i*rs + p*cs]. Saves packing
// A where each A panel meets few B panels (small N).
using MicroKernelStrided = void (*)(int64_t kc, const float* A, int64_t rs, int64_t cs, const float* Bp, float* C,
                                    int64_t ldc, float alpha, float beta, const float* bias);

// Packs `lanes` rows of op(A) (or columns of op(B)) over k steps into panels of
// (k, R): dst[panel*R*k + p*R + r]; a short last panel is padded with zeros.
// along_k: lane r's k values are contiguous, at src[r*ld + p] (A as stored, B
// transposed); otherwise a k step's lanes are, at src[p*ld + r] (A transposed, B
// as stored). op(A)'s rows are lanes with R = MR, op(B)'s columns with R = NR.
using Pack = void (*)(float* dst, const float* src, int64_t ld, bool along_k, int64_t lanes, int64_t k);

struct KernelF32 {
    const char* name;
    int mr, nr;      // register tile
    int mc, kc, nc;  // cache blocking: A block (mc,kc) in L2, B panel (kc,NR) in L1, B block (kc,nc) in L3
    MicroKernel kernel;
    MicroKernelStrided kernel_strided;  // nullptr: always pack A
    Pack pack_a;  // R = mr
    Pack pack_b;  // R = nr
};

// nullptr when the file was compiled without that ISA (e.g. non-x86 builds).
const KernelF32* kernel_f32_generic();
const KernelF32* kernel_f32_avx2();
const KernelF32* kernel_f32_avx512();

// Blocking override for the dev harness (0 = the kernel's default).
struct Blocking {
    int mc = 0, kc = 0, nc = 0;
    int direct_a = -1;  // read A in place: -1 the driver's choice, 0 never, 1 whenever possible
};
void set_blocking_override(Blocking b);

namespace {

// Plain packing loops; each ISA file instantiates them with its own flags (and
// may take over the hot cases with intrinsics). A full panel has a fixed width,
// which the compiler turns into a few vector moves per k step.
template <int R>
inline void pack_plain(float* dst, const float* src, int64_t ld, bool along_k, int64_t lanes, int64_t k) {
    const int64_t full = lanes / R, rest = lanes - full * R;
    if (along_k) {
        for (int64_t q = 0; q < full; q++, dst += R * k) {
            const float* s = src + q * R * ld;
            for (int r = 0; r < R; r++)
                for (int64_t p = 0; p < k; p++) dst[p * R + r] = s[r * ld + p];
        }
    } else {
        // k step outside: each source row is read once, front to back (a transposed A
        // with a long row stride would otherwise touch a new page every k step).
        for (int64_t p = 0; p < k; p++) {
            const float* s = src + p * ld;
            float* d = dst + p * R;
            for (int64_t q = 0; q < full; q++)
                for (int r = 0; r < R; r++) d[q * R * k + r] = s[q * R + r];
        }
        dst += full * R * k;
    }
    if (rest > 0) {  // short last panel, zero padded
        const float* s = along_k ? src + full * R * ld : src + full * R;
        for (int64_t p = 0; p < k; p++)
            for (int r = 0; r < R; r++)
                dst[p * R + r] = r < rest ? (along_k ? s[r * ld + p] : s[p * ld + r]) : 0.0f;
    }
}

}  // namespace

}  // namespace femtogpt::cpu::gemm_detail
