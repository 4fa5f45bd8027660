"""Quick femtogpt-vs-numpy float32 matmul comparison for the tuning loop.

    PYTHONPATH=python python3 cpp/dev/matmul_vs_numpy.py
    env: THREADS=1,2  ISAS=avx2,generic  SHAPES=512x512x512,...  TA=1 TB=1  ROUNDS=3  WALL=1  BEST=1

numpy and femtogpt are timed in interleaved rounds (median of repeats per round,
median over rounds) so that noise from other processes hits both alike. With one
thread the clock is the thread's CPU time (time.thread_time), which other
processes' time slices do not inflate; set WALL=1 for wall-clock time. BEST=1 takes
the fastest repeat instead of the median: on a crowded machine, where a thread
that loses its core stalls the other at the next barrier, it shows what the code
does when it has the cores (report which one you quote). numpy's
BLAS threads are set with threadpoolctl (required here).
"""

import os
import time

import numpy as np
from threadpoolctl import threadpool_limits

from femtogpt import _core

SHAPES = [(512, 512, 512), (2048, 256, 768), (2048, 768, 256), (4096, 512, 2048),
          (2048, 64, 192), (2048, 64, 256), (2048, 256, 64)]


def median_time(fn, reps, clock):
    fn()
    times = []
    for _ in range(reps):
        t0 = clock()
        fn()
        times.append(clock() - t0)
    return float(np.min(times) if os.environ.get("BEST") else np.median(times))


def main():
    shapes = SHAPES
    if os.environ.get("SHAPES"):
        shapes = [tuple(int(x) for x in s.split("x")) for s in os.environ["SHAPES"].split(",")]
    isas = [i for i in os.environ.get("ISAS", _core.available_isas()[-1]).split(",") if i in _core.available_isas()]
    threads = [int(x) for x in os.environ.get("THREADS", "1,2").split(",")]
    ta, tb = os.environ.get("TA") == "1", os.environ.get("TB") == "1"
    rounds = int(os.environ.get("ROUNDS", "3"))
    rng = np.random.default_rng(0)
    print(f"(M,K,N) GFLOP/s, ta={int(ta)} tb={int(tb)}; ratio = femtogpt / numpy")
    for nt in threads:
        _core.set_num_threads(nt)
        clock = time.thread_time if nt == 1 and not os.environ.get("WALL") else time.perf_counter
        with threadpool_limits(nt, user_api="blas"):
            for M, K, N in shapes:
                a = rng.standard_normal((K, M) if ta else (M, K)).astype(np.float32)
                b = rng.standard_normal((N, K) if tb else (K, N)).astype(np.float32)
                c = np.empty((M, N), np.float32)
                opa, opb = (a.T if ta else a), (b.T if tb else b)
                A, B, C = _core.from_numpy(a), _core.from_numpy(b), _core.from_numpy(c)
                flops = 2.0 * M * N * K
                reps = max(5, min(51, int(1e9 / flops)))
                t_np, t_fg = [], {isa: [] for isa in isas}
                for _ in range(rounds):
                    t_np.append(median_time(lambda: np.matmul(opa, opb, out=c), reps, clock))
                    for isa in isas:
                        _core.set_cpu_isa(isa)
                        t_fg[isa].append(median_time(lambda: _core.matmul(A, B, ta, tb, out=C), reps, clock))
                tn = np.median(t_np)
                row = f"threads={nt} {M:5d}x{K:4d}x{N:5d}  numpy {flops / tn / 1e9:6.1f}"
                for isa in isas:
                    t = np.median(t_fg[isa])
                    row += f"  {isa} {flops / t / 1e9:6.1f} ({tn / t:4.2f}x)"
                print(row, flush=True)


if __name__ == "__main__":
    main()
