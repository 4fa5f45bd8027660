// Dropout without a stored mask.
//
// Element i of a tensor is kept iff dropout_keep(seed, i, threshold) holds, a
// pure function of (seed, i): a splitmix64 hash of the counter i in the stream
// `seed`, its top 53 bits compared against p * 2^53. So the mask does not depend
// on the thread count or on blocking, backward regenerates it exactly from the
// seed, and so can a recomputation for gradient checkpointing. Kept elements
// are scaled by 1/(1-p). Sizes: n elements (any shape, flattened).
#pragma once

#include <cstdint>

namespace femtogpt::cpu {

// The splitmix64 output for counter i of the stream `seed` (Steele, Lea, Flood 2014).
inline uint64_t dropout_hash(uint64_t seed, uint64_t i) {
    uint64_t z = seed + (i + 1) * 0x9E3779B97F4A7C15ull;
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

// p in [0, 1) -> the keep threshold on 53-bit uniform integers: keep iff (hash >> 11) >= threshold.
inline uint64_t dropout_threshold(double p) { return uint64_t(p * 9007199254740992.0); }  // p * 2^53

// out (n) <- x (n): out[i] = keep(i) ? x[i] / (1 - p) : 0. Backward is the same call on dout.
template <typename T>
void dropout_forward(T* out, const T* x, int64_t n, double p, uint64_t seed);
template <typename T>
void dropout_forward_reference(T* out, const T* x, int64_t n, double p, uint64_t seed);

// AVX2 float32 kernel (dropout_avx2.cpp): the same mask, bit for bit.
void dropout_forward_avx2(float* out, const float* x, int64_t n, double p, uint64_t seed);

}  // namespace femtogpt::cpu
