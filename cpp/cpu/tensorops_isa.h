// The float32 kernels of optim.cpp and reduce.cpp written with AVX2+FMA
// (optim_avx2.cpp, reduce_avx2.cpp) and AVX-512 (optim_avx512.cpp,
// reduce_avx512.cpp). The two families are line-for-line the same algorithm at
// 8 and 16 lanes; tails use masked loads and stores (or, for a row's last few
// columns, the same scalar step). Callers pick one with active_isa().
#pragma once

#include <cstdint>

namespace femtogpt::cpu {

// The AdamW scalars of one tensor, in float (see optim.h for the formula).
struct AdamWConstsF32 {
    float beta1, beta2, one_minus_beta1, one_minus_beta2, step_size, inv_bc2_sqrt, eps, decay;
};

void adamw_f32_avx2(float* p, const float* g, float* m, float* v, int64_t n, const AdamWConstsF32& c);
void adamw_f32_avx512(float* p, const float* g, float* m, float* v, int64_t n, const AdamWConstsF32& c);

// sum (Square: sum of squares) of x (n), accumulated in double in a fixed lane order.
double sum_f32_avx2(const float* x, int64_t n, bool square);
double sum_f32_avx512(const float* x, int64_t n, bool square);

// acc (K) += x (rows,K) summed over rows, in double, rows in order.
void accumulate_rows_f32_avx2(double* acc, const float* x, int64_t rows, int64_t K);
void accumulate_rows_f32_avx512(double* acc, const float* x, int64_t rows, int64_t K);

}  // namespace femtogpt::cpu
