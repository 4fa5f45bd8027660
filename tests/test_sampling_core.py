"""_core.sample_tokens, argmax and rng_state: the semantics documented in cpp/cpu/sampling.h."""

import numpy as np
import pytest

from femtogpt import _core

MASK = (1 << 64) - 1


def t(a):
    return _core.from_numpy(np.asarray(a))


def arr(x):
    return np.asarray(x)


def splitmix64_next(state):
    """(new state, output) of one splitmix64 step, on Python ints."""
    state = (state + 0x9E3779B97F4A7C15) & MASK
    z = state
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & MASK
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & MASK
    return state, z ^ (z >> 31)


def reference_row(x, temperature, top_k, top_p, u):
    """The documented algorithm, in numpy float64 (sequential sums, as the kernel adds)."""
    if temperature == 0:
        return int(np.argmax(x))
    V = x.shape[0]
    z = x.astype(np.float64) / temperature
    idx = np.arange(V)
    kept = idx
    if 0 < top_k < V:
        kept = np.sort(np.lexsort((idx, -z))[:top_k])
    zk = z[kept]
    if zk.max() == -np.inf:
        return int(kept[0])
    p = np.exp(zk - zk.max())
    Z = np.cumsum(p)[-1]
    if top_p < 1:
        order = np.lexsort((kept, -p))
        cum = np.cumsum(p[order])
        hit = np.nonzero(cum >= top_p * Z)[0]
        cut = hit[0] + 1 if hit.size else len(order)
        sel = np.sort(order[:cut])
        kept, p = kept[sel], p[sel]
    cum = np.cumsum(p)
    j = np.nonzero(cum > u * cum[-1])[0]
    return int(kept[j[0]]) if j.size else int(kept[np.nonzero(p > 0)[0][-1]])


def reference_sample(logits, temperature, top_k, top_p, states):
    """(tokens, new states) for a batch, states as Python ints."""
    tokens, new = [], []
    for row, s in zip(logits, states):
        s, out = splitmix64_next(s)
        tokens.append(reference_row(row, temperature, top_k, top_p, (out >> 11) * 2.0 ** -53))
        new.append(s)
    return np.array(tokens), new


def as_uint(state_tensor):
    return [int(v) & MASK for v in arr(state_tensor)]


def repeat_rows(logits_row, n):
    return np.ascontiguousarray(np.broadcast_to(logits_row, (n, logits_row.shape[0])))


# ---------------------------------------------------------------- rng

def test_rng_state_is_splitmix64_of_seed():
    s = arr(_core.rng_state(42, 5))
    assert s.dtype == np.int64 and s.shape == (5,)
    state, expect = 42, []
    for _ in range(5):
        state, out = splitmix64_next(state)
        expect.append(out)
    assert as_uint(s) == expect
    assert as_uint(_core.rng_state(-1, 2)) == as_uint(_core.rng_state(MASK, 2))
    assert as_uint(_core.rng_state(1 << 70, 2)) == as_uint(_core.rng_state(0, 2))
    assert arr(_core.rng_state(3, 0)).shape == (0,)


# ---------------------------------------------------------------- argmax / greedy

@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_argmax_and_greedy(dtype):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((9, 1031)).astype(dtype)
    x[3, [5, 700]] = 100  # tie: lowest index
    x[4, :] = 1.0
    x[5, [0, 9]] = 50
    assert np.array_equal(arr(_core.argmax(t(x))), np.argmax(x, 1))
    greedy = arr(_core.sample_tokens(t(x), 0.0, 0, 1.0))
    assert greedy.dtype == np.int64 and np.array_equal(greedy, np.argmax(x, 1))
    # top_k / top_p do not change greedy; the state still advances by one draw
    st = _core.rng_state(7, 9)
    before = as_uint(st)
    assert np.array_equal(arr(_core.sample_tokens(t(x), 0.0, 5, 0.5, st)), np.argmax(x, 1))
    assert as_uint(st) == [splitmix64_next(s)[0] for s in before]


def test_argmax_nan_like_numpy():
    x = np.array([[1.0, np.nan, 3.0, np.nan], [np.nan, 0.0, 5.0, 1.0], [0.0, 1.0, 2.0, 2.0]], np.float32)
    assert np.array_equal(arr(_core.argmax(t(x))), np.argmax(x, 1))


