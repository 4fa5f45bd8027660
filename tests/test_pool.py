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


MiB = 1 << 18  # float32 elements in one MiB


def test_large_blocks_split_and_merge():
    """Large requests are carved out of free segments (best fit, split) and freed neighbours merge."""
    fg.empty_cache()
    seg = fg.empty(8 * MiB)
    del seg
    s0 = fg.memory_stats()
    a, b = fg.empty(3 * MiB), fg.empty(5 * MiB)  # both carved out of the free 8 MiB segment
    s1 = fg.memory_stats()
    assert s1["os_allocations"] == s0["os_allocations"] and s1["pool_hits"] == s0["pool_hits"] + 2
    assert s1["current_bytes"] - s0["current_bytes"] == 8 << 20
    assert s1["reserved_bytes"] == s0["reserved_bytes"]
    del a, b  # the two pieces merge back into one 8 MiB block
    whole = fg.empty(8 * MiB)
    assert fg.memory_stats()["os_allocations"] == s0["os_allocations"]
    del whole
    fg.empty_cache()  # a wholly free segment goes back to the OS
    s = fg.memory_stats()
    assert s["reserved_bytes"] == s["current_bytes"]


def test_large_requests_take_the_best_fitting_block():
    fg.empty_cache()
    small_seg, big_seg = fg.empty(4 * MiB), fg.empty(8 * MiB)
    del small_seg, big_seg
    s0 = fg.memory_stats()
    a = fg.empty(4 * MiB)  # fits both: takes the 4 MiB one, leaving the 8 MiB one whole
    b = fg.empty(8 * MiB)
    assert fg.memory_stats()["os_allocations"] == s0["os_allocations"]
    c = fg.empty(1 * MiB)  # nothing free left: a new segment
    assert fg.memory_stats()["os_allocations"] == s0["os_allocations"] + 1
    del a, b, c
    fg.empty_cache()


def test_wholly_free_segments_go_back_before_a_new_one_is_mapped():
    """A request no free block fits maps a new segment, and first unmaps the wholly free ones (which could
    not have served it): the pool holds what is in use plus the new segment, not every old size as well."""
    fg.empty_cache()
    keep = fg.empty(2 * MiB)
    fg._core.fill_(keep._impl, 7.0)
    a, b = fg.empty(3 * MiB), fg.empty(4 * MiB)
    del a, b  # two wholly free segments, 3 and 4 MiB
    s0 = fg.memory_stats()
    big = fg.empty(6 * MiB)  # fits neither
    s1 = fg.memory_stats()
    assert s1["os_allocations"] == s0["os_allocations"] + 1 and s1["os_frees"] == s0["os_frees"] + 2
    assert s1["reserved_bytes"] == s1["current_bytes"] == s0["current_bytes"] + (6 << 20)
    assert np.all(keep.numpy() == 7.0)  # the segment in use stays mapped, contents intact
    del big, keep
    fg.empty_cache()


def test_live_tensors_never_overlap_under_churn():
    """Random large and small allocations and frees: every live tensor keeps its own contents."""
    rng = np.random.default_rng(0)
    start = fg.memory_stats()["current_bytes"]
    live = {}
    for step in range(400):
        if live and rng.random() < 0.45:
            key = list(live)[rng.integers(len(live))]
            t, value = live.pop(key)
            assert np.all(t.numpy() == value), "a live tensor was overwritten"
        else:
            n = int(rng.choice([rng.integers(1, 5000), rng.integers(MiB // 4, 6 * MiB)]))
            t = fg.empty(n)
            fg._core.fill_(t._impl, float(step))
            live[step] = (t, float(step))
    for t, value in live.values():
        assert np.all(t.numpy() == value)
    del live, t
    assert fg.memory_stats()["current_bytes"] == start


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
