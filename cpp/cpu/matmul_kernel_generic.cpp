// Portable float32 micro-kernel: plain C++ the compiler vectorizes for the
// baseline target. 4x8 keeps 8 accumulators in registers with SSE2's 16 xmm
// registers; one struct per row steers GCC's vectorizer along the rows (with a
// plain 2-D array it vectorized down the columns, through shuffles and spills).
#include "cpu/matmul_kernels.h"

namespace femtogpt::cpu::gemm_detail {

namespace {

constexpr int MR = 4, NR = 8;

struct Row {
    float v[NR];
};

// C (MR,NR) = alpha * Ap (kc,MR)^T @ Bp (kc,NR) + beta * C (+ bias (NR))
void kernel_4x8(int64_t kc, const float* Ap, const float* Bp, float* C, int64_t ldc, float alpha, float beta,
                const float* bias) {
    Row acc[MR] = {};
    for (int64_t p = 0; p < kc; p++) {
        const float* a = Ap + p * MR;
        const float* b = Bp + p * NR;
#pragma GCC unroll 8
        for (int i = 0; i < MR; i++) {
            const float ai = a[i];
#pragma GCC unroll 8
            for (int j = 0; j < NR; j++) acc[i].v[j] += ai * b[j];
        }
    }
    for (int i = 0; i < MR; i++) {
        float* c = C + i * ldc;
        if (beta == 0.0f) {
            for (int j = 0; j < NR; j++) c[j] = alpha * acc[i].v[j];
        } else {
            for (int j = 0; j < NR; j++) c[j] = alpha * acc[i].v[j] + beta * c[j];
        }
        if (bias)
            for (int j = 0; j < NR; j++) c[j] += bias[j];
    }
}

const KernelF32 kGeneric = {"generic", MR, NR, 120, 256, 2048, kernel_4x8, nullptr, pack_plain<MR>, pack_plain<NR>};

}  // namespace

const KernelF32* kernel_f32_generic() { return &kGeneric; }

}  // namespace femtogpt::cpu::gemm_detail
