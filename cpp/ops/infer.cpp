// The inference engine (see infer.h): parameter checks, the window policy, and the
// layer loop over the kernels of cpu/.
#include "ops/infer.h"

#include <algorithm>
#include <atomic>
#include <mutex>
#include <chrono>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <set>

#include <sys/mman.h>

#include "cpu/activation.h"
#include "cpu/infer.h"
#include "cpu/isa.h"
#include "cpu/matmul.h"
#include "cpu/norm.h"
#include "cpu/sampling.h"
#include "parallel.h"
#include "pool.h"

namespace femtogpt::ops {

namespace {

// Below this many multiply-adds of attention, one thread does all rows and heads.
constexpr int64_t kParallelAttentionWork = int64_t(1) << 19;
// A prefill (or window recompute) of fewer flops runs on one thread.
constexpr int64_t kMinParallelPrefillFlops = int64_t(1) << 24;
// A decode step of fewer flops runs on one thread; a larger one splits its rows.
constexpr int64_t kMinParallelDecodeFlops = int64_t(1) << 24;
// Decode steps between two timings of one thread against the team (see decode()).
constexpr int64_t kMinRetunePeriod = 64, kMaxRetunePeriod = 1024;
// A team step this many times slower than the last window's opens a new window at once.
constexpr double kSlowTeamStep = 4.0;

// The process-wide timing of one thread against a team. team_pays: 1 if the team was
// faster in the last window, 0 if not, -1 before the first. A prefill uses a team only
// after a 1: on a busy machine its barriers can cost far more than a second thread gains.
struct ThreadTuner {
    std::mutex mutex;
    int64_t steps = 0;                   // decode steps that could have used a team
    int64_t next = 0;                    // the step that opens the next timing window
    int64_t period = kMinRetunePeriod;
    int team_pays = -1;
    double t_serial = 0, t_team = 0;     // seconds per step in the window, best of two
};
ThreadTuner g_tuner;
std::atomic<DecodeTeam> g_decode_team{DecodeTeam::automatic};

bool team_pays() {
    std::lock_guard<std::mutex> lock(g_tuner.mutex);
    return g_tuner.team_pays == 1;
}

// Limits the calling thread's parallel regions to one thread for a scope.
class SingleThread {
  public:
    explicit SingleThread(bool on) : before_(on ? num_threads() : 0) {
        if (on) set_num_threads(1);
    }
    ~SingleThread() {
        if (before_) set_num_threads(before_);
    }
    SingleThread(const SingleThread&) = delete;
    SingleThread& operator=(const SingleThread&) = delete;

