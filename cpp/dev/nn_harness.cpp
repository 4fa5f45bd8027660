// Harness for the nn kernels (llm.c dev/cpu style): for each op at the femto and
// small model shapes, run the reference, then the fast kernel on every ISA this
// CPU has; validate against the reference (max error relative to the largest
// reference value), then time forward + backward (median of repeats).
//
//   ./dev_nn [repeats]        (threads: OMP_NUM_THREADS)
//
// Built by cpp/dev/nn.cmake (-DFEMTOGPT_DEV_HARNESSES=ON), or by hand: compile
// cpu/{norm,activation,softmax,loss,dropout,isa}.cpp, pool.cpp and this file with
// -O3 -fopenmp -Icpp, the five *_avx2.cpp files adding -mavx2 -mfma, and link.
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <functional>
#include <random>
#include <string>
#include <vector>

#include "cpu/activation.h"
#include "cpu/dropout.h"
#include "cpu/isa.h"
#include "cpu/loss.h"
#include "cpu/norm.h"
#include "cpu/softmax.h"
#include "parallel.h"

using namespace femtogpt;
using namespace femtogpt::cpu;

namespace {

using Vec = std::vector<float>;

Vec randn(size_t n, uint32_t seed, float scale = 1.0f) {
    std::mt19937 gen(seed);
    std::normal_distribution<float> d(0.0f, scale);
    Vec v(n);
    for (auto& x : v) x = d(gen);
    return v;
}

double max_rel_err(const Vec& a, const Vec& ref) {
    double m = 0, e = 0;
    for (size_t i = 0; i < ref.size(); i++) {
        m = std::max(m, double(std::fabs(ref[i])));
        e = std::max(e, double(std::fabs(a[i] - ref[i])));
    }
    return m > 0 ? e / m : e;
}

double median_ms(const std::function<void()>& f, int repeats) {
    f();  // warm-up
    std::vector<double> t;
    for (int r = 0; r < repeats; r++) {
        auto t0 = std::chrono::steady_clock::now();
        f();
        t.push_back(std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count());
    }
    std::sort(t.begin(), t.end());
    return t[t.size() / 2];
}

// One op: `run(outs)` fills the output buffers (forward then backward) with the
// kernels selected by `ref`; outputs are compared buffer by buffer.
struct Op {
    std::string name;
    std::function<void(bool ref, std::vector<Vec*>& outs)> run;
    int nouts;
};

void bench(const char* model, const Op& op, int repeats) {
    std::vector<Vec> ref_bufs(size_t(op.nouts)), bufs(size_t(op.nouts));
    std::vector<Vec*> ref_ptrs, ptrs;
    for (auto& b : ref_bufs) ref_ptrs.push_back(&b);
    for (auto& b : bufs) ptrs.push_back(&b);
    op.run(true, ref_ptrs);
    double t_ref = median_ms([&] { op.run(true, ref_ptrs); }, std::max(3, repeats / 4));
    std::printf("%-6s %-16s reference %8.3f ms", model, op.name.c_str(), t_ref);
    for (Isa isa : available_isas()) {
        set_active_isa(isa);
        op.run(false, ptrs);
        double err = 0;
        for (int k = 0; k < op.nouts; k++) err = std::max(err, max_rel_err(bufs[size_t(k)], ref_bufs[size_t(k)]));
        double t = median_ms([&] { op.run(false, ptrs); }, repeats);
        std::printf(" | %-7s %8.3f ms (err %.1e)", isa_name(isa), t, err);
    }
    std::printf("\n");
    set_active_isa(best_isa());
}

}  // namespace

