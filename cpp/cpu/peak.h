// The arithmetic peak of this CPU for the active kernel family, measured: what a kernel's or a
// training step's GFLOP/s is set against (the fraction is its efficiency; nanoGPT's MFU).
//
// Each thread runs kChains independent multiply-add chains held in registers, touching no
// memory. The chains outnumber an FMA's latency times its ports (4 cycles x 2 ports on the x86
// cores we target), so the units never wait on a result. An FMA counts 2 flops a lane; so do
// the generic family's separate multiply and add.
#pragma once

#include <cstdint>

namespace femtogpt::cpu {

constexpr int kPeakChains = 12;

// GFLOP/s of `threads` threads (one, without OpenMP) running the chains for about `seconds`,
// after a calibration run. Throws ValueError for threads outside [1, kMaxThreads] or seconds
// outside [0.001, 60].
double fma_peak_gflops(int threads, double seconds);

// One thread's chains for `iters` iterations: returns a value computed from all of them (so that
// none is optimized away); *flops is set to the operations done.
float fma_chains_generic(int64_t iters, double* flops);
float fma_chains_avx2(int64_t iters, double* flops);
float fma_chains_avx512(int64_t iters, double* flops);

}  // namespace femtogpt::cpu
