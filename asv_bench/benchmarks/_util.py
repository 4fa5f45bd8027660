"""Helpers shared by the benchmarks."""

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
