// Elementwise kernels: add, mul, scale, in-place axpy, fill, copy.
//
// Sizes: n elements in the output (and in `a`); nb elements in `b`, where n is a
// multiple of nb and b repeats every nb elements. That one rule covers the three
// broadcasts the tensor ops accept: b of a's shape (nb == n), b a suffix of a's
// shape (bias (C) onto (N,C): nb == C), and b a single element (nb == 1).
//
// Every kernel is memory-bound: the fast versions split the flat range into
// fixed chunks run in parallel with OpenMP and leave the inner loops to the
// compiler's vectorizer. Each output element depends only on its inputs, so the
// results are identical for any number of threads. The *_reference twins are the
// obvious serial loops.
#pragma once

#include <cstddef>
#include <cstdint>

namespace femtogpt::cpu {

// out (n) <- a (n) + alpha * b (nb), b repeating every nb elements; out may be a (in place).
template <typename T>
void add(T* out, const T* a, const T* b, int64_t n, int64_t nb, T alpha);
template <typename T>
void add_reference(T* out, const T* a, const T* b, int64_t n, int64_t nb, T alpha);

// out (n) <- a (n) * b (nb), b repeating every nb elements.
template <typename T>
void mul(T* out, const T* a, const T* b, int64_t n, int64_t nb);
template <typename T>
void mul_reference(T* out, const T* a, const T* b, int64_t n, int64_t nb);

// out (n) <- a (n) * s
template <typename T>
void scale(T* out, const T* a, T s, int64_t n);

// dst (n) += alpha * src (n)
template <typename T>
void axpy(T* dst, const T* src, T alpha, int64_t n);

// Every element of every span *= s (spans: float32 or float64 arrays), in one
// parallel loop over (span, chunk) pieces.
struct FloatSpan;
void scale_many(const FloatSpan* spans, int64_t count, double s);

// dst (n) <- value
template <typename T>
void fill(T* dst, T value, int64_t n);

// dst <- src, nbytes bytes (non-overlapping), in parallel for large copies.
void copy_bytes(void* dst, const void* src, size_t nbytes);

}  // namespace femtogpt::cpu
