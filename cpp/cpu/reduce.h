// Reductions: full sums, sums of squares, and sums over leading dimensions.
//
// All of them are deterministic: the work is cut into pieces by a rule that
// depends only on the sizes (see chunking.h), each piece is summed in a fixed
// order, and the pieces are combined in a fixed order, so 1 and 16 threads give
// the same bits. float32 inputs are accumulated in double, by the active ISA's
// kernels (reduce_avx2.cpp / reduce_avx512.cpp) or portable loops; the ISAs
// differ from each other in the last bits (lane order, FMA).
#pragma once

#include <cstdint>

namespace femtogpt::cpu {

// sum of x (n), in double.
template <typename T>
double sum_all(const T* x, int64_t n);
template <typename T>
double sum_all_reference(const T* x, int64_t n);

// sum of x (n) squared, in double.
template <typename T>
double sum_squares(const T* x, int64_t n);
template <typename T>
double sum_squares_reference(const T* x, int64_t n);

// A float32 or float64 array, for the many-tensor kernels.
struct FloatSpan {
    void* data;
    int64_t n;
    bool f64;
};

// Sum of squares over every element of every span, in double: one parallel loop
// over (span, chunk) pieces, partials added in span then chunk order.
double sum_squares_many(const FloatSpan* spans, int64_t count);

// out (K) <- sum over m of x (M,K): the gradient of broadcasting a (K) tensor over M rows.
template <typename T>
void sum_rows(T* out, const T* x, int64_t M, int64_t K);
template <typename T>
void sum_rows_reference(T* out, const T* x, int64_t M, int64_t K);

}  // namespace femtogpt::cpu
