// Choosing the next token from logits: argmax, and temperature / top-k / top-p
// sampling with a counter-based random generator.
//
// sample_tokens, for each row b of logits (B,V), independently:
//   1. temperature == 0: the token is argmax(logits[b]) (lowest index among ties).
//   2. otherwise z_i = logits[b,i] / temperature (in double; NaN counts as -inf,
//      +inf as the largest finite double).
//   3. top_k > 0 and top_k < V: keep exactly the top_k tokens that come first in
//      the order (z descending, index ascending), ties broken by lower index;
//      otherwise keep all V.
//   4. p_i = exp(z_i - max kept z) over the kept tokens; Z = their sum.
//   5. top_p < 1: order the kept tokens by (p descending, index ascending) and
//      keep the shortest prefix whose summed p is >= top_p * Z (at least one).
//   6. draw u in [0,1) from the row's generator; with the kept tokens in index
//      order and S their summed p (the renormalizing mass), the token is the
//      first kept i whose running sum of p exceeds u * S. If S is not a
//      positive finite number (every kept logit -inf), the token is the kept
//      token of largest z (lowest index among ties).
// The generator is splitmix64: per draw, state += 0x9E3779B97F4A7C15 and the
// output is the mixed state; u = (output >> 11) * 2^-53. rng_state (B) holds one
// state per row and advances by exactly one draw per row per call, whatever the
// temperature, so the same starting states give the same tokens on any number
// of threads.
#pragma once

#include <cstdint>

namespace femtogpt::cpu {

// One splitmix64 step: advances *state, returns the next 64 random bits.
uint64_t splitmix64_next(uint64_t* state);

// out (B) <- index of the largest element of each row of x (B,V), lowest on ties;
// a row holding NaN gives the index of its first NaN (as numpy does).
template <typename T>
void argmax_rows(int64_t* out, const T* x, int64_t B, int64_t V);

// out (B) <- tokens drawn from logits (B,V) as described above; rng_state (B) advanced.
// temperature >= 0, top_k >= 0, 0 < top_p <= 1, V >= 1 (checked by the caller).
template <typename T>
void sample_tokens(int64_t* out, uint64_t* rng_state, const T* logits, int64_t B, int64_t V, double temperature,
                   int64_t top_k, double top_p);

}  // namespace femtogpt::cpu
