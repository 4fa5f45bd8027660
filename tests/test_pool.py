"""The caching allocator: statistics, reuse, no leaks, thread safety, FEMTOGPT_POOL=0."""

import os
import subprocess
import sys
import threading

import numpy as np
import pytest

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
    """Large requests are carved out of free blocks (split) and freed neighbours merge."""
    fg.empty_cache()
    seg = fg.empty(8 * MiB)
    del seg
    s0 = fg.memory_stats()
    a, b = fg.empty(3 * MiB), fg.empty(5 * MiB)  # both carved out of the free 8 MiB block
    s1 = fg.memory_stats()
    assert s1["os_allocations"] == s0["os_allocations"] and s1["pool_hits"] == s0["pool_hits"] + 2
    assert s1["current_bytes"] - s0["current_bytes"] == 8 << 20
    assert s1["reserved_bytes"] == s0["reserved_bytes"]
    del a, b  # the two pieces merge back into one 8 MiB block
    whole = fg.empty(8 * MiB)
    assert fg.memory_stats()["os_allocations"] == s0["os_allocations"]
    del whole
    fg.empty_cache()  # the free block at the region's end goes back to the OS
    s = fg.memory_stats()
    assert s["reserved_bytes"] == s["current_bytes"]


def test_large_requests_take_the_lowest_free_block_that_fits():
    """First fit by address: a 4 MiB request takes the head of a lower free 8 MiB block rather than a
    higher free 4 MiB one, so an 8 MiB request after it finds no free block and the pool grows."""
    fg.empty_cache()
    low, wall1, high, wall2 = fg.empty(8 * MiB), fg.empty(1 * MiB), fg.empty(4 * MiB), fg.empty(1 * MiB)
    del low, high  # free: 8 MiB, then (above a block in use) 4 MiB
    s0 = fg.memory_stats()
    a = fg.empty(4 * MiB)  # the head of the 8 MiB block
    b = fg.empty(4 * MiB)  # its rest
    s1 = fg.memory_stats()
    assert s1["os_allocations"] == s0["os_allocations"] and s1["reserved_bytes"] == s0["reserved_bytes"]
    c = fg.empty(4 * MiB)  # the higher 4 MiB block
    assert fg.memory_stats()["os_allocations"] == s0["os_allocations"]
    d = fg.empty(1 * MiB)  # nothing free left: the region grows
    s2 = fg.memory_stats()
    assert s2["os_allocations"] == s0["os_allocations"] + 1
    assert s2["reserved_bytes"] == s0["reserved_bytes"] + (1 << 20)
    del a, b, c, d, wall1, wall2
    fg.empty_cache()


def test_a_miss_extends_the_free_block_at_the_end_by_what_is_missing():
    """No free block fits: the free block at the region's end grows by what is missing, and the tensor
    in use below it keeps its contents."""
    fg.empty_cache()
    keep, tail = fg.empty(2 * MiB), fg.empty(3 * MiB)
    fg._core.fill_(keep._impl, 7.0)
    del tail  # the region ends in a free 3 MiB block
    s0 = fg.memory_stats()
    big = fg.empty(5 * MiB)
    s1 = fg.memory_stats()
    assert s1["os_allocations"] == s0["os_allocations"] + 1 and s1["os_frees"] == s0["os_frees"]
    assert s1["reserved_bytes"] == s0["reserved_bytes"] + (2 << 20) == s1["current_bytes"]
    fg._core.fill_(big._impl, 3.0)
    assert np.all(big.numpy() == 3.0) and np.all(keep.numpy() == 7.0)
    del big, keep
    fg.empty_cache()
    s = fg.memory_stats()
    assert s["reserved_bytes"] == s["current_bytes"]


def test_a_hole_too_small_stays_free_for_the_next_request_that_fits():
    fg.empty_cache()
    hole, wall = fg.empty(3 * MiB), fg.empty(1 * MiB)
    del hole
    s0 = fg.memory_stats()
    big = fg.empty(5 * MiB)  # fits no free block and the region ends in a block in use: 5 MiB more
    s1 = fg.memory_stats()
    assert s1["os_allocations"] == s0["os_allocations"] + 1
    assert s1["reserved_bytes"] == s0["reserved_bytes"] + (5 << 20)
    c = fg.empty(3 * MiB)  # the hole
    assert fg.memory_stats()["os_allocations"] == s1["os_allocations"]
    del big, c, wall
    fg.empty_cache()


def test_empty_cache_releases_holes_and_they_can_be_used_again():
    """A free block between blocks in use cannot leave the region, but its pages go back to the OS:
    reserved falls to what is in use, and using the block again counts as memory from the OS."""
    fg.empty_cache()
    below, hole, above = fg.empty(1 * MiB), fg.empty(4 * MiB), fg.empty(1 * MiB)
    fg._core.fill_(hole._impl, 5.0)
    del hole
    fg.empty_cache()
    s0 = fg.memory_stats()
    assert s0["reserved_bytes"] == s0["current_bytes"]
    again = fg.empty(4 * MiB)
    s1 = fg.memory_stats()
    assert s1["os_allocations"] == s0["os_allocations"] + 1
    assert s1["reserved_bytes"] == s0["reserved_bytes"] + (4 << 20) == s1["current_bytes"]
    fg._core.fill_(again._impl, 2.0)
    assert np.all(again.numpy() == 2.0)
    del again
    del above  # a released block merges with a freed neighbour, and the pool counts the neighbour as held
    s2 = fg.memory_stats()
    assert s2["reserved_bytes"] - s2["current_bytes"] == 5 << 20
    del below
    fg.empty_cache()
    s = fg.memory_stats()
    assert s["reserved_bytes"] == s["current_bytes"]


