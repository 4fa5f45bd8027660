"""float32 matmul: femtogpt's packed kernels against numpy's BLAS, in the same run.

`time_*` are asv's timings; `track_gflops_*` report GFLOP/s from the median of
repeats measured inside one call, and `track_ratio_vs_numpy` femtogpt's GFLOP/s over
numpy's, the two measured interleaved so that machine noise hits both alike.

numpy's BLAS threads are set with threadpoolctl when it is installed (it is not a
dependency of femtogpt). Without it, numpy keeps the thread count its BLAS started
with (OPENBLAS_NUM_THREADS / OMP_NUM_THREADS, default all cores), so the *Numpy
classes skip the other thread counts rather than compare unfairly.
"""

import os
import time

import numpy as np

from femtogpt import _core

try:
    from threadpoolctl import threadpool_limits
except ImportError:  # optional; see the module docstring
    threadpool_limits = None

# (M, K, N): square; GPT-2-small-like linear layers; a large one; the small model's
# (n_embd 64: qkv 192, mlp 256, and back to 64).
SHAPES = ["512x512x512", "2048x256x768", "2048x768x256", "4096x512x2048", "2048x64x192", "2048x64x256", "2048x256x64"]
THREADS = [1, 2]


# Seconds to wait before switching between numpy and femtogpt in an interleaved measurement
# (see MatmulNumpy.track_ratio_vs_numpy).
_SWITCH_PAUSE = 0.3


def _dims(shape):
    return tuple(int(x) for x in shape.split("x"))


def _median_seconds(fn, min_time=0.2, min_reps=5, max_reps=200):
    fn()  # warm-up
    times = []
    start = time.perf_counter()
    while len(times) < min_reps or (time.perf_counter() - start < min_time and len(times) < max_reps):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return float(np.median(times))


def _blas_threads_fixed(threads):
    """True when numpy's BLAS can be held to `threads` threads."""
    if threadpool_limits is not None:
        return True
    env = os.environ.get("OPENBLAS_NUM_THREADS") or os.environ.get("OMP_NUM_THREADS")
    return env is not None and env.strip() == str(threads)


class _Base:
    def _setup_threads(self, threads):
        self._limits = threadpool_limits(limits=threads, user_api="blas") if threadpool_limits else None
        self._threads_before = _core.get_num_threads()
        _core.set_num_threads(threads)

    def teardown(self, *args):
        if getattr(self, "_limits", None) is not None:
            self._limits.restore_original_limits()
        if hasattr(self, "_threads_before"):
            _core.set_num_threads(self._threads_before)


class _MatmulData(_Base):
    """C (M,N) = A (M,K) @ B (K,N)."""

    params = [SHAPES, THREADS]
    param_names = ["MxKxN", "threads"]

    def setup(self, shape, threads):
        M, K, N = _dims(shape)
        rng = np.random.default_rng(0)
        self.a = rng.standard_normal((M, K)).astype(np.float32)
        self.b = rng.standard_normal((K, N)).astype(np.float32)
        self.c = np.empty((M, N), np.float32)
        self.ta, self.tb = _core.from_numpy(self.a), _core.from_numpy(self.b)
        self.tc = _core.from_numpy(self.c)
        self.flops = 2.0 * M * N * K
        self._setup_threads(threads)

    def _femtogpt(self):
        _core.matmul(self.ta, self.tb, out=self.tc)

    def _numpy(self):
        np.matmul(self.a, self.b, out=self.c)


class Matmul(_MatmulData):
    """femtogpt's products."""

    def time_femtogpt(self, shape, threads):
        self._femtogpt()

    def track_gflops_femtogpt(self, shape, threads):
        return self.flops / _median_seconds(self._femtogpt) / 1e9

    track_gflops_femtogpt.unit = "GFLOP/s"


class MatmulNumpy(_MatmulData):
    """The same products with numpy (its BLAS), and femtogpt's ratio to it. Skipped
    where numpy's BLAS threads cannot be set (no threadpoolctl)."""

    def setup(self, shape, threads):
        if not _blas_threads_fixed(threads):
            raise NotImplementedError("numpy's BLAS threads cannot be set without threadpoolctl")
        super().setup(shape, threads)

    def time_numpy(self, shape, threads):
        self._numpy()

    def track_gflops_numpy(self, shape, threads):
        return self.flops / _median_seconds(self._numpy) / 1e9

    track_gflops_numpy.unit = "GFLOP/s"

    def track_ratio_vs_numpy(self, shape, threads):
        """femtogpt GFLOP/s / numpy GFLOP/s (> 1: femtogpt faster), interleaved medians.

        Each library's idle threads spin for a while after its last call (OpenMP's, and
        OpenBLAS's for up to about 2^28 cycles); with 2 threads on 2 cores the other library
        would run against them and slow many times over (seen without the pause: ratios of
        0.02 to 0.5 for shapes whose separate GFLOP/s tracks agree within 10%). So each
        switch waits _SWITCH_PAUSE seconds first, long enough for both to go to sleep."""
        ours, theirs = [], []
        for _ in range(5):
            time.sleep(_SWITCH_PAUSE)
            ours.append(_median_seconds(self._femtogpt, min_time=0.05, min_reps=3))
            time.sleep(_SWITCH_PAUSE)
            theirs.append(_median_seconds(self._numpy, min_time=0.05, min_reps=3))
        return float(np.median(theirs) / np.median(ours))

    track_ratio_vs_numpy.unit = "ratio"


