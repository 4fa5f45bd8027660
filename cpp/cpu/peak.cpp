// fma_peak_gflops (cpu/peak.h): the generic family's chains, and the timing of whichever
// family is active.
#include "cpu/peak.h"

#include <algorithm>
#include <chrono>
#include <utility>

#include "common.h"
#include "cpu/isa.h"
#include "parallel.h"

namespace femtogpt::cpu {

// Baseline x86-64: the compiler makes each chain's 4 lanes one SSE register, a multiply then an add.
float fma_chains_generic(int64_t iters, double* flops) {
    constexpr int kLanes = 4;
    float a[kPeakChains][kLanes];
    for (int c = 0; c < kPeakChains; c++)
        for (int l = 0; l < kLanes; l++) a[c][l] = 1.0f + 0.1f * float(c) + 0.01f * float(l);
    const float m = 0.999999f, k = 1e-6f;  // a stays near k / (1 - m) = 1
    for (int64_t i = 0; i < iters; i++)
        for (int c = 0; c < kPeakChains; c++)
            for (int l = 0; l < kLanes; l++) a[c][l] = a[c][l] * m + k;
    float s = 0.0f;
    for (int c = 0; c < kPeakChains; c++)
        for (int l = 0; l < kLanes; l++) s += a[c][l];
    *flops = 2.0 * kLanes * kPeakChains * double(iters);
    return s;
}

namespace {

volatile float g_sink;  // where the chains' values go, so that the compiler keeps them

// (seconds, flops) of `threads` threads running `iters` iterations of `chains` each
template <typename Chains>
std::pair<double, double> run_chains(Chains chains, int threads, int64_t iters) {
    double flops = 0.0;
    float sink = 0.0f;
    const auto t0 = std::chrono::steady_clock::now();
#pragma omp parallel num_threads(threads) reduction(+ : flops, sink)
    {
        double f = 0.0;
        sink += chains(iters, &f);
        flops += f;
    }
    const std::chrono::duration<double> dt = std::chrono::steady_clock::now() - t0;
    g_sink = sink;
    return {dt.count(), flops};
}

}  // namespace

double fma_peak_gflops(int threads, double seconds) {
    FG_CHECK(threads >= 1 && threads <= kMaxThreads, "fma_peak_gflops: threads must be between 1 and ",
             kMaxThreads, ", got ", threads);
    // below a millisecond, starting the threads would be most of what is timed
    FG_CHECK(seconds >= 1e-3 && seconds <= 60.0, "fma_peak_gflops: seconds must be in [0.001, 60], got ", seconds);
    float (*chains)(int64_t, double*) = active_isa() == Isa::avx512 ? fma_chains_avx512
                                        : active_isa() == Isa::avx2 ? fma_chains_avx2
                                                                    : fma_chains_generic;
    // calibrate: double the iterations until a run takes a tenth of the time asked for, then run
    // for the whole of it (threads started and caches warmed by then)
    int64_t iters = 1 << 12;
    double t = run_chains(chains, threads, iters).first;
    while (t < seconds / 10 && iters < (int64_t(1) << 40)) {
        iters *= 2;
        t = run_chains(chains, threads, iters).first;
    }
    iters = std::max<int64_t>(1, int64_t(double(iters) * seconds / std::max(t, 1e-9)));
    const auto [dt, flops] = run_chains(chains, threads, iters);
    return flops / dt / 1e9;
}

}  // namespace femtogpt::cpu
