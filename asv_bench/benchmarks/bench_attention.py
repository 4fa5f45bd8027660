"""Causal attention, flash against the standard path (the reference) in the same run.

B=1, H=8, D=64, float32, causal, T in {256, 1024, 4096, 8192}, 1 and 2 threads.
`time_*` are asv timings of the forward and of forward+backward; `track_gflops_*` count
a causal forward as 2*B*H*T^2*D FLOPs and forward+backward as 3.5 times that;
`track_fraction_of_peak_forward_backward` divides that rate by `fma_peak_gflops` measured
right after it in the same process; `track_peak_memory_*` is the pool's peak above what was
held before the call (bytes);
`track_ratio_standard_over_flash` is the standard path's forward+backward time over
flash's, the two measured interleaved so that machine noise hits both alike.

The standard path is skipped at T=8192: its probabilities alone would be
B*H*T^2*4 bytes = 2 GiB (plus as much again for dS in backward).
"""

import time

import numpy as np

from femtogpt import _core

B, H, D = 1, 8, 64
TS = [256, 1024, 4096, 8192]
THREADS = [1, 2]
IMPLS = ["flash", "standard"]
STANDARD_MAX_T = 4096


def _flops(T):
    return 2.0 * B * H * T * T * D


def _median_seconds(fn, min_time=0.5, min_reps=3, max_reps=50):
    fn()  # warm-up (fills the pool)
    times = []
    start = time.perf_counter()
    while len(times) < min_reps or (time.perf_counter() - start < min_time and len(times) < max_reps):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return float(np.median(times))


class _Base:
    timeout = 600
    number = 1
    repeat = (1, 5, 20.0)
    warmup_time = 0

    def _setup(self, impl, T, threads):
        if impl == "standard" and T > STANDARD_MAX_T:
            raise NotImplementedError(
                f"standard attention at T={T} would hold P of {B * H * T * T * 4 / 2**30:.0f} GiB")
        self.impl = impl
        self.scale = 1.0 / np.sqrt(D)
        rng = np.random.default_rng(0)
        self.q, self.k, self.v, self.dout = (
            _core.from_numpy(rng.standard_normal((B, H, T, D)).astype(np.float32)) for _ in range(4))
        self._threads_before = _core.get_num_threads()
        _core.set_num_threads(threads)

    def teardown(self, *args):
        if hasattr(self, "_threads_before"):
            _core.set_num_threads(self._threads_before)

    def _forward(self, impl=None):
        return _core.attention_forward(self.q, self.k, self.v, True, self.scale, impl or self.impl)

    def _forward_backward(self, impl=None):
        impl = impl or self.impl
        out, saved = _core.attention_forward(self.q, self.k, self.v, True, self.scale, impl)
        return _core.attention_backward(self.dout, self.q, self.k, self.v, out, saved, True, self.scale, impl)


class Attention(_Base):
    params = [IMPLS, TS, THREADS]
    param_names = ["impl", "T", "threads"]

    def setup(self, impl, T, threads):
        self._setup(impl, T, threads)
        # One untimed call first: `asv run --quick` times a single call, which would otherwise be the
        # one that fills the pool and faults in its pages (seen: 326 ms at T=4096 where the median
        # of repeats in the same run was 179 ms)
        self._forward_backward()

    def time_forward(self, impl, T, threads):
        self._forward()

    def time_forward_backward(self, impl, T, threads):
        self._forward_backward()

    def track_gflops_forward(self, impl, T, threads):
        return _flops(T) / _median_seconds(self._forward) / 1e9

    track_gflops_forward.unit = "GFLOP/s"

    def track_gflops_forward_backward(self, impl, T, threads):
        return 3.5 * _flops(T) / _median_seconds(self._forward_backward) / 1e9

    track_gflops_forward_backward.unit = "GFLOP/s"

    def track_fraction_of_peak_forward_backward(self, impl, T, threads):
        """track_gflops_forward_backward over fma_peak_gflops on as many threads, measured right after it
        in the same process (the issue reports GFLOP/s against the machine's two-core peak)"""
        if not hasattr(_core, "fma_peak_gflops"):
            raise NotImplementedError("fma_peak_gflops: not in this build of femtogpt")
        rate = 3.5 * _flops(T) / _median_seconds(self._forward_backward) / 1e9
        return rate / _core.fma_peak_gflops(threads, 0.5)

    track_fraction_of_peak_forward_backward.unit = "ratio"

    def track_peak_memory_forward_backward(self, impl, T, threads):
        before = _core.memory_stats()["current_bytes"]
        _core.reset_peak_memory_stats()
        grads = self._forward_backward()
        del grads
        return _core.memory_stats()["peak_bytes"] - before

    track_peak_memory_forward_backward.unit = "bytes"


class AttentionRatio(_Base):
    """Standard over flash forward+backward time (higher is better for flash)."""

    params = [[1024, 4096], THREADS]
    param_names = ["T", "threads"]

    def setup(self, T, threads):
        self._setup("flash", T, threads)

    def track_ratio_standard_over_flash(self, T, threads):
        flash, standard = [], []
        self._forward_backward("flash")
        self._forward_backward("standard")
        for _ in range(3):
            t0 = time.perf_counter()
            self._forward_backward("flash")
            t1 = time.perf_counter()
            self._forward_backward("standard")
            t2 = time.perf_counter()
            flash.append(t1 - t0)
            standard.append(t2 - t1)
        return float(np.median(standard) / np.median(flash))

    track_ratio_standard_over_flash.unit = "x"
