"""Helpers shared by the benchmarks."""

import resource
import statistics
import time


def median_seconds(fn, repeat: int = 7, number: int = 1) -> float:
    """Median wall time of `number` calls of fn, over `repeat` runs (after one warm-up)."""
    fn()
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        for _ in range(number):
            fn()
        times.append((time.perf_counter() - t0) / number)
    return statistics.median(times)


def numpy_threads(n: int):
    """A context that limits numpy's BLAS to n threads (threadpoolctl when installed, else a no-op)."""
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # pragma: no cover
        import contextlib

        return contextlib.nullcontext()
    return threadpool_limits(limits=n, user_api="blas")


def peak_rss_bytes() -> int:
    """This process's peak resident memory: VmHWM on Linux (ru_maxrss there is carried across
    exec, so a script started from a larger process would report its parent's peak), else
    ru_maxrss. The benchmarks keep their own copy of femtogpt.train.process_peak_rss so that
    they measure older versions of femtogpt alike."""
    try:
        with open("/proc/self/status") as f:
            return next(int(line.split()[1]) * 1024 for line in f if line.startswith("VmHWM:"))
    except (OSError, StopIteration):
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
