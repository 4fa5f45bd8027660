"""The caching allocator: statistics, reuse, no leaks, thread safety, FEMTOGPT_POOL=0."""

import os
import subprocess
import sys
import threading

import numpy as np

import femtogpt as fg


def workload():
    ts = [fg.zeros(n, 17) for n in (1, 5, 100, 1000, 33)]
    a = fg.randn(64, 48, seed=0)
    b = fg.randn(48, 32, seed=1)
    c = fg.matmul(a, b)
    return sum(t.nbytes for t in ts) + c.nbytes


def test_current_bytes_returns_to_start():
    start = fg.memory_stats()["current_bytes"]
    workload()
    assert fg.memory_stats()["current_bytes"] == start


def test_peak_tracks_high_water_mark():
    fg.reset_peak_memory_stats()
    base = fg.memory_stats()["current_bytes"]
    t = fg.empty(1 << 20)  # 4 MiB
    peak = fg.memory_stats()["peak_bytes"]
    assert peak >= base + (4 << 20)
    del t
    assert fg.memory_stats()["peak_bytes"] == peak
    fg.reset_peak_memory_stats()
    assert fg.memory_stats()["peak_bytes"] == fg.memory_stats()["current_bytes"]


def test_repeated_workload_stops_asking_the_os():
    workload()
    before = fg.memory_stats()
    for _ in range(5):
        workload()
    after = fg.memory_stats()
    assert after["os_allocations"] == before["os_allocations"]
    assert after["pool_hits"] > before["pool_hits"]
    assert after["alloc_requests"] > before["alloc_requests"]


def test_a_large_request_borrows_a_free_block_of_a_larger_class():
    """A large request whose class has no free block takes the smallest free block up to twice its
    size instead of asking the OS; freed, the block goes back to its own class."""
    fg.empty_cache()
    big = fg.empty(3 << 18)  # 3 MiB (a class of its own)
    del big
    s0 = fg.memory_stats()
    small = fg.empty(5 << 17)  # 2.5 MiB: no free block of its class, borrows the 3 MiB one
    s1 = fg.memory_stats()
    assert s1["os_allocations"] == s0["os_allocations"] and s1["pool_hits"] == s0["pool_hits"] + 1
    assert s1["current_bytes"] - s0["current_bytes"] == 3 << 20  # it occupies the whole lent block
    del small
    assert fg.memory_stats()["current_bytes"] == s0["current_bytes"]
    again = fg.empty(3 << 18)  # the block is back in the 3 MiB class
    assert fg.memory_stats()["os_allocations"] == s0["os_allocations"]
    del again
    far = fg.empty(1 << 18)  # 1 MiB: the 3 MiB block is more than twice its size
    assert fg.memory_stats()["os_allocations"] == s0["os_allocations"] + 1
    del far
    fg.empty_cache()


def test_empty_cache_releases_reserved_memory():
    t = fg.empty(1 << 18)
    del t
    assert fg.memory_stats()["reserved_bytes"] > fg.memory_stats()["current_bytes"]
    fg.empty_cache()
    s = fg.memory_stats()
    assert s["reserved_bytes"] == s["current_bytes"]


def test_concurrent_allocation_from_python_threads():
    start = fg.memory_stats()["current_bytes"]
    errors = []

    def work(seed):
        try:
            rng = np.random.default_rng(seed)
            for _ in range(200):
                n = int(rng.integers(1, 5000))
                t = fg.tensor(np.full(n, seed, np.float32))
                assert (t.numpy() == seed).all()
        except Exception as e:  # pragma: no cover - reported below
            errors.append(e)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(8)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert not errors
    assert fg.memory_stats()["current_bytes"] == start


def test_pool_off_returns_every_free_to_the_os():
    code = (
        "import femtogpt as fg\n"
        "for _ in range(3):\n"
        "    t = fg.zeros(1000); del t\n"
        "s = fg.memory_stats()\n"
        "print(s['pooling'], s['os_allocations'], s['pool_hits'], s['reserved_bytes'] == s['current_bytes'])\n"
    )
    out = subprocess.run([sys.executable, "-c", code], env={**os.environ, "FEMTOGPT_POOL": "0"},
                         capture_output=True, text=True, check=True)
    pooling, os_allocs, hits, balanced = out.stdout.split()
    assert pooling == "False" and int(os_allocs) >= 3 and hits == "0" and balanced == "True"