# ---------------------------------------------------------------- exact semantics

CONFIGS = [(1.0, 0, 1.0), (0.7, 0, 1.0), (1.3, 5, 1.0), (1.0, 0, 0.9), (0.8, 40, 0.95), (1.0, 1, 1.0),
           (2.0, 0, 0.3), (1.0, 3000, 0.5), (1.0, 100000, 1.0), (0.5, 0, 1e-9)]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("temperature,top_k,top_p", CONFIGS)
def test_matches_reference(temperature, top_k, top_p, dtype):
    rng = np.random.default_rng(1)
    logits = (rng.standard_normal((24, 2053)) * 3).astype(dtype)
    logits[:, 100:110] = logits[:, 90:100]  # ties across indices
    st = _core.rng_state(123, 24)
    start = as_uint(st)
    total_mismatch = 0
    for _ in range(4):
        got = arr(_core.sample_tokens(t(logits), temperature, top_k, top_p, st))
        expect, start = reference_sample(logits, temperature, top_k, top_p, start)
        assert as_uint(st) == start
        # exp may differ from numpy's in the last bit, which moves a boundary by ~1e-16
        total_mismatch += int((got != expect).sum())
    assert total_mismatch <= 1


def test_same_seed_same_tokens_and_threads():
    rng = np.random.default_rng(2)
    logits = rng.standard_normal((64, 5003)).astype(np.float32)
    before = _core.get_num_threads()
    runs = []
    try:
        for n in (1, 2, 2):
            _core.set_num_threads(n)
            st = _core.rng_state(99, 64)
            runs.append([arr(_core.sample_tokens(t(logits), 1.0, k, p, st)) for k, p in [(0, 1.0), (50, 0.9)]])
    finally:
        _core.set_num_threads(before)
    for a, b in zip(runs[0], runs[1]):
        assert np.array_equal(a, b)
    for a, b in zip(runs[0], runs[2]):
        assert np.array_equal(a, b)
    other = arr(_core.sample_tokens(t(logits), 1.0, 0, 1.0, _core.rng_state(100, 64)))
    assert not np.array_equal(other, runs[0][0])
    # successive calls continue the stream
    st = _core.rng_state(99, 64)
    first = arr(_core.sample_tokens(t(logits), 1.0, 0, 1.0, st))
    second = arr(_core.sample_tokens(t(logits), 1.0, 0, 1.0, st))
    assert np.array_equal(first, runs[0][0]) and not np.array_equal(first, second)


# ---------------------------------------------------------------- properties over many draws

def test_top_k_stays_in_top_k():
    rng = np.random.default_rng(3)
    row = rng.standard_normal(1000).astype(np.float32)
    k = 7
    allowed = set(np.argsort(-row, kind="stable")[:k].tolist())
    tokens = arr(_core.sample_tokens(t(repeat_rows(row, 20000)), 1.5, k, 1.0, _core.rng_state(5, 20000)))
    assert set(tokens.tolist()) == allowed  # every one of the k shows up, nothing else


def test_top_p_stays_in_nucleus():
    rng = np.random.default_rng(4)
    row = (rng.standard_normal(500) * 2).astype(np.float32)
    p = np.exp(row.astype(np.float64) - row.max())
    p /= p.sum()
    order = np.argsort(-p, kind="stable")
    cut = int(np.searchsorted(np.cumsum(p[order]), 0.8)) + 1
    nucleus = set(order[:cut].tolist())
    tokens = arr(_core.sample_tokens(t(repeat_rows(row, 20000)), 1.0, 0, 0.8, _core.rng_state(6, 20000)))
    assert set(tokens.tolist()) <= nucleus
    assert len(set(tokens.tolist())) > len(nucleus) // 2


def test_top_p_keeps_at_least_one():
    row = np.array([0.0, 5.0, 1.0, 5.0], np.float32)  # tie at the top: the lower index wins
    tokens = arr(_core.sample_tokens(t(repeat_rows(row, 1000)), 1.0, 0, 1e-6, _core.rng_state(1, 1000)))
    assert set(tokens.tolist()) == {1}


@pytest.mark.parametrize("temperature,top_k,top_p", [(1.0, 0, 1.0), (0.6, 0, 1.0), (1.0, 6, 1.0),
                                                     (1.2, 0, 0.85), (0.9, 8, 0.7)])
