// Harness for the tensorops kernels, after llm.c's dev/cpu/*.c: each kernel's
// reference, then the fast path once per ISA this CPU has, validated against
// the reference and timed (median of repeats, and the memory traffic it implies).
//
//   adamw      adamw_step over the parameters of a ~10.7M-parameter GPT (float32)
//   sum_rows   bias gradients: (B*T, C) summed over rows, at GPT shapes
//   sum_sq     sum of squares of 10.7M floats (gradient clipping)
//   add        residual add (B,T,C) + (B,T,C) and bias add (B*T,4C) + (4C)
//   permute    (B,T,H,D) -> (B,H,T,D) and a (B*T, C) transpose
//
// Usage: dev_tensorops [--threads n] [--reps n] [kernel...]
// Build: cmake -S . -B build/dev -DFEMTOGPT_DEV_HARNESSES=ON ... && cmake --build build/dev --target dev_tensorops
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <random>
#include <string>
#include <vector>

#include "cpu/elementwise.h"
#include "cpu/isa.h"
#include "cpu/layout.h"
#include "cpu/optim.h"
#include "cpu/reduce.h"
#include "parallel.h"

using namespace femtogpt;
using namespace femtogpt::cpu;

namespace {

int g_reps = 15;

double median_ms(const std::function<void()>& fn) {
    fn();  // warm-up
    std::vector<double> t;
    for (int r = 0; r < g_reps; r++) {
        auto t0 = std::chrono::steady_clock::now();
        fn();
        t.push_back(std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count());
    }
    std::sort(t.begin(), t.end());
    return t[t.size() / 2];
}

std::vector<float> randn(size_t n, unsigned seed) {
    std::mt19937 gen(seed);
    std::normal_distribution<float> d;
    std::vector<float> v(n);
    for (auto& x : v) x = d(gen);
    return v;
}

// max |a - b| / (|b| + floor): the floor keeps values that cancel to near zero
// (AdamW's m) from reporting float32 rounding as a large relative error.
double max_rel_err(const float* a, const float* b, size_t n, double floor = 1e-6) {
    double worst = 0;
    for (size_t i = 0; i < n; i++)
        worst = std::max(worst, std::fabs(double(a[i]) - double(b[i])) / (std::fabs(double(b[i])) + floor));
    return worst;
}

void report(const char* what, const char* isa, double ms, double bytes, double err) {
    std::printf("  %-28s %-8s %9.3f ms %8.1f GB/s   max rel err %.2e\n", what, isa, ms, bytes / ms / 1e6, err);
}

std::vector<std::vector<int64_t>> gpt_shapes() {  // nanoGPT Shakespeare-char: 6 layers, C = 384
    const int64_t C = 384;
    std::vector<std::vector<int64_t>> s{{65, C}, {256, C}};
    for (int l = 0; l < 6; l++) {
        std::vector<std::vector<int64_t>> layer{{C}, {C}, {3 * C, C}, {3 * C}, {C, C}, {C},
                                                {C}, {C}, {4 * C, C}, {4 * C}, {C, 4 * C}, {C}};
        s.insert(s.end(), layer.begin(), layer.end());
    }
    s.push_back({C});
    s.push_back({C});
    return s;
}

void bench_adamw() {
    std::printf("adamw_step, float32, ~10.7M parameters\n");
    std::vector<std::vector<float>> p0, g, m0, v0;
    size_t total = 0;
    unsigned seed = 1;
    for (auto& sh : gpt_shapes()) {
        size_t n = 1;
        for (auto d : sh) n *= size_t(d);
        total += n;
        p0.push_back(randn(n, seed++));
        g.push_back(randn(n, seed++));
        m0.push_back(randn(n, seed++));
        auto v = randn(n, seed++);
        for (auto& x : v) x = x * x;
        v0.push_back(v);
    }
    auto run = [&](bool reference, std::vector<std::vector<float>>& p, std::vector<std::vector<float>>& m,
                   std::vector<std::vector<float>>& v) {
        std::vector<AdamWSlot<float>> slots;
        for (size_t i = 0; i < p.size(); i++)
            slots.push_back({p[i].data(), g[i].data(), m[i].data(), v[i].data(), int64_t(p[i].size()),
                             p[i].size() > 1536 ? 0.1 : 0.0});
        if (reference) {
            for (auto& s : slots) adamw_step_reference(s, 1e-3, 0.9, 0.95, 1e-8, 10);
        } else {
            adamw_step(slots.data(), int64_t(slots.size()), 1e-3, 0.9, 0.95, 1e-8, 10);
        }
    };
    auto rp = p0, rm = m0, rv = v0;
    run(true, rp, rm, rv);
    const double bytes = double(total) * 7 * sizeof(float);  // read p g m v, write p m v
    auto flat_err = [&](const std::vector<std::vector<float>>& a, const std::vector<std::vector<float>>& b) {
        double e = 0;
        for (size_t i = 0; i < a.size(); i++) e = std::max(e, max_rel_err(a[i].data(), b[i].data(), a[i].size(), 1e-3));
        return e;
    };
    {
        auto p = p0, m = m0, v = v0;
        report("reference (double math)", "-", median_ms([&] { run(true, p, m, v); }), bytes, 0.0);
    }
    for (Isa isa : available_isas()) {
        set_active_isa(isa);
        auto p = p0, m = m0, v = v0;
        run(false, p, m, v);
        double err = std::max(flat_err(p, rp), std::max(flat_err(m, rm), flat_err(v, rv)));
        report("adamw_step", isa_name(isa), median_ms([&] { run(false, p, m, v); }), bytes, err);
    }
}

void bench_sum_rows() {
    std::printf("sum_rows (bias gradient), float32\n");
    for (auto [M, K] : std::vector<std::pair<int64_t, int64_t>>{{16384, 384}, {16384, 1536}, {2048, 1536}, {4096, 3}}) {
        auto x = randn(size_t(M * K), 7);
        std::vector<float> ref(static_cast<size_t>(K)), out(static_cast<size_t>(K));
        sum_rows_reference(ref.data(), x.data(), M, K);
        char what[64];
        std::snprintf(what, sizeof what, "(%lld, %lld)", (long long)M, (long long)K);
        report(what, "ref", median_ms([&] { sum_rows_reference(ref.data(), x.data(), M, K); }), double(M * K) * 4, 0);
        for (Isa isa : available_isas()) {
            set_active_isa(isa);
            sum_rows(out.data(), x.data(), M, K);
            report(what, isa_name(isa), median_ms([&] { sum_rows(out.data(), x.data(), M, K); }), double(M * K) * 4,
                   max_rel_err(out.data(), ref.data(), size_t(K)));
        }
    }
}

void bench_sum_sq() {
    std::printf("sum_squares, float32, 10.7M elements\n");
    const int64_t n = 10770816;
    auto x = randn(size_t(n), 9);
    double ref = sum_squares_reference(x.data(), n);
    report("reference", "-", median_ms([&] { ref = sum_squares_reference(x.data(), n); }), double(n) * 4, 0);
    for (Isa isa : available_isas()) {
        set_active_isa(isa);
        double s = 0;
        double ms = median_ms([&] { s = sum_squares(x.data(), n); });
        report("sum_squares", isa_name(isa), ms, double(n) * 4, std::fabs(s - ref) / ref);
    }
}

void bench_add() {
    std::printf("add, float32\n");
    const int64_t B = 8, T = 256, C = 384;
    auto a = randn(size_t(B * T * C), 3), b = randn(size_t(B * T * C), 4);
    std::vector<float> out(a.size()), ref(a.size());
    add_reference(ref.data(), a.data(), b.data(), B * T * C, B * T * C, 1.0f);
    report("residual ref", "-", median_ms([&] { add_reference(ref.data(), a.data(), b.data(), B * T * C, B * T * C, 1.0f); }),
           double(a.size()) * 12, 0);
    add(out.data(), a.data(), b.data(), B * T * C, B * T * C, 1.0f);
    report("residual", "fast", median_ms([&] { add(out.data(), a.data(), b.data(), B * T * C, B * T * C, 1.0f); }),
           double(a.size()) * 12, max_rel_err(out.data(), ref.data(), out.size()));
    auto h = randn(size_t(B * T * 4 * C), 5), bias = randn(size_t(4 * C), 6);
    std::vector<float> ho(h.size()), hr(h.size());
    add_reference(hr.data(), h.data(), bias.data(), int64_t(h.size()), 4 * C, 1.0f);
    report("bias ref", "-", median_ms([&] { add_reference(hr.data(), h.data(), bias.data(), int64_t(h.size()), 4 * C, 1.0f); }),
           double(h.size()) * 8, 0);
    add(ho.data(), h.data(), bias.data(), int64_t(h.size()), 4 * C, 1.0f);
    report("bias", "fast", median_ms([&] { add(ho.data(), h.data(), bias.data(), int64_t(h.size()), 4 * C, 1.0f); }),
           double(h.size()) * 8, max_rel_err(ho.data(), hr.data(), ho.size()));
}

void bench_permute() {
    std::printf("permute, float32\n");
    struct Case {
        const char* name;
        std::vector<int64_t> shape;
        std::vector<int> dims;
    };
    for (const Case& c : {Case{"(B,T,H,D)->(B,H,T,D)", {8, 256, 6, 64}, {0, 2, 1, 3}},
                          Case{"(B*T,C) transpose", {2048, 384}, {1, 0}}}) {
        size_t n = 1;
        for (auto d : c.shape) n *= size_t(d);
        auto x = randn(n, 11);
        std::vector<float> out(n), ref(n);
        const int nd = int(c.shape.size());
        permute_reference(ref.data(), x.data(), c.shape.data(), c.dims.data(), nd, 4);
        report(c.name, "ref", median_ms([&] { permute_reference(ref.data(), x.data(), c.shape.data(), c.dims.data(), nd, 4); }),
               double(n) * 8, 0);
        permute(out.data(), x.data(), c.shape.data(), c.dims.data(), nd, 4);
        report(c.name, "fast", median_ms([&] { permute(out.data(), x.data(), c.shape.data(), c.dims.data(), nd, 4); }),
               double(n) * 8, max_rel_err(out.data(), ref.data(), n));
    }
}

}  // namespace

int main(int argc, char** argv) {
    std::vector<std::string> which;
    for (int i = 1; i < argc; i++) {
        std::string a = argv[i];
        if (a == "--threads" && i + 1 < argc) {
            set_num_threads(std::atoi(argv[++i]));
        } else if (a == "--reps" && i + 1 < argc) {
            g_reps = std::max(1, std::atoi(argv[++i]));
        } else {
            which.push_back(a);
        }
    }
    std::printf("threads %d\n", num_threads());
    auto want = [&](const char* k) { return which.empty() || std::find(which.begin(), which.end(), k) != which.end(); };
    if (want("adamw")) bench_adamw();
    if (want("sum_rows")) bench_sum_rows();
    if (want("sum_sq")) bench_sum_sq();
    if (want("add")) bench_add();
    if (want("permute")) bench_permute();
    return 0;
}