def test_a_request_too_large_to_map_leaves_the_free_blocks_usable():
    """The OS refusing the address space for a request is a MemoryError that leaves the pool as it was:
    the next request its free blocks fit is a pool hit."""
    fg.empty_cache()
    a = fg.empty(8 * MiB)
    del a
    s0 = fg.memory_stats()
    with pytest.raises(MemoryError):
        fg.empty(1 << 46)  # 256 TiB
    s1 = fg.memory_stats()
    assert (s1["reserved_bytes"], s1["current_bytes"]) == (s0["reserved_bytes"], s0["current_bytes"])
    b = fg.empty(8 * MiB)
    assert fg.memory_stats()["os_allocations"] == s0["os_allocations"]
    del b
    fg.empty_cache()
    s = fg.memory_stats()
    assert s["reserved_bytes"] == s["current_bytes"]


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="RLIMIT_AS is enforced on Linux")
@pytest.mark.skipif("libasan" in os.environ.get("LD_PRELOAD", ""),
                    reason="AddressSanitizer maps terabytes of shadow memory: no address-space limit leaves room")
def test_a_limit_on_address_space_gives_a_smaller_region():
    """Under a 4 GiB address-space limit the pool reserves a region of an eighth of it rather than its
    usual 64 GiB: tensors keep their contents, numpy still finds room, a request beyond the limit is a
    MemoryError, one of 3 GiB gets a region of its own (exactly its size), and empty_cache gives that
    region's address space back."""
    script = (
        "import resource; resource.setrlimit(resource.RLIMIT_AS, (4 << 30, 4 << 30))\n"
        "import numpy as np, femtogpt as fg\n"
        "out = []\n"
        "ts = [fg.empty(n << 18) for n in (8, 3, 5)]\n"
        "for i, t in enumerate(ts): fg._core.fill_(t._impl, float(i))\n"
        "try:\n"
        "    fg.empty(1 << 31)\n"
        "    out.append('no error')\n"
        "except MemoryError:\n"
        "    out.append('MemoryError')\n"
        "a = np.ones(1 << 28, np.float32); out.append(float(a[-1])); del a\n"
        "big = fg.empty(3 << 28); del big; fg.empty_cache()\n"
        "b = np.empty(3 << 28, np.float32); del b\n"
        "del ts[1]; t = fg.empty(20 << 18); fg._core.fill_(t._impl, 9.0)\n"
        "out.append(bool(np.all(t.numpy() == 9.0) and np.all(ts[0].numpy() == 0) and np.all(ts[1].numpy() == 2)))\n"
        "print(out)\n")
    # few threads: each OpenMP/BLAS thread reserves address space of its own, and on a machine of
    # many cores those reservations alone would use up the 4 GiB
    env = {**os.environ, "OMP_NUM_THREADS": "2", "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert eval(proc.stdout) == ["MemoryError", 1.0, True]


def _overcommit_checks_requests():
    try:
        with open("/proc/sys/vm/overcommit_memory") as f:
            return f.read().strip() in ("0", "2")
    except OSError:
        return False


@pytest.mark.skipif(not _overcommit_checks_requests(),
                    reason="needs Linux with overcommit_memory 0 or 2, where the OS refuses a request beyond memory")
@pytest.mark.skipif("libasan" in os.environ.get("LD_PRELOAD", ""), reason="AddressSanitizer allows any allocation")
def test_a_request_beyond_memory_is_a_memory_error():
    """Four times the machine's memory (and swap), within the address space: a MemoryError at once, not a
    tensor that the OS would kill the process for touching."""
    with open("/proc/meminfo") as f:
        kib = sum(int(line.split()[1]) for line in f if line.startswith(("MemTotal:", "SwapTotal:")))
    s0 = fg.memory_stats()
    with pytest.raises(MemoryError):
        fg.empty(kib * 1024)  # float32 elements: 4x the bytes
    s1 = fg.memory_stats()
    assert (s1["reserved_bytes"], s1["current_bytes"]) == (s0["reserved_bytes"], s0["current_bytes"])


@pytest.mark.parametrize("checkpoint_every", [0, 1])
@pytest.mark.parametrize("n_layer, n_embd, n_head, T, B", [(4, 64, 4, 64, 16), (2, 384, 6, 128, 4)])
def test_training_steps_with_large_activations_settle_after_two_steps(checkpoint_every, n_layer, n_embd, n_head,
                                                                      T, B):
    """Activations of the pool's large tier: after two warm-up steps, a step asks the OS for nothing
    (the second config, checkpointed, kept growing for a third step on a pool of best-fit segments).
    In a fresh process, so that what other tests left in the pool does not decide the layout."""
    script = (
        "import numpy as np, femtogpt as fg\n"
        "from femtogpt import GPT, GPTConfig, AdamW\n"
        f"cfg = GPTConfig(vocab_size=76, block_size={T}, n_layer={n_layer}, n_head={n_head}, n_embd={n_embd}, "
        f"checkpoint_every={checkpoint_every})\n"
        "m = GPT(cfg, seed=0); opt = AdamW(m.parameters(), lr=1e-3)\n"
        f"rng = np.random.default_rng(0); x, y = rng.integers(0, 76, (2, {B}, {T}))\n"
        "counts = []\n"
        "for i in range(6):\n"
        "    m(x, y)[1].backward(); opt.step(); opt.zero_grad()\n"
        "    counts.append(fg.memory_stats()['os_allocations'])\n"
        "print(counts)\n")
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True).stdout
    counts = eval(out)
    assert len(set(counts[1:])) == 1, f"OS allocations after each step: {counts}"


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
