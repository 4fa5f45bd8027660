// Attention harness (as llm.c's dev/cpu): validates the flash path against the standard
// one on a causal problem, then times the tile micro-kernel alone and flash / standard
// forward and forward+backward, reporting GFLOP/s (causal forward counts 2*B*H*T^2*D,
// forward+backward 3.5 times that).
//
//   build: CMake with -DFEMTOGPT_DEV_HARNESSES=ON once cpp/dev/CMakeLists.txt has
//   include(attention.cmake) (target dev_attention); or by hand from the repository root:
//     F="-O3 -g -fopenmp -std=c++17 -Icpp"; mkdir -p /tmp/ah &&
//     g++ $F -mavx2 -mfma -c cpp/cpu/attention_avx2.cpp -o /tmp/ah/avx2.o &&
//     g++ $F -mavx512f -mavx512dq -mavx512bw -mavx512vl -mavx2 -mfma -c cpp/cpu/attention_avx512.cpp
//       -o /tmp/ah/avx512.o &&
//     g++ $F -mavx2 -mfma -c cpp/cpu/matmul_kernel_avx2.cpp -o /tmp/ah/mk2.o &&
//     g++ $F -mavx512f -mavx512dq -mavx512bw -mavx512vl -c cpp/cpu/matmul_kernel_avx512.cpp -o /tmp/ah/mk5.o &&
//     g++ $F cpp/dev/attention_harness.cpp cpp/cpu/attention_flash.cpp cpp/cpu/attention_standard.cpp
//       cpp/cpu/isa.cpp cpp/cpu/matmul.cpp cpp/cpu/matmul_reference.cpp cpp/cpu/matmul_kernel_generic.cpp
//       cpp/pool.cpp /tmp/ah/*.o -o /tmp/attention_harness
//   run: [B=1 H=8 D=64 BQ=64 BK=64 REPS=n CPUTIME=1 NOVALIDATE=1 STANDARD=1 FUSED=1] /tmp/attention_harness [T ...]
//   (OMP_NUM_THREADS and FEMTOGPT_ISA apply; T defaults to 1024 4096). FUSED=1 also times the
//   heads read in place from a (B,T,3C) projection, as the training step calls them (the
//   femto preset: B=32 H=4 D=16 FUSED=1 ... 64).
//   At T=64 use REPS in the hundreds. CPUTIME=1 undercounts multi-thread runs of calls this
//   short (a running thread's CPU time reaches the process clock only at a scheduler tick):
//   quote wall time for 2 threads.
#include <algorithm>
#include <ctime>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <random>
#include <vector>

#include "cpu/attention.h"
#include "cpu/isa.h"
#include "parallel.h"

using namespace femtogpt;

namespace {

double clock_seconds(clockid_t id) {
    timespec ts;
    clock_gettime(id, &ts);
    return double(ts.tv_sec) + 1e-9 * double(ts.tv_nsec);
}

// Median over `reps` runs (after one warm-up) of wall time, or with CPUTIME=1 of process
// CPU time over the thread count: on a shared development machine CPU time is what a kernel
// change moves, but it hides idle threads (load imbalance), which wall time on a quiet
// machine shows.
template <typename F>
double median_time(F&& f, int reps) {
    static const bool cpu = std::getenv("CPUTIME") != nullptr;
    const clockid_t id = cpu ? CLOCK_PROCESS_CPUTIME_ID : CLOCK_MONOTONIC;
    f();
    std::vector<double> ts;
    for (int i = 0; i < reps; i++) {
        double t0 = clock_seconds(id);
        f();
        ts.push_back((clock_seconds(id) - t0) / (cpu ? num_threads() : 1));
    }
    std::sort(ts.begin(), ts.end());
    return ts[ts.size() / 2];
}

// The tile timings run on one thread: its own CPU time.
template <typename F>
double thread_time(F&& f, int reps) {
    double best = 1e30;
    for (int i = 0; i < reps; i++) {
        double t0 = clock_seconds(CLOCK_THREAD_CPUTIME_ID);
        f();
        best = std::min(best, clock_seconds(CLOCK_THREAD_CPUTIME_ID) - t0);
    }
    return best;
}

std::vector<float> randn(size_t n, std::mt19937& g) {
    std::normal_distribution<float> d;
    std::vector<float> v(n);
    for (auto& x : v) x = d(g);
    return v;
}

using cpu::attn_detail::TileBand;

void time_tile(const cpu::attn_detail::TileKernels<float>& kn) {
    const int64_t M = 64, N = 64, K = 64;
    std::mt19937 g(1);
    auto A = randn(M * K, g), B = randn(K * N, g), C = randn(M * N, g);
    const int reps = 20000;
    double t = thread_time([&] { for (int i = 0; i < reps; i++) kn.gemm(C.data(), N, A.data(), K, 1, B.data(), N, M, N, K, true, {}); }, 5);
    std::printf("tile gemm 64x64x64 (A):    %6.1f GFLOP/s\n", 2.0 * M * N * K * reps / t / 1e9);
    t = thread_time([&] { for (int i = 0; i < reps; i++) kn.gemm(C.data(), N, A.data(), 1, K, B.data(), N, M, N, K, true, {}); }, 5);
    std::printf("tile gemm 64x64x64 (A^T):  %6.1f GFLOP/s\n", 2.0 * M * N * K * reps / t / 1e9);
    std::vector<float> tile(64 * 64), dtile(64 * 64, 0.5f), sub(64, 1.0f), d(64, 0.25f);
    const int treps = reps / 10;
    t = thread_time([&] { for (int i = 0; i < treps; i++) { tile[0] = float(i & 7); kn.pds_tile(tile.data(), dtile.data(), 64, 64, 61, 64, TileBand::kAll, 0.01f, sub.data(), d.data(), 0.125f); } }, 5);
    std::printf("P and dS tile 64 x 61/64:  %6.2f ns/element\n", t / (treps * 64.0 * 61) * 1e9);
}

}  // namespace