  private:
    int before_;
};

const Tensor& param(const std::map<std::string, Tensor>& params, const std::string& name, const Shape& shape) {
    auto it = params.find(name);
    FG_CHECK(it != params.end(), "InferenceEngine: parameter '", name, "' is missing (expected a GPT's ",
             "named_parameters())");
    const Tensor& t = it->second;
    FG_CHECK(t.defined(), "InferenceEngine: parameter '", name, "' is undefined");
    FG_CHECK_TYPE(t.dtype() == DType::float32, "InferenceEngine: parameter '", name, "' has dtype ",
                  dtype_name(t.dtype()), "; the engine runs float32 models only");
    FG_CHECK(t.device().type == DeviceType::cpu, "InferenceEngine: no kernel for device ", t.device().str(),
             " (parameter '", name, "')");
    FG_CHECK(t.shape() == shape, "InferenceEngine: parameter '", name, "' has shape ", shape_str(t.shape()),
             ", expected ", shape_str(shape));
    return t;
}

// The packed weights' memory: 2 MiB aligned and advised as transparent huge pages (one
// TLB entry per 2 MiB while streaming ~40 MB a token), with a one-slot cache so that
// engine after engine reuses pages already faulted in (emptied by empty_cache()).
constexpr size_t kHugePage = size_t(1) << 21;
constexpr size_t kPackedCacheBytes = size_t(256) << 20;  // larger ones go back to the OS
struct {
    std::mutex mutex;
    float* data = nullptr;
    size_t nbytes = 0;
} g_packed_cache;

float* packed_alloc(size_t nbytes) {
    {
        std::lock_guard<std::mutex> lock(g_packed_cache.mutex);
        if (g_packed_cache.data && g_packed_cache.nbytes == nbytes) {
            float* p = g_packed_cache.data;
            g_packed_cache.data = nullptr;
            return p;
        }
    }
    void* p = nullptr;
    if (posix_memalign(&p, kHugePage, nbytes) != 0) return nullptr;  // the engine runs unpacked
#ifdef MADV_HUGEPAGE
    madvise(p, nbytes, MADV_HUGEPAGE);  // advice only: 4 KiB pages still work
#endif
    return static_cast<float*>(p);
}

void packed_free(float* p, size_t nbytes) {
    if (!p) return;
    if (nbytes <= kPackedCacheBytes) {
        std::lock_guard<std::mutex> lock(g_packed_cache.mutex);
        std::swap(p, g_packed_cache.data);  // the newest stays cached
        std::swap(nbytes, g_packed_cache.nbytes);
    }
    std::free(p);
}

// out (M,N) (row stride ldo) = [out +] x (M,K) w (N,K)^T + bias, through the packed GEMM
// (many rows) or linear_rows / linear_packed (a decode step's few rows; wp: w packed, or null).
void linear(float* out, int64_t ldo, const float* x, const float* w, const float* wp, const float* bias, int64_t M,
            int64_t N, int64_t K, bool accumulate, bool decode) {
    if (decode && wp && cpu::active_isa() != cpu::Isa::generic)
        return cpu::linear_packed(out, ldo, x, K, wp, bias, M, N, K, accumulate);
    if (decode) return cpu::linear_rows<float>(out, ldo, x, K, w, bias, M, N, K, accumulate);
    if (!accumulate) {
        cpu::gemm<float>(out, ldo, x, K, w, K, M, N, K, false, true, 1.0f, 0.0f);
        if (bias)
            for (int64_t m = 0; m < M; m++)
                for (int64_t n = 0; n < N; n++) out[m * ldo + n] += bias[n];
        return;
    }
    PoolBuffer tmp(size_t(M * N) * sizeof(float));
    float* t = tmp.data<float>();
    cpu::gemm<float>(t, N, x, K, w, K, M, N, K, false, true, 1.0f, 0.0f);
    for (int64_t m = 0; m < M; m++)
        for (int64_t n = 0; n < N; n++) {
            float s = t[m * N + n];
            if (bias) s += bias[n];
            out[m * ldo + n] += s;
        }
}

}  // namespace

void set_decode_team(DecodeTeam policy) { g_decode_team = policy; }

void release_packed_weights_cache() {
    float* p = nullptr;
    {
        std::lock_guard<std::mutex> lock(g_packed_cache.mutex);
        std::swap(p, g_packed_cache.data);
        g_packed_cache.nbytes = 0;
    }
    std::free(p);
}
DecodeTeam decode_team() { return g_decode_team; }

InferenceEngine::PackedWeights::~PackedWeights() { packed_free(data, nbytes); }

InferenceEngine::InferenceEngine(const std::map<std::string, Tensor>& params, int64_t n_head, int64_t batch,
                                 int64_t slide, double eps)
    : eps_(eps) {
    FG_CHECK(params.count("wte.weight") && params.at("wte.weight").dim() == 2,
             "InferenceEngine: parameter 'wte.weight' (vocab_size, n_embd) is missing or not 2-D");
    const Tensor& wte = param(params, "wte.weight", params.at("wte.weight").shape());
    V_ = wte.size(0);
    C_ = wte.size(1);
    FG_CHECK(V_ >= 1 && C_ >= 1, "InferenceEngine: wte.weight has shape ", shape_str(wte.shape()),
             ", expected (vocab_size >= 1, n_embd >= 1)");
    FG_CHECK(params.count("wpe.weight") && params.at("wpe.weight").dim() == 2,
             "InferenceEngine: parameter 'wpe.weight' (block_size, n_embd) is missing or not 2-D");
    S_ = params.at("wpe.weight").size(0);
    const Tensor& wpe = param(params, "wpe.weight", {S_, C_});
    FG_CHECK(S_ >= 1, "InferenceEngine: block_size (rows of wpe.weight) must be >= 1");
    FG_CHECK(n_head >= 1 && C_ % n_head == 0, "InferenceEngine: n_head ", n_head, " must be >= 1 and divide n_embd ",
             C_);
    H_ = n_head;
    D_ = C_ / H_;
    FG_CHECK(batch >= 1, "InferenceEngine: batch must be >= 1, got ", batch);
    B_ = batch;
    FG_CHECK(slide >= 1 && slide <= S_, "InferenceEngine: slide must be in [1, block_size=", S_, "], got ", slide);
    slide_ = slide;
    FG_CHECK(eps > 0 && std::isfinite(eps), "InferenceEngine: eps must be a positive number, got ", eps);
    L_ = 0;
    while (params.count("h." + std::to_string(L_) + ".ln_1.weight")) L_++;
    FG_CHECK(L_ >= 1, "InferenceEngine: no layers (expected parameters h.0.ln_1.weight, ...)");
    const bool bias = params.count("h.0.attn.c_attn.bias") > 0;

    std::set<std::string> expected = {"wte.weight", "wpe.weight"};
    auto hold = [&](const std::string& name, const Shape& shape) -> const float* {
        expected.insert(name);
        const Tensor& t = param(params, name, shape);
        held_.push_back(t);
        return t.data<float>();
    };
    auto hold_bias = [&](const std::string& name, int64_t n) -> const float* {
        return bias ? hold(name, {n}) : nullptr;
    };
    held_.push_back(wte);
    held_.push_back(wpe);
    wte_ = wte.data<float>();
    wpe_ = wpe.data<float>();
    const int64_t C = C_;
    for (int64_t l = 0; l < L_; l++) {
        const std::string p = "h." + std::to_string(l) + ".";
        Layer ly;
        ly.ln1_w = hold(p + "ln_1.weight", {C});
        ly.ln1_b = hold_bias(p + "ln_1.bias", C);
        ly.attn_w = hold(p + "attn.c_attn.weight", {3 * C, C});
        ly.attn_b = hold_bias(p + "attn.c_attn.bias", 3 * C);
        ly.proj_w = hold(p + "attn.c_proj.weight", {C, C});
        ly.proj_b = hold_bias(p + "attn.c_proj.bias", C);
        ly.ln2_w = hold(p + "ln_2.weight", {C});
        ly.ln2_b = hold_bias(p + "ln_2.bias", C);
        ly.fc_w = hold(p + "mlp.c_fc.weight", {4 * C, C});
        ly.fc_b = hold_bias(p + "mlp.c_fc.bias", 4 * C);
        ly.mlp_w = hold(p + "mlp.c_proj.weight", {C, 4 * C});
        ly.mlp_b = hold_bias(p + "mlp.c_proj.bias", C);
        layers_.push_back(ly);
    }
    lnf_w_ = hold("ln_f.weight", {C});
    lnf_b_ = hold_bias("ln_f.bias", C);
    for (const auto& kv : params)  // a name the model does not have (a bias of a bias-free model, ...)
        FG_CHECK(expected.count(kv.first), "InferenceEngine: unexpected parameter '", kv.first, "' for a GPT with ",
                 L_, " layers", bias ? "" : " and no biases");

    // pack the decode step's matrices, layer by layer in the order a step reads them
    const int64_t P = cpu::kPackTile;
    if (C % P == 0 && cpu::best_isa() != cpu::Isa::generic) {
        const size_t per_layer = size_t(12 * C * C), n = per_layer * size_t(L_);
        packed_.data = packed_alloc(n * sizeof(float));
        if (packed_.data) {
            packed_.nbytes = n * sizeof(float);
            struct Job {
                float* dst;
                const float* w;
                int64_t N, K;
            };
            std::vector<Job> jobs;
            float* p = packed_.data;
            auto place = [&](const float* w, int64_t N, int64_t K) {
                jobs.push_back({p, w, N, K});
                p += N * K;
                return jobs.back().dst;
            };
            for (Layer& ly : layers_) {
                ly.attn_wp = place(ly.attn_w, 3 * C, C);
                ly.proj_wp = place(ly.proj_w, C, C);
                ly.fc_wp = place(ly.fc_w, 4 * C, C);
                ly.mlp_wp = place(ly.mlp_w, C, 4 * C);
            }
            // a copy bound by memory bandwidth, which a second core adds to (when the
            // tuner has found that a team pays on this machine now)
            const int64_t nj = int64_t(jobs.size());
            auto pack = [&](int64_t j) {
                const Job& b = jobs[size_t(j)];
                cpu::pack_linear_tiles<float>(b.dst, b.w, b.N, b.K);
            };
            if (num_threads() > 1 && team_pays()) {
#pragma omp parallel for schedule(dynamic, 1)
                for (int64_t j = 0; j < nj; j++) pack(j);
            } else {
                for (int64_t j = 0; j < nj; j++) pack(j);
            }
        }
    }

    k_ = Tensor::empty({B_, L_, H_, D_, S_}, DType::float32);
    v_ = Tensor::empty({B_, L_, H_, S_, D_}, DType::float32);
    logits_ = Tensor::zeros({B_, V_}, DType::float32);
    len_.assign(size_t(B_), 0);
    ctx_.assign(size_t(B_ * S_), -1);
    pending_.assign(size_t(B_), 0);
}

float* InferenceEngine::workspace(int slot, size_t n) {
    if (work_.size() <= size_t(slot)) work_.resize(size_t(slot) + 1);
    std::unique_ptr<PoolBuffer>& w = work_[size_t(slot)];
    if (!w || w->nbytes() < n * sizeof(float)) {
        w.reset();
        w = std::make_unique<PoolBuffer>(n * sizeof(float));
    }
    return w->data<float>();
}

float* InferenceEngine::kcache(int64_t b, int64_t l, int64_t h) const {
    return k_.data<float>() + ((b * L_ + l) * H_ + h) * D_ * S_;
}
float* InferenceEngine::vcache(int64_t b, int64_t l, int64_t h) const {
    return v_.data<float>() + ((b * L_ + l) * H_ + h) * S_ * D_;
}

void InferenceEngine::check_started(const char* what) const {
    FG_CHECK(started_, "InferenceEngine.", what, ": call prefill(tokens, lengths) first");
}

void InferenceEngine::check_tokens(const int64_t* t, int64_t n, const char* what) const {
    for (int64_t i = 0; i < n; i++)
        FG_CHECK(t[i] >= 0 && t[i] < V_, "InferenceEngine.", what, ": token id ", t[i],
                 " is outside the vocabulary [0, ", V_, ")");
}

Tensor InferenceEngine::lengths() {
    flush();
    Tensor out = Tensor::empty({B_}, DType::int64);
    std::copy(len_.begin(), len_.end(), out.data<int64_t>());
    return out;
}

Tensor InferenceEngine::context() {
    flush();
    Tensor out = Tensor::empty({B_, S_}, DType::int64);
    std::copy(ctx_.begin(), ctx_.end(), out.data<int64_t>());
    return out;
}

Tensor InferenceEngine::logits() {
    flush();
    Tensor out = Tensor::empty({B_, V_}, DType::float32);
    std::memcpy(out.raw_data(), logits_.raw_data(), logits_.nbytes());
    return out;
}

Tensor InferenceEngine::prefill(const Tensor& tokens, const Tensor& lengths) {
    check_dtype(tokens, DType::int64, "InferenceEngine.prefill: tokens");
    check_dtype(lengths, DType::int64, "InferenceEngine.prefill: lengths");
    FG_CHECK(tokens.dim() == 2 && tokens.size(0) == B_, "InferenceEngine.prefill: tokens have shape ",
             shape_str(tokens.shape()), ", expected (", B_, ", T)");
    FG_CHECK(lengths.shape() == Shape{B_}, "InferenceEngine.prefill: lengths have shape ",
             shape_str(lengths.shape()), ", expected (", B_, ",)");
    const int64_t T = tokens.size(1);
    const int64_t* tok = tokens.data<int64_t>();
    // Every number that is used is read once, into memory of this call's own, and checked there:
    // the GIL is released, and another Python thread may write to tokens or lengths through numpy
    // views. (Tokens a long prompt drops are checked where they are, as they are never used.)
    const std::vector<int64_t> lens(lengths.data<int64_t>(), lengths.data<int64_t>() + B_);
    for (int64_t b = 0; b < B_; b++)
        FG_CHECK(lens[size_t(b)] >= 1 && lens[size_t(b)] <= T, "InferenceEngine.prefill: lengths[", b, "] = ",
                 lens[size_t(b)], " must be in [1, ", T, "] (every row needs at least one token)");
    std::vector<int64_t> prompts(size_t(B_ * S_), -1);  // each row's last (up to) S tokens, then -1
    std::vector<int64_t> kept(static_cast<size_t>(B_));
    for (int64_t b = 0; b < B_; b++) {
        const int64_t len = lens[size_t(b)], n = std::min(len, S_);  // a longer prompt keeps its last S tokens
        std::copy(tok + b * T + len - n, tok + b * T + len, prompts.begin() + b * S_);
        check_tokens(tok + b * T, len - n, "prefill");  // dropped, but still a caller's error
        check_tokens(prompts.data() + b * S_, n, "prefill");
        kept[size_t(b)] = n;
    }
    std::copy(prompts.begin(), prompts.end(), ctx_.begin());
    std::vector<Chunk> chunks;
    for (int64_t b = 0; b < B_; b++) {
        len_[size_t(b)] = 0;
        chunks.push_back({b, 0, kept[size_t(b)], ctx_.data() + b * S_});
    }
    has_pending_ = false;
    started_ = true;
    int64_t total = 0;
    for (const Chunk& c : chunks) total += c.n;
    forward(chunks.data(), B_, false, workspace(0, workspace_floats(total, B_, num_threads())), false);
    return logits();
}

Tensor InferenceEngine::step(const Tensor& tokens) {
    check_started("step");
    check_dtype(tokens, DType::int64, "InferenceEngine.step: tokens");
    FG_CHECK(tokens.shape() == Shape{B_}, "InferenceEngine.step: tokens have shape ", shape_str(tokens.shape()),
             ", expected (", B_, ",): one token per row");
    const std::vector<int64_t> ids(tokens.data<int64_t>(), tokens.data<int64_t>() + B_);  // read once (see prefill)
    check_tokens(ids.data(), B_, "step");
    flush();
    feed(ids.data());
    return logits();
}

void InferenceEngine::flush() {
    if (!has_pending_) return;
    has_pending_ = false;
    feed(pending_.data());
}

void InferenceEngine::feed(const int64_t* tokens) {
    std::vector<Chunk> full, decode;
    for (int64_t b = 0; b < B_; b++) {
        int64_t* ctx = ctx_.data() + b * S_;
        int64_t& len = len_[size_t(b)];
        if (len == S_) {  // the window slides: keep the last S - slide tokens, recompute them
            const int64_t keep = S_ - slide_;
            std::memmove(ctx, ctx + slide_, size_t(keep) * sizeof(int64_t));
            std::fill(ctx + keep, ctx + S_, int64_t(-1));
            ctx[keep] = tokens[b];
            len = 0;
            full.push_back({b, 0, keep + 1, ctx});
        } else {
            ctx[len] = tokens[b];
            decode.push_back({b, len, 1, ctx + len});
        }
    }
    if (!full.empty()) {
        int64_t n = 0;
        for (const Chunk& c : full) n += c.n;
        const int64_t R = int64_t(full.size());
        forward(full.data(), R, false, workspace(0, workspace_floats(n, R, num_threads())), false);
    }
    if (!decode.empty()) this->decode(decode);
}

Tensor InferenceEngine::generate(int64_t n, double temperature, int64_t top_k, double top_p,
                                 const std::optional<Tensor>& rng_state) {
    check_started("generate");
    FG_CHECK(n >= 0, "InferenceEngine.generate: n must be >= 0, got ", n);
    FG_CHECK(temperature >= 0 && std::isfinite(temperature),
             "InferenceEngine.generate: temperature must be a finite number >= 0 (0 is greedy), got ", temperature);
    FG_CHECK(top_k >= 0, "InferenceEngine.generate: top_k must be >= 0 (0 turns it off), got ", top_k);
    FG_CHECK(top_p > 0 && top_p <= 1, "InferenceEngine.generate: top_p must be in (0, 1] (1 turns it off), got ",
             top_p);
    uint64_t* state = nullptr;
    if (rng_state) {
        check_dtype(*rng_state, DType::int64, "InferenceEngine.generate: rng_state");
        FG_CHECK(rng_state->shape() == Shape{B_}, "InferenceEngine.generate: rng_state has shape ",
                 shape_str(rng_state->shape()), ", expected (", B_, ",)");
        state = reinterpret_cast<uint64_t*>(rng_state->data<int64_t>());
    } else {
        FG_CHECK(temperature == 0, "InferenceEngine.generate: temperature ", temperature,
                 " > 0 needs an rng_state tensor (see rng_state(seed, n))");
    }
    Tensor out = Tensor::empty({B_, n}, DType::int64);
    int64_t* o = out.data<int64_t>();
    for (int64_t i = 0; i < n; i++) {
        flush();
        cpu::sample_tokens<float>(pending_.data(), state, logits_.data<float>(), B_, V_, temperature, top_k, top_p);
        has_pending_ = true;
        for (int64_t b = 0; b < B_; b++) o[b * n + i] = pending_[size_t(b)];
    }
    return out;
}

size_t InferenceEngine::workspace_floats(int64_t N, int64_t R, int nthreads) const {
    const int64_t M = std::max(N, R);
    return size_t(M * (10 * C_ + 2) + nthreads * S_ + R * V_);
}

void InferenceEngine::decode(const std::vector<Chunk>& chunks) {
    // Threads pay only for a large step. On a machine busier than its cores, though, a team
    // waits at every join for a descheduled thread (and an actively waiting thread takes a
    // core from the others): a step can take several times longer than on one thread. So
    // steps are timed both ways, two each, in a window that opens every `period` steps
    // (process-wide, across engines), and the faster way is kept until the next window.
    // The period doubles while one thread wins (up to kMaxRetunePeriod) and drops back
    // to kMinRetunePeriod when the team wins; a team step kSlowTeamStep times slower than
    // the window's opens the next window at once. Results are the same bits either way.
    const int64_t R = int64_t(chunks.size());
    const bool team_helps = R >= 2 ? 24 * R * C_ * C_ * L_ >= kMinParallelDecodeFlops
                                   : cpu::linear_rows_threads(1, 4 * C_, C_) > 1;
    const DecodeTeam policy = g_decode_team;
    if (num_threads() <= 1 || policy == DecodeTeam::never || (policy == DecodeTeam::automatic && !team_helps)) {
        SingleThread one(true);
        return run_decode(chunks, false);
    }
    if (policy == DecodeTeam::always) return run_decode(chunks, true);
    int64_t phase;  // 0..3 inside a timing window (0, 1: one thread; 2, 3: the team), else -1
    bool team;
    {
        std::lock_guard<std::mutex> lock(g_tuner.mutex);
        const int64_t s = g_tuner.steps++;
        if (s >= g_tuner.next && s - g_tuner.next > 3) g_tuner.next = s;  // a window left unfinished
        phase = s >= g_tuner.next ? s - g_tuner.next : -1;
        team = phase >= 0 ? phase >= 2 : g_tuner.team_pays == 1;
    }
    const auto t0 = std::chrono::steady_clock::now();
    {
        SingleThread one(!team);
        run_decode(chunks, team);
    }
    const double dt = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    if (phase < 0 && team) {
        // A team step far slower than the window's: the machine got busier (a descheduled
        // thread holds every barrier). Time both ways again from the next step rather than
        // wait out the period.
        std::lock_guard<std::mutex> lock(g_tuner.mutex);
        if (dt > kSlowTeamStep * g_tuner.t_team && g_tuner.next > g_tuner.steps) g_tuner.next = g_tuner.steps;
    }
    if (phase >= 0) {
        std::lock_guard<std::mutex> lock(g_tuner.mutex);
        double& best = team ? g_tuner.t_team : g_tuner.t_serial;
        best = phase % 2 == 0 ? dt : std::min(best, dt);
        if (phase == 3) {
            const bool serial = g_tuner.t_serial <= g_tuner.t_team;
            g_tuner.team_pays = serial ? 0 : 1;
            g_tuner.period = serial ? std::min(2 * g_tuner.period, kMaxRetunePeriod) : kMinRetunePeriod;
            g_tuner.next = g_tuner.steps + g_tuner.period;
        }
    }
}

void InferenceEngine::run_decode(const std::vector<Chunk>& chunks, bool team) {
    // With packed weights, a team splits every product's columns (forward_team: the weights
    // stream from memory once per step, not once per thread). Otherwise rows are
    // independent: the rows split over the team's threads, each running the whole model on
    // its share serially (one fork and join per step, not one per op); a single row splits
    // each large product's columns instead.
    const int64_t R = int64_t(chunks.size());
    if (team && num_threads() > 1 && layers_[0].attn_wp && cpu::active_isa() != cpu::Isa::generic)
        return forward_team(chunks.data(), R, num_threads());
    const int nt = team ? int(std::min<int64_t>(num_threads(), R)) : 1;
    if (nt <= 1) return forward(chunks.data(), R, true, workspace(0, workspace_floats(R, R, num_threads())), !team);
    std::vector<float*> ws(static_cast<size_t>(nt));
    for (int t = 0; t < nt; t++) {  // allocated up front: nothing may throw inside the region
        const int64_t n = R * (t + 1) / nt - R * t / nt;
        ws[size_t(t)] = workspace(t, workspace_floats(n, n, 1));
    }
#pragma omp parallel num_threads(nt)
    {
        const int size = team_size();  // may be fewer than asked
        for (int w = thread_id(); w < nt; w += size) {
            const int64_t r0 = R * w / nt, r1 = R * (w + 1) / nt;
            forward(chunks.data() + r0, r1 - r0, true, ws[size_t(w)], true);
        }
    }
}

void InferenceEngine::forward_team(const Chunk* chunks, int64_t R, int nt) {
    const int64_t C = C_, D = D_, H = H_, S = S_;
    // x, qkv, y, f, logits, then per thread: h (R,C) and attention scratch (S)
    float* x = workspace(0, size_t(R * 9 * C + R * V_ + nt * (R * C + S)));
    float *qkv = x + R * C, *y = qkv + R * 3 * C, *f = y + R * C, *lg = f + R * 4 * C, *hs = lg + R * V_,
          *scratch = hs + nt * R * C;
    for (int64_t r = 0; r < R; r++) {  // x (R,C) = wte[token] + wpe[position]
        const float* te = wte_ + chunks[r].tokens[0] * C;
        const float* pe = wpe_ + chunks[r].past * C;
        for (int64_t j = 0; j < C; j++) x[r * C + j] = te[j] + pe[j];
    }
    const float scale = 1.0f / std::sqrt(float(D));
#pragma omp parallel num_threads(nt)
    {
        const int64_t size = team_size();  // may be fewer than asked
        const int64_t t = thread_id();
        float* h = hs + t * R * C;  // each thread normalizes the whole of x for itself
        float* sc = scratch + t * S;
        // this thread's output columns of an N-column product: whole tiles of 8
        auto cols = [&](int64_t N) {
            const int64_t tiles = N / cpu::kPackTile;
            return std::make_pair(tiles * t / size * cpu::kPackTile, tiles * (t + 1) / size * cpu::kPackTile);
        };
        const auto [q0, q1] = cols(3 * C);
        const auto [c0, c1] = cols(C);
        const auto [f0, f1] = cols(4 * C);
        // Attention's (row, head) units: by head when the heads split evenly and a head's
        // columns are whole tiles, so that a thread computes the q, k and v it attends with
        // (no barrier between); else in order, after a barrier.
        const bool by_head = D % cpu::kPackTile == 0 && H % size == 0;
        const int64_t h0 = H * t / size, h1 = H * (t + 1) / size;
        const int64_t u0 = by_head ? 0 : R * H * t / size, u1 = by_head ? R * (h1 - h0) : R * H * (t + 1) / size;
        for (int64_t l = 0; l < L_; l++) {
            const Layer& ly = layers_[size_t(l)];
            cpu::layernorm_rows<float>(h, x, ly.ln1_w, ly.ln1_b, R, C, eps_);
            if (by_head) {
                for (int64_t part = 0; part < 3; part++)  // q, k, v of heads h0..h1-1
                    cpu::linear_packed_avx2(qkv, 3 * C, h, C, ly.attn_wp, ly.attn_b, R, part * C + h0 * D,
                                            part * C + h1 * D, C, false);
            } else {
                cpu::linear_packed_avx2(qkv, 3 * C, h, C, ly.attn_wp, ly.attn_b, R, q0, q1, C, false);
#pragma omp barrier
            }
            for (int64_t i = u0; i < u1; i++) {
                const int64_t u = by_head ? (i / (h1 - h0)) * H + h0 + i % (h1 - h0) : i;
                const Chunk& c = chunks[u / H];
                const int64_t hh = u % H, pos = c.past;
                const float* row = qkv + (u / H) * 3 * C;
                float* kt = kcache(c.row, l, hh);  // keys transposed: (D, S)
                float* vc = vcache(c.row, l, hh);
                for (int64_t j = 0; j < D; j++) kt[j * S + pos] = row[C + hh * D + j];
                std::memcpy(vc + pos * D, row + 2 * C + hh * D, size_t(D) * 4);
                cpu::attention_cached<float>(y + (u / H) * C + hh * D, C, row + hh * D, 3 * C, kt, S, vc, pos, 1, D,
                                             scale, sc);
            }
#pragma omp barrier
            cpu::linear_packed_avx2(x, C, y, C, ly.proj_wp, ly.proj_b, R, c0, c1, C, true);
#pragma omp barrier
            cpu::layernorm_rows<float>(h, x, ly.ln2_w, ly.ln2_b, R, C, eps_);
            cpu::linear_packed_avx2(f, 4 * C, h, C, ly.fc_wp, ly.fc_b, R, f0, f1, C, false);
            for (int64_t r = 0; r < R; r++) cpu::gelu_tanh_rows<float>(f + r * 4 * C + f0, f + r * 4 * C + f0, f1 - f0);
#pragma omp barrier
            cpu::linear_packed_avx2(x, C, f, 4 * C, ly.mlp_wp, ly.mlp_b, R, c0, c1, 4 * C, true);
#pragma omp barrier
        }
    }
    // logits: ln_f, then the tied output projection (small: this thread)
    cpu::layernorm_rows<float>(y, x, lnf_w_, lnf_b_, R, C, eps_);
    cpu::linear_rows<float>(lg, V_, y, C, wte_, nullptr, R, V_, C, false);
    for (int64_t r = 0; r < R; r++) {
        const Chunk& c = chunks[r];
        std::memcpy(logits_.data<float>() + c.row * V_, lg + r * V_, size_t(V_) * 4);
        len_[size_t(c.row)] = c.past + 1;
    }
}

void InferenceEngine::forward(const Chunk* chunks, int64_t R, bool decode, float* ws, bool serial) {
    const int64_t C = C_, H = H_, D = D_;
    std::vector<int64_t> first(size_t(R) + 1, 0);  // chunk r's rows are first[r] .. first[r+1]-1
    for (int64_t r = 0; r < R; r++) first[size_t(r) + 1] = first[size_t(r)] + chunks[r].n;
    int64_t N = first[size_t(R)];  // rows in flight (the last layer of a prefill keeps R)
    // A prefill too small to pay for a team's fork and barriers (which, on a busy machine,
    // wait for descheduled threads) runs on one thread.
    SingleThread one(!decode && (24 * N * C * C * L_ < kMinParallelPrefillFlops ||
                                 !team_pays()));
    const int nthreads = serial ? 1 : num_threads();
    const int64_t M = std::max(N, R);
    float* x = ws;
    float *h = x + M * C, *qkv = h + M * C, *y = qkv + M * 3 * C, *f = y + M * C;
    float *mean = f + M * 4 * C, *rstd = mean + M, *attn_scratch = rstd + M, *lg = attn_scratch + nthreads * S_;

    // x (N,C) = wte[token] + wpe[position]
    for (int64_t r = 0; r < R; r++) {
        const Chunk& c = chunks[r];
        for (int64_t i = 0; i < c.n; i++) {
            const float* te = wte_ + c.tokens[i] * C;
            const float* pe = wpe_ + (c.past + i) * C;
            float* xr = x + (first[size_t(r)] + i) * C;
            for (int64_t j = 0; j < C; j++) xr[j] = te[j] + pe[j];
        }
    }
    // attention work (multiply-adds) decides whether the (chunk, head) units go parallel
    int64_t attn_work = 0;
    for (int64_t r = 0; r < R; r++) attn_work += chunks[r].n * (chunks[r].past + (chunks[r].n + 1) / 2) * 2 * C;
    const bool attn_parallel = !serial && nthreads > 1 && attn_work >= kParallelAttentionWork && R * H > 1;
    const float scale = 1.0f / std::sqrt(float(D));
    int64_t l_now = 0;

    auto layernorm = [&](float* out, const float* in, const float* w, const float* b, int64_t rows) {
        if (decode) return cpu::layernorm_rows<float>(out, in, w, b, rows, C, eps_);
        cpu::layernorm_forward<float>(out, mean, rstd, in, w, b, rows, C, eps_);
    };
    auto attend = [&](int64_t u, float* scratch) {  // chunk u / H, head u % H
        const Chunk& c = chunks[u / H];
        const int64_t hh = u % H, r0 = first[size_t(u / H)];
        cpu::attention_cached<float>(y + r0 * C + hh * D, C, qkv + r0 * 3 * C + hh * D, 3 * C, kcache(c.row, l_now, hh),
                                     S_, vcache(c.row, l_now, hh), c.past, c.n, D, scale, scratch);
    };

    for (int64_t l = 0; l < L_; l++) {
        const Layer& ly = layers_[size_t(l)];
        l_now = l;
        layernorm(h, x, ly.ln1_w, ly.ln1_b, N);
        linear(qkv, 3 * C, h, ly.attn_w, ly.attn_wp, ly.attn_b, N, 3 * C, C, false, decode);
        for (int64_t r = 0; r < R; r++) {  // the new keys and values go into the cache
            const Chunk& c = chunks[r];
            for (int64_t i = 0; i < c.n; i++) {
                const float* row = qkv + (first[size_t(r)] + i) * 3 * C;
                for (int64_t hh = 0; hh < H; hh++) {
                    float* kt = kcache(c.row, l, hh) + c.past + i;  // keys transposed: (D, S)
                    for (int64_t j = 0; j < D; j++) kt[j * S_] = row[C + hh * D + j];
                    std::memcpy(vcache(c.row, l, hh) + (c.past + i) * D, row + 2 * C + hh * D, size_t(D) * 4);
                }
            }
        }
        if (l == L_ - 1 && N > R) {
            // The last layer of a prefill: past its keys and values, only each chunk's last
            // token matters (for the logits). Its query attends all the chunk's keys; its
            // rows move to the front (row r <- chunk r's last row, in order: never clobbered).
            for (int64_t r = 0; r < R; r++) {
                const Chunk& c = chunks[r];
                const int64_t last = first[size_t(r) + 1] - 1;
                for (int64_t hh = 0; hh < H; hh++)
                    cpu::attention_cached<float>(y + r * C + hh * D, C, qkv + last * 3 * C + hh * D, 3 * C,
                                                 kcache(c.row, l, hh), S_, vcache(c.row, l, hh), c.past + c.n - 1, 1,
                                                 D, scale, attn_scratch);
                if (last != r) std::memcpy(x + r * C, x + last * C, size_t(C) * 4);
                first[size_t(r) + 1] = r + 1;
            }
            N = R;
        } else if (attn_parallel) {  // (an `omp parallel` costs a system call even with a false `if`)
#pragma omp parallel for schedule(dynamic, 1)
            for (int64_t u = 0; u < R * H; u++) attend(u, attn_scratch + int64_t(thread_id()) * S_);
        } else {
            for (int64_t u = 0; u < R * H; u++) attend(u, attn_scratch);
        }
        linear(x, C, y, ly.proj_w, ly.proj_wp, ly.proj_b, N, C, C, true, decode);
        layernorm(h, x, ly.ln2_w, ly.ln2_b, N);
        linear(f, 4 * C, h, ly.fc_w, ly.fc_wp, ly.fc_b, N, 4 * C, C, false, decode);
        if (decode)
            cpu::gelu_tanh_rows<float>(f, f, N * 4 * C);
        else
            cpu::gelu_forward<float>(f, f, N * 4 * C, cpu::GeluApprox::tanh);
        linear(x, C, f, ly.mlp_w, ly.mlp_wp, ly.mlp_b, N, C, 4 * C, true, decode);
    }
    // logits after each chunk's last token: ln_f, then the tied output projection
    for (int64_t r = 0; r < R; r++)
        std::memcpy(h + r * C, x + (first[size_t(r) + 1] - 1) * C, size_t(C) * 4);
    layernorm(y, h, lnf_w_, lnf_b_, R);
    linear(lg, V_, y, wte_, nullptr, nullptr, R, V_, C, false, decode);
    for (int64_t r = 0; r < R; r++) {
        const Chunk& c = chunks[r];
        std::memcpy(logits_.data<float>() + c.row * V_, lg + r * V_, size_t(V_) * 4);
        len_[size_t(c.row)] = c.past + c.n;
    }
}

}  // namespace femtogpt::ops