def test_frequencies_match_probabilities(temperature, top_k, top_p):
    rng = np.random.default_rng(5)
    row = rng.standard_normal(12).astype(np.float32)
    z = row.astype(np.float64) / temperature
    keep = np.ones(12, bool)
    if top_k:
        keep[:] = False
        keep[np.argsort(-z, kind="stable")[:top_k]] = True
    p = np.where(keep, np.exp(z - z.max()), 0.0)
    p /= p.sum()
    if top_p < 1:
        order = np.argsort(-p, kind="stable")
        cut = int(np.searchsorted(np.cumsum(p[order]), top_p)) + 1
        mask = np.zeros(12, bool)
        mask[order[:cut]] = True
        p = np.where(mask, p, 0.0)
        p /= p.sum()
    n = 200_000
    tokens = arr(_core.sample_tokens(t(repeat_rows(row, n)), temperature, top_k, top_p, _core.rng_state(77, n)))
    freq = np.bincount(tokens, minlength=12) / n
    # 6 standard deviations of a binomial proportion: seeded, so it cannot flake, and loose enough to be robust
    bound = 6 * np.sqrt(p * (1 - p) / n) + 1e-12
    assert np.all(np.abs(freq - p) <= bound), (freq, p)
    assert np.all(freq[p == 0] == 0)


def test_masked_logits_never_sampled():
    row = np.full(50, -np.inf, np.float32)
    row[[3, 17, 40]] = [0.0, 1.0, 0.5]
    tokens = arr(_core.sample_tokens(t(repeat_rows(row, 5000)), 1.0, 10, 1.0, _core.rng_state(8, 5000)))
    assert set(tokens.tolist()) == {3, 17, 40}
    all_masked = np.full((2, 9), -np.inf, np.float32)
    assert arr(_core.sample_tokens(t(all_masked), 1.0, 0, 1.0, _core.rng_state(9, 2))).tolist() == [0, 0]


def test_nan_and_inf_logits_stay_in_range():
    row = np.array([np.nan, 1.0, np.inf, 2.0, -np.inf], np.float32)
    for k, p in [(0, 1.0), (2, 1.0), (0, 0.5)]:
        tokens = arr(_core.sample_tokens(t(repeat_rows(row, 100)), 1.0, k, p, _core.rng_state(10, 100)))
        assert set(tokens.tolist()) == {2}


def test_empty_batch():
    out = _core.sample_tokens(t(np.zeros((0, 5), np.float32)), 1.0, 0, 1.0, _core.rng_state(0, 0))
    assert arr(out).shape == (0,)


# ---------------------------------------------------------------- errors

def test_sampling_errors():
    x = t(np.zeros((2, 5), np.float32))
    st = _core.rng_state(0, 2)
    for kw in [dict(temperature=-0.1), dict(temperature=float("nan")), dict(top_k=-1), dict(top_p=0.0),
               dict(top_p=1.5), dict(top_p=-0.5)]:
        with pytest.raises(ValueError):
            _core.sample_tokens(x, **{**dict(temperature=1.0, top_k=0, top_p=1.0, rng_state=st), **kw})
    with pytest.raises(ValueError, match="rng_state"):
        _core.sample_tokens(x, 1.0, 0, 1.0)
    with pytest.raises(ValueError, match=r"\(3,\)"):
        _core.sample_tokens(x, 1.0, 0, 1.0, _core.rng_state(0, 3))
    with pytest.raises(TypeError):
        _core.sample_tokens(x, 1.0, 0, 1.0, t(np.zeros(2, np.int32)))
    with pytest.raises(TypeError):
        _core.sample_tokens(t(np.zeros((2, 5), np.int64)), 1.0, 0, 1.0, st)
    with pytest.raises(TypeError):
        _core.argmax(t(np.zeros((2, 5), np.int32)))
    for bad in (np.zeros(5, np.float32), np.zeros((2, 2, 5), np.float32), np.zeros((2, 0), np.float32)):
        with pytest.raises(ValueError):
            _core.sample_tokens(t(bad), 1.0, 0, 1.0, st)
        with pytest.raises(ValueError):
            _core.argmax(t(bad))
    with pytest.raises(ValueError):
        _core.rng_state(0, -1)