int main(int argc, char** argv) {
    if (const char* isa = std::getenv("FEMTOGPT_ISA")) cpu::set_active_isa(cpu::parse_isa(isa));
    const auto& kn = cpu::active_isa() == cpu::Isa::avx512 ? cpu::attn_detail::tile_kernels_avx512()
                     : cpu::active_isa() == cpu::Isa::avx2  ? cpu::attn_detail::tile_kernels_avx2()
                                                            : cpu::attn_detail::tile_kernels_generic<float>();
    std::printf("isa %s, %d threads\n", cpu::isa_name(cpu::active_isa()), num_threads());
    time_tile(kn);
    std::vector<int64_t> Ts;
    for (int i = 1; i < argc; i++) Ts.push_back(std::atoll(argv[i]));
    if (Ts.empty()) Ts = {1024, 4096};
    auto env = [](const char* name, int64_t dflt) { return std::getenv(name) ? std::atoll(std::getenv(name)) : dflt; };
    const int64_t B = env("B", 1), H = env("H", 8), D = env("D", 64);
    const float scale = 1.0f / std::sqrt(float(D));
    const int64_t bq = std::getenv("BQ") ? std::atoll(std::getenv("BQ")) : 64;
    const int64_t bk = std::getenv("BK") ? std::atoll(std::getenv("BK")) : 64;
    const bool validate = !std::getenv("NOVALIDATE");
    for (int64_t T : Ts) {
        std::mt19937 g(T);
        size_t n = size_t(B * H * T * D);
        auto q = randn(n, g), k = randn(n, g), v = randn(n, g), dout = randn(n, g);
        std::vector<float> out(n), lse(size_t(B * H * T)), dq(n), dk(n), dv(n);
        const double flops = 2.0 * B * H * T * T * D;
        const int reps = int(env("REPS", T <= 1024 ? 9 : 5));
        double tf = median_time([&] {
            cpu::attention_flash_forward<float>(out.data(), lse.data(), q.data(), k.data(), v.data(), B, H, T, T, D,
                                                true, scale, bq, bk);
        }, reps);
        double tb = median_time([&] {
            cpu::attention_flash_backward<float>(dq.data(), dk.data(), dv.data(), dout.data(), q.data(), k.data(),
                                                 v.data(), out.data(), lse.data(), B, H, T, T, D, true, scale, bq, bk);
        }, reps);
        std::printf("flash B=%lld H=%lld D=%lld T=%5lld b%lldx%lld: fwd %8.2f ms (%5.1f GFLOP/s)  bwd %8.2f ms (%5.1f GFLOP/s)  fwd+bwd %8.2f ms "
                    "(%5.1f GFLOP/s)\n",
                    (long long)B, (long long)H, (long long)D, (long long)T, (long long)bq, (long long)bk, tf * 1e3,
                    flops / tf / 1e9, tb * 1e3, 2.5 * flops / tb / 1e9, (tf + tb) * 1e3, 3.5 * flops / (tf + tb) / 1e9);
        if (std::getenv("FUSED")) {  // the same on a GPT's fused projection, as attention_qkv_* call it
            // qkv (B,T,3,H,D) from q, k, v (B,H,T,D); y and dout (B,T,H,D); dqkv like qkv
            const int64_t C = H * D;
            std::vector<float> qkv(3 * n), y(n), dy(n), dqkv(3 * n), lse2(size_t(B * H * T));
            for (int64_t b = 0; b < B; b++)
                for (int64_t h = 0; h < H; h++)
                    for (int64_t t = 0; t < T; t++)
                        for (int64_t d = 0; d < D; d++) {
                            const size_t src = size_t(((b * H + h) * T + t) * D + d);
                            const size_t row = size_t(b * T + t);
                            qkv[row * 3 * C + h * D + d] = q[src];
                            qkv[row * 3 * C + C + h * D + d] = k[src];
                            qkv[row * 3 * C + 2 * C + h * D + d] = v[src];
                            dy[row * C + h * D + d] = dout[src];
                        }
            auto part = [&](float* x, int which) { return cpu::Heads<float>{x + which * C, T * 3 * C, D, 3 * C}; };
            auto cpart = [&](const float* x, int which) {
                return cpu::Heads<const float>{x + which * C, T * 3 * C, D, 3 * C};
            };
            const cpu::Heads<float> yh{y.data(), T * C, D, C};
            const cpu::Heads<const float> ych{y.data(), T * C, D, C}, dyh{dy.data(), T * C, D, C};
            const float* x = qkv.data();
            double ff = median_time([&] {
                cpu::attention_flash_forward<float>(yh, lse2.data(), cpart(x, 0), cpart(x, 1), cpart(x, 2), B, H, T, T,
                                                    D, true, scale, bq, bk);
            }, reps);
            double fb = median_time([&] {
                cpu::attention_flash_backward<float>(part(dqkv.data(), 0), part(dqkv.data(), 1), part(dqkv.data(), 2),
                                                     dyh, cpart(x, 0), cpart(x, 1), cpart(x, 2), ych, lse2.data(), B,
                                                     H, T, T, D, true, scale, bq, bk);
            }, reps);
            std::printf("  fused (B,T,3C): fwd %8.4f ms  bwd %8.4f ms  (lse %s the contiguous run's)\n", ff * 1e3,
                        fb * 1e3, lse2 == lse ? "equals" : "DIFFERS from");
        }
        if (validate && T <= 1024) {  // validate against the standard path
            std::vector<float> out2(n), P(size_t(B * H * T * T)), dq2(n), dk2(n), dv2(n);
            cpu::attention_standard_forward<float>(out2.data(), P.data(), q.data(), k.data(), v.data(), B, H, T, T,
                                                   D, true, scale);
            cpu::attention_standard_backward<float>(dq2.data(), dk2.data(), dv2.data(), dout.data(), q.data(),
                                                    k.data(), v.data(), out2.data(), P.data(), B, H, T, T, D, true,
                                                    scale);
            double e[4] = {0, 0, 0, 0};
            for (size_t i = 0; i < n; i++) {
                e[0] = std::max(e[0], double(std::fabs(out[i] - out2[i])));
                e[1] = std::max(e[1], double(std::fabs(dq[i] - dq2[i])));
                e[2] = std::max(e[2], double(std::fabs(dk[i] - dk2[i])));
                e[3] = std::max(e[3], double(std::fabs(dv[i] - dv2[i])));
            }
            std::printf("  max |flash - standard|: out %.2e dq %.2e dk %.2e dv %.2e\n", e[0], e[1], e[2], e[3]);
        }
        if (std::getenv("STANDARD") && T <= 4096) {  // time the standard path too (it holds P: B*H*T^2 floats)
            std::vector<float> out2(n), P(size_t(B * H * T * T)), dq2(n), dk2(n), dv2(n);
            double sf = median_time([&] {
                cpu::attention_standard_forward<float>(out2.data(), P.data(), q.data(), k.data(), v.data(), B, H, T,
                                                       T, D, true, scale);
            }, reps);
            double sb = median_time([&] {
                cpu::attention_standard_backward<float>(dq2.data(), dk2.data(), dv2.data(), dout.data(), q.data(),
                                                        k.data(), v.data(), out2.data(), P.data(), B, H, T, T, D,
                                                        true, scale);
            }, reps);
            std::printf("  standard: fwd %8.2f ms  fwd+bwd %8.2f ms  -> standard/flash fwd %.2fx, fwd+bwd %.2fx\n",
                        sf * 1e3, (sf + sb) * 1e3, sf / tf, (sf + sb) / (tf + tb));
        }
    }
    return 0;
}
