// Harness for the float32 matmul, after llm.c's dev/cpu/matmul_forward.c:
// the reference, numbered variants, validation of each against the reference,
// then timing (median of repeats, GFLOP/s).
//
//   variant 0: gemm_reference (triple loop, double accumulation)
//   variant 1: the naive row-parallel loop the packed driver replaced
//   variant 2: the packed Goto/BLIS driver, once per ISA this CPU has
//
// Usage: dev_matmul [M K N] [--ta] [--tb] [--threads n] [--isa name]
//                   [--mc n] [--kc n] [--nc n] [--direct-a 0|1] [--reps n] [--naive]
// With no shape, runs the shapes of asv_bench/benchmarks/bench_matmul.py.
// Build: cmake -S . -B build/dev -DFEMTOGPT_DEV_HARNESSES=ON ... && cmake --build build/dev --target dev_matmul
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <random>
#include <string>
#include <time.h>
#include <vector>

#include "cpu/isa.h"
#include "cpu/matmul.h"
#include "cpu/matmul_kernels.h"
#include "parallel.h"

using namespace femtogpt;

namespace {

// variant 1: the placeholder the packed driver replaced (kept to show the gap).
void gemm_naive(float* C, int64_t ldc, const float* A, int64_t lda, const float* B, int64_t ldb, int64_t M,
                int64_t N, int64_t K, bool ta, bool tb, float alpha, float beta) {
#pragma omp parallel for schedule(static)
    for (int64_t i = 0; i < M; i++)
        for (int64_t j = 0; j < N; j++) {
            float acc = 0;
            for (int64_t p = 0; p < K; p++)
                acc += (ta ? A[p * lda + i] : A[i * lda + p]) * (tb ? B[j * ldb + p] : B[p * ldb + j]);
            C[i * ldc + j] = alpha * acc + (beta == 0.0f ? 0.0f : beta * C[i * ldc + j]);
        }
}

struct Problem {
    int64_t M, K, N;
    bool ta, tb;
    std::vector<float> A, B, C0;
    int64_t lda() const { return ta ? M : K; }
    int64_t ldb() const { return tb ? K : N; }
};

// Validates rows [r0, r1) of a result against the reference (C starts from C0,
// out = 0.5*A@B + 0.25*C0 to exercise alpha and beta).
bool validate(const Problem& p, const std::vector<float>& C, const char* name) {
    const int64_t rows = std::min<int64_t>(p.M, 96);
    double worst = 0;
    for (int64_t r0 : {int64_t(0), p.M - rows}) {
        std::vector<float> ref(p.C0.begin() + r0 * p.N, p.C0.begin() + (r0 + rows) * p.N);
        const float* a = p.ta ? p.A.data() + r0 : p.A.data() + r0 * p.lda();
        cpu::gemm_reference<float>(ref.data(), p.N, a, p.lda(), p.B.data(), p.ldb(), rows, p.N, p.K, p.ta, p.tb,
                                   0.5f, 0.25f);
        for (int64_t i = 0; i < rows * p.N; i++) {
            // |error| of a K-term float sum grows like sqrt(K) * eps * scale (random signs).
            double err = std::fabs(double(C[r0 * p.N + i]) - ref[i]) / (1.0 + std::fabs(double(ref[i])));
            worst = std::max(worst, err / std::sqrt(double(p.K) + 1.0));
        }
    }
    bool ok = worst < 1e-5;
    if (!ok) std::printf("  %-22s MISMATCH (worst scaled error %.3g)\n", name, worst);
    return ok;
}

struct Timing {
    double median, best, cpu;  // wall-clock median and best; best thread CPU time (1 thread)
};

double thread_cpu_seconds() {
    timespec ts;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

template <typename F>
Timing time_it(F&& f, int reps) {
    f();  // warm-up: pool, caches, OpenMP threads
    std::vector<double> t, c;
    for (int r = 0; r < reps; r++) {
        auto t0 = std::chrono::steady_clock::now();
        double c0 = thread_cpu_seconds();
        f();
        c.push_back(thread_cpu_seconds() - c0);
        t.push_back(std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
    }
    std::sort(t.begin(), t.end());
    std::sort(c.begin(), c.end());
    return {t[t.size() / 2], t[0], c[0]};
}

}  // namespace

int main(int argc, char** argv) {
    std::vector<int64_t> dims;
    bool ta = false, tb = false, naive = false;
    int threads = num_threads(), reps = 0;
    std::string only_isa;
    cpu::gemm_detail::Blocking blk;
    for (int i = 1; i < argc; i++) {
        std::string a = argv[i];
        auto next = [&]() { return i + 1 < argc ? std::atoi(argv[++i]) : 0; };
        if (a == "--ta") ta = true;
        else if (a == "--tb") tb = true;
        else if (a == "--naive") naive = true;
        else if (a == "--threads") threads = next();
        else if (a == "--reps") reps = next();
        else if (a == "--mc") blk.mc = next();
        else if (a == "--kc") blk.kc = next();
        else if (a == "--nc") blk.nc = next();
        else if (a == "--direct-a") blk.direct_a = next();
        else if (a == "--isa") only_isa = i + 1 < argc ? argv[++i] : "";
        else dims.push_back(std::atoll(argv[i]));
    }
    std::vector<std::vector<int64_t>> shapes;  // (M, K, N)
    if (dims.size() == 3) shapes.push_back(dims);
    else shapes = {{512, 512, 512}, {2048, 256, 768}, {2048, 768, 256}, {4096, 512, 2048},
                   {2048, 64, 192}, {2048, 64, 256}, {2048, 256, 64}};
    set_num_threads(threads);
    cpu::gemm_detail::set_blocking_override(blk);
    std::printf("threads %d, ta %d, tb %d, blocking override mc %d kc %d nc %d direct_a %d\n", threads, ta, tb,
                blk.mc, blk.kc, blk.nc, blk.direct_a);

    bool all_ok = true;
    std::mt19937 rng(1234);
    std::uniform_real_distribution<float> dist(-1.0f, 1.0f);
    for (auto& s : shapes) {
        Problem p{s[0], s[1], s[2], ta, tb, {}, {}, {}};
        p.A.resize(p.M * p.K);
        p.B.resize(p.K * p.N);
        p.C0.resize(p.M * p.N);
        for (float& x : p.A) x = dist(rng);
        for (float& x : p.B) x = dist(rng);
        for (float& x : p.C0) x = dist(rng);
        const double flops = 2.0 * p.M * p.N * p.K;
        const int n = reps > 0 ? reps : int(std::clamp(3e9 / flops, 5.0, 201.0));
        std::printf("M %ld K %ld N %ld (%d reps)\n", long(p.M), long(p.K), long(p.N), n);
        std::vector<float> C;

        auto run = [&](const char* name, auto&& fn) {
            C = p.C0;
            fn(0.5f, 0.25f);
            all_ok &= validate(p, C, name);
            // The machine is shared: the best run shows what the code can do, the median what it did.
            Timing t = time_it([&] { fn(1.0f, 0.0f); }, n);
            // On one thread, CPU time is immune to the time slices other processes take.
            std::printf("  %-22s median %8.3f ms %6.1f GFLOP/s   best %6.1f   best-cpu %6.1f GFLOP/s\n", name,
                        t.median * 1e3, flops / t.median * 1e-9, flops / t.best * 1e-9,
                        threads == 1 ? flops / t.cpu * 1e-9 : 0.0);
        };
        if (naive)
            run("1 naive", [&](float al, float be) {
                gemm_naive(C.data(), p.N, p.A.data(), p.lda(), p.B.data(), p.ldb(), p.M, p.N, p.K, ta, tb, al, be);
            });
        for (cpu::Isa isa : cpu::available_isas()) {
            if (!only_isa.empty() && only_isa != cpu::isa_name(isa)) continue;
            cpu::set_active_isa(isa);
            std::string name = std::string("2 packed ") + cpu::isa_name(isa);
            run(name.c_str(), [&](float al, float be) {
                cpu::gemm<float>(C.data(), p.N, p.A.data(), p.lda(), p.B.data(), p.ldb(), p.M, p.N, p.K, ta, tb, al,
                                 be);
            });
        }
    }
    std::printf(all_ok ? "all variants match the reference\n" : "MISMATCHES\n");
    return all_ok ? 0 : 1;
}