int main(int argc, char** argv) {
    const int repeats = argc > 1 ? std::atoi(argv[1]) : 20;
    struct Shape { const char* name; int64_t B, T, C, V; };
    const Shape shapes[] = {{"femto", 32, 64, 64, 76}, {"small", 16, 256, 384, 76}};
    std::printf("threads %d; forward + backward, median of %d\n", num_threads(), repeats);
    for (const auto& s : shapes) {
        const int64_t N = s.B * s.T, C = s.C, H = 4 * s.C, V = s.V;
        const Vec x = randn(size_t(N * C), 1), w = randn(size_t(C), 2), b = randn(size_t(C), 3);
        const Vec g = randn(size_t(N * C), 4), h = randn(size_t(N * H), 5), gh = randn(size_t(N * H), 6);
        const Vec z = randn(size_t(N * V), 7, 3.0f), sc = randn(size_t(N * s.T), 8, 2.0f);
        const Vec gs = randn(size_t(N * s.T), 9);
        std::vector<int64_t> tgt(static_cast<size_t>(N));
        for (int64_t i = 0; i < N; i++) tgt[size_t(i)] = (i * 7919) % V;

        Op layernorm{"layernorm", [&](bool ref, std::vector<Vec*>& o) {
            for (int k : {0, 3}) o[size_t(k)]->resize(size_t(N * C));
            for (int k : {1, 2}) o[size_t(k)]->resize(size_t(N));
            for (int k : {4, 5}) o[size_t(k)]->resize(size_t(C));
            auto fwd = ref ? layernorm_forward_reference<float> : layernorm_forward<float>;
            auto bwd = ref ? layernorm_backward_reference<float> : layernorm_backward<float>;
            fwd(o[0]->data(), o[1]->data(), o[2]->data(), x.data(), w.data(), b.data(), N, C, 1e-5);
            bwd(o[3]->data(), o[4]->data(), o[5]->data(), g.data(), x.data(), w.data(), o[1]->data(), o[2]->data(),
                N, C);
        }, 6};
        auto gelu = [&](GeluApprox a, const char* name) {
            return Op{name, [&, a](bool ref, std::vector<Vec*>& o) {
                o[0]->resize(size_t(N * H));
                o[1]->resize(size_t(N * H));
                (ref ? gelu_forward_reference<float> : gelu_forward<float>)(o[0]->data(), h.data(), N * H, a);
                (ref ? gelu_backward_reference<float> : gelu_backward<float>)(o[1]->data(), gh.data(), h.data(),
                                                                              N * H, a);
            }, 2};
        };
        Op softmax{"softmax", [&](bool ref, std::vector<Vec*>& o) {
            o[0]->resize(size_t(N * s.T));
            o[1]->resize(size_t(N * s.T));
            (ref ? softmax_forward_reference<float> : softmax_forward<float>)(o[0]->data(), sc.data(), N, s.T);
            (ref ? softmax_backward_reference<float> : softmax_backward<float>)(o[1]->data(), gs.data(),
                                                                                o[0]->data(), N, s.T);
        }, 2};
        Op xent{"cross_entropy", [&](bool ref, std::vector<Vec*>& o) {
            o[0]->resize(size_t(N));
            o[1]->resize(size_t(N));
            o[2]->resize(size_t(N * V));
            const float gmean = 1.0f / float(N);
            (ref ? cross_entropy_forward_reference<float, int64_t> : cross_entropy_forward<float, int64_t>)(
                o[0]->data(), o[1]->data(), z.data(), tgt.data(), N, V, -100);
            (ref ? cross_entropy_backward_reference<float, int64_t> : cross_entropy_backward<float, int64_t>)(
                o[2]->data(), &gmean, 0, z.data(), tgt.data(), o[1]->data(), N, V, -100);
        }, 3};
        Op dropout{"dropout", [&](bool ref, std::vector<Vec*>& o) {
            o[0]->resize(size_t(N * C));
            o[1]->resize(size_t(N * C));
            auto f = ref ? dropout_forward_reference<float> : dropout_forward<float>;
            f(o[0]->data(), x.data(), N * C, 0.1, 1234);
            f(o[1]->data(), g.data(), N * C, 0.1, 1234);
        }, 2};
        for (const Op& op : {layernorm, gelu(GeluApprox::tanh, "gelu_tanh"), gelu(GeluApprox::none, "gelu_erf"), softmax,
                             xent, dropout})
            bench(s.name, op, repeats);
    }
    return 0;
}