class MatmulBias(_Base):
    """A linear layer's forward, x (M,K) @ W (N,K)^T + b (N), with the bias fused into the product
    (the micro-kernel adds it to a tile as it stores it) against the same product without one, in
    the same run: the bias's cost, as a ratio of times (1.0: free)."""

    params = [["2048x64x192", "2048x64x256", "4096x384x1152"], THREADS]
    param_names = ["MxKxN", "threads"]

    def setup(self, shape, threads):
        M, K, N = _dims(shape)
        rng = np.random.default_rng(0)
        self.x = _core.from_numpy(rng.standard_normal((M, K)).astype(np.float32))
        self.w = _core.from_numpy(rng.standard_normal((N, K)).astype(np.float32))
        self.bias = _core.from_numpy(rng.standard_normal(N).astype(np.float32))
        self.out = _core.from_numpy(np.empty((M, N), np.float32))
        self._setup_threads(threads)

    def _plain(self):
        _core.matmul(self.x, self.w, False, True, out=self.out)

    def _with_bias(self):
        _core.matmul(self.x, self.w, False, True, out=self.out, bias=self.bias)

    def time_with_bias(self, shape, threads):
        self._with_bias()

    def track_bias_time_ratio(self, shape, threads):
        """median time with the bias / without, the two alternated over rounds"""
        plain, biased = [], []
        for _ in range(5):
            plain.append(_median_seconds(self._plain, min_time=0.05, min_reps=3))
            biased.append(_median_seconds(self._with_bias, min_time=0.05, min_reps=3))
        return float(np.median(biased) / np.median(plain))

    track_bias_time_ratio.unit = "ratio"


class _TransposedData(_Base):
    """The backward pass's layouts: op(A) @ op(B) with A or B stored transposed."""

    params = [["nn", "nt", "tn", "tt"], THREADS]
    param_names = ["layout", "threads"]

    def setup(self, layout, threads):
        M, K, N = 2048, 256, 768
        self.trans_a, self.trans_b = layout[0] == "t", layout[1] == "t"
        rng = np.random.default_rng(0)
        self.a = rng.standard_normal((K, M) if self.trans_a else (M, K)).astype(np.float32)
        self.b = rng.standard_normal((N, K) if self.trans_b else (K, N)).astype(np.float32)
        self.c = np.empty((M, N), np.float32)
        self.ta, self.tb = _core.from_numpy(self.a), _core.from_numpy(self.b)
        self.tc = _core.from_numpy(self.c)
        self.opa = self.a.T if self.trans_a else self.a
        self.opb = self.b.T if self.trans_b else self.b
        self._setup_threads(threads)


class MatmulTransposed(_TransposedData):
    def time_femtogpt(self, layout, threads):
        _core.matmul(self.ta, self.tb, self.trans_a, self.trans_b, out=self.tc)


class MatmulTransposedNumpy(_TransposedData):
    def setup(self, layout, threads):
        if not _blas_threads_fixed(threads):
            raise NotImplementedError("numpy's BLAS threads cannot be set without threadpoolctl")
        super().setup(layout, threads)

    def time_numpy(self, layout, threads):
        np.matmul(self.opa, self.opb, out=self.c)


class _BatchedData(_Base):
    """Attention's per-head products: (B*H, T, hs) @ (B*H, hs, T) and back."""

    params = [["128x64x16x64", "128x64x64x16", "32x256x64x256"], THREADS]
    param_names = ["batch x M x K x N", "threads"]

    def setup(self, shape, threads):
        batch, M, K, N = (int(x) for x in shape.split("x"))
        rng = np.random.default_rng(0)
        self.a = rng.standard_normal((batch, M, K)).astype(np.float32)
        self.b = rng.standard_normal((batch, K, N)).astype(np.float32)
        self.c = np.empty((batch, M, N), np.float32)
        self.ta, self.tb = _core.from_numpy(self.a), _core.from_numpy(self.b)
        self.tc = _core.from_numpy(self.c)
        self._setup_threads(threads)


class MatmulBatched(_BatchedData):
    def time_femtogpt(self, shape, threads):
        _core.matmul(self.ta, self.tb, out=self.tc)


class MatmulBatchedNumpy(_BatchedData):
    def setup(self, shape, threads):
        if not _blas_threads_fixed(threads):
            raise NotImplementedError("numpy's BLAS threads cannot be set without threadpoolctl")
        super().setup(shape, threads)

    def time_numpy(self, shape, threads):
        np.matmul(self.a, self.b, out=self.c)
