// InferenceEngine: a GPT-2 forward pass for generation, with a KV cache.
//
// Size letters: B rows (prompts), S block_size, L layers, H heads, D head size,
// C = H*D channels, V vocabulary.
//
// The engine holds the model's float32 parameters (the same storage; names as
// GPT.named_parameters(), Linear weights (out, in)), plus a copy of the four matrices of
// every layer packed for decode steps (made at construction: an engine is for parameters
// that do not change under it), and, per row, a KV cache
// k (B, L, H, D, S) (keys transposed: scores of consecutive keys are vertical
// multiply-adds) and v (B, L, H, S, D), the row's context (the tokens in the cache, positions 0..len-1)
// and the logits after its last token. Rows are independent: each has its own length,
// so prompts of different lengths need no padding and nothing is ever masked.
//
//   prefill(tokens, lengths)  row b's context := its first lengths[b] tokens (the last S
//                             of them if longer); the prompt runs through all layers once.
//   step(tokens)              appends one token to every row, one position's work each.
//   generate(n, ...)          n times: draw a token per row from the current logits
//                             (cpu::sample_tokens), append it. One call, no Python per token.
//
// Window policy: a row whose context is full (len == S) drops its oldest `slide` tokens
// before taking the next one, and its cache is recomputed for the S - slide tokens kept
// (positions 0..S-slide-1: GPT-2's position embeddings are absolute, so every kept key
// and value changes). slide = 1 is nanoGPT's idx[:, -block_size:] exactly (a full
// recompute per token once the window is full); a larger slide recomputes once per
// `slide` tokens at the price of a shorter context right after each slide.
//
// Kernels: a decode step (one token per row) runs cpu::linear_packed (cpu::linear_rows
// where the weights could not be packed or AVX2 is off) and cpu::attention_cached; a prefill or recompute (many tokens) runs cpu::gemm. Both give a
// row results that do not depend on the other rows, so batched generation equals
// generating each prompt alone, bit for bit.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include "pool.h"
#include "tensor.h"

namespace femtogpt::ops {

// Whether a decode step may run on a team of threads: `automatic` times one thread against
// the team (see InferenceEngine::decode); `always` and `never` are for tests and
// comparisons. Process-wide.
enum class DecodeTeam { automatic, always, never };
void set_decode_team(DecodeTeam policy);

// Frees the packed weights that the last engine left for the next one (one model's size; see
// packed_alloc in infer.cpp). empty_cache() calls it.
void release_packed_weights_cache();
DecodeTeam decode_team();

class InferenceEngine {
  public:
    // params: every float32 parameter of GPT(config) by name; batch B >= 1; 1 <= slide <= S.
    InferenceEngine(const std::map<std::string, Tensor>& params, int64_t n_head, int64_t batch, int64_t slide,
                    double eps);

    int64_t batch() const { return B_; }
    int64_t block_size() const { return S_; }
    int64_t vocab_size() const { return V_; }
    int64_t slide() const { return slide_; }
    Tensor lengths();   // (B) int64: tokens in each row's context (after pending tokens are fed)
    Tensor context();   // (B, S) int64: row b's context in [:len], -1 after it
    Tensor logits();    // (B, V) float32: logits after each row's last token (a copy)

    // tokens (B, T) int64, right-padded; lengths (B) int64 in [1, T] -> logits (B, V)
    Tensor prefill(const Tensor& tokens, const Tensor& lengths);
    // tokens (B) int64 -> logits (B, V)
    Tensor step(const Tensor& tokens);
    // -> (B, n) int64 drawn tokens; rng_state (B) int64 advances (may be absent when temperature == 0)
    Tensor generate(int64_t n, double temperature, int64_t top_k, double top_p, const std::optional<Tensor>& rng_state);

    // Held by each call from Python (see bind_infer.cpp): the caches and scratch serve one call
    // at a time, so a second thread's call waits for the first.
    std::mutex& calls() { return calls_; }

  private:
    std::mutex calls_;
    struct Layer {
        const float *ln1_w, *ln1_b, *attn_w, *attn_b, *proj_w, *proj_b;
        const float *ln2_w, *ln2_b, *fc_w, *fc_b, *mlp_w, *mlp_b;
        // the four matrices in cpu::pack_linear_tiles' layout, in packed_ (null: not packed)
        const float *attn_wp = nullptr, *proj_wp = nullptr, *fc_wp = nullptr, *mlp_wp = nullptr;
    };
    // Decode steps stream every weight once per token; packed, they are one run of memory in
    // the order read, on 2 MiB pages (fewer TLB misses). Released to a one-slot cache
    // (up to 256 MiB) that the next engine of the same size takes: generate()
    // builds one per call, and fresh pages cost a fault each.
    struct PackedWeights {
        float* data = nullptr;
        size_t nbytes = 0;
        PackedWeights() = default;
        PackedWeights(const PackedWeights&) = delete;
        PackedWeights& operator=(const PackedWeights&) = delete;
        ~PackedWeights();
    };
    // `n` tokens appended to `row` after its first `past` positions.
    struct Chunk {
        int64_t row, past, n;
        const int64_t* tokens;
    };

    void check_started(const char* what) const;
    void check_tokens(const int64_t* t, int64_t n, const char* what) const;
    void feed(const int64_t* tokens);  // one token per row, sliding full rows
    void flush();                      // feeds the pending drawn tokens
    // Runs the R chunks through the model (decode: one token per chunk), fills their caches,
    // and writes the logits after each chunk's last token to logits_; chunks of different
    // rows may run concurrently.
    // decode steps: the rows split over threads when the step is large
    void decode(const std::vector<Chunk>& chunks);
    void run_decode(const std::vector<Chunk>& chunks, bool team);
    // A decode step (R chunks of one token) on a team of nt threads in one parallel region:
    // every product's output columns split over the threads (the weights stream once),
    // attention's (row, head) units too, a barrier wherever a step needs the whole of its
    // input (5 per layer). Needs packed weights.
    void forward_team(const Chunk* chunks, int64_t R, int nt);
    // `ws`: workspace_floats(total tokens, R, threads) floats; `serial`: run on this thread only
    void forward(const Chunk* chunks, int64_t R, bool decode, float* ws, bool serial);
    size_t workspace_floats(int64_t N, int64_t R, int nthreads) const;
    float* workspace(int slot, size_t n);  // n floats in slot `slot`, reused across calls
    float* kcache(int64_t b, int64_t l, int64_t h) const;
    float* vcache(int64_t b, int64_t l, int64_t h) const;

    int64_t V_, S_, L_, H_, C_, D_, B_, slide_;
    double eps_;
    std::vector<Tensor> held_;  // keeps the parameters' storage alive
    const float *wte_, *wpe_, *lnf_w_, *lnf_b_;
    std::vector<Layer> layers_;
    PackedWeights packed_;
    Tensor k_, v_;                 // k (B, L, H, D, S), v (B, L, H, S, D)
    Tensor logits_;                // (B, V)
    std::vector<int64_t> len_;     // (B)
    std::vector<int64_t> ctx_;     // (B, S)
    std::vector<int64_t> pending_;  // (B) drawn, not yet fed
    bool has_pending_ = false;
    bool started_ = false;
    std::vector<std::unique_ptr<PoolBuffer>> work_;
};

}  // namespace femtogpt::ops
