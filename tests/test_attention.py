"""Attention (femtogpt._core.attention_forward / attention_backward), standard and flash,
held to a float64 numpy reference, to each other, and to central finite differences."""

import numpy as np
import pytest

from femtogpt import _core

IMPLS = ("flash", "standard")


# ----------------------------------------------------------------------------- references

def ref_forward(q, k, v, causal, scale):
    """float64 out, log-sum-exp and probabilities; causal queries aligned to the end of the keys."""
    q, k, v = (np.asarray(x, np.float64) for x in (q, k, v))
    Tq, Tk = q.shape[2], k.shape[2]
    s = scale * q @ k.swapaxes(-1, -2)
    if causal:
        masked = np.arange(Tk)[None, :] > (Tk - Tq + np.arange(Tq))[:, None]
        s = np.where(masked, -np.inf, s)
    m = s.max(-1, keepdims=True)
    p = np.exp(s - m)
    l = p.sum(-1, keepdims=True)
    p /= l
    return p @ v, (m + np.log(l))[..., 0], p


def ref_backward(dout, q, k, v, causal, scale):
    dout, q, k, v = (np.asarray(x, np.float64) for x in (dout, q, k, v))
    o, _, p = ref_forward(q, k, v, causal, scale)
    dv = p.swapaxes(-1, -2) @ dout
    dp = dout @ v.swapaxes(-1, -2)
    ds = p * (dp - (dout * o).sum(-1, keepdims=True))
    return scale * ds @ k, scale * ds.swapaxes(-1, -2) @ q, dv


# ----------------------------------------------------------------------------- helpers

def T(x):
    return _core.from_numpy(np.ascontiguousarray(x))


def run(q, k, v, causal, scale, impl, bq=64, bk=64, dout=None):
    """Forward (and backward when dout is given) through _core; numpy results."""
    out, saved = _core.attention_forward(T(q), T(k), T(v), causal, scale, impl, bq, bk)
    res = [np.asarray(out), np.asarray(saved)]
    if dout is not None:
        grads = _core.attention_backward(T(dout), T(q), T(k), T(v), out, saved, causal, scale, impl, bq, bk)
        res += [np.asarray(g) for g in grads]
    return res


def inputs(rng, B, H, Tq, Tk, D, dtype=np.float32):
    q = rng.standard_normal((B, H, Tq, D)).astype(dtype)
    k = rng.standard_normal((B, H, Tk, D)).astype(dtype)
    v = rng.standard_normal((B, H, Tk, D)).astype(dtype)
    dout = rng.standard_normal((B, H, Tq, D)).astype(dtype)
    return q, k, v, dout


@pytest.fixture(autouse=True)
def restore_state():
    threads, isa = _core.get_num_threads(), _core.cpu_isa()
    yield
    _core.set_num_threads(threads)
    _core.set_cpu_isa(isa)


# ----------------------------------------------------------------------------- correctness

# (B, H, Tq, Tk, D, causal, block_q, block_k, scale factor of 1/sqrt(D))
CASES = [
    (1, 2, 1, 1, 16, True, 64, 64, 1.0),
    (2, 1, 63, 63, 32, True, 16, 16, 1.0),
    (1, 2, 64, 64, 64, True, 64, 64, 1.0),
    (1, 1, 65, 65, 80, True, 32, 64, 0.5),
    (1, 2, 127, 127, 16, False, 128, 32, 1.0),
    (1, 1, 129, 129, 64, True, 64, 128, 2.0),
    (1, 1, 257, 257, 32, True, 128, 16, 1.0),
    (1, 1, 1000, 1000, 64, True, 64, 64, 1.0),
    (1, 1, 1000, 1000, 16, False, 16, 128, 0.7),
    (1, 1, 1, 257, 64, True, 64, 64, 1.0),      # one new token against a KV cache
    (2, 2, 3, 200, 20, True, 64, 16, 1.0),      # a few tokens against a KV cache (direct path, D tail)
    (1, 2, 63, 129, 80, True, 16, 32, 1.0),     # KV cache, several query blocks
    (1, 1, 65, 1000, 32, True, 32, 128, 1.0),
    (1, 1, 129, 63, 16, False, 32, 16, 1.0),    # more queries than keys (non-causal)
    (1, 1, 65, 65, 256, True, 64, 64, 1.0),     # large head dimension
    (1, 1, 67, 67, 3, True, 16, 16, 1.0),       # head dimension below a vector
    (1, 1, 70, 91, 100, False, 32, 64, 1.0),    # head dimension not a tile multiple
    (2, 2, 90, 90, 32, True, 32, 32, -1.0),     # a negative scale (the row max is then a min)
]


def case_id(c):
    B, H, Tq, Tk, D, causal, bq, bk, f = c
    return f"B{B}H{H}-Tq{Tq}-Tk{Tk}-D{D}-{'causal' if causal else 'full'}-b{bq}x{bk}-s{f}"


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("case", CASES, ids=case_id)
def test_matches_float64_reference(case, impl):
    B, H, Tq, Tk, D, causal, bq, bk, f = case
    rng = np.random.default_rng(Tq * 1000 + Tk + D)
    q, k, v, dout = inputs(rng, B, H, Tq, Tk, D)
    scale = f / np.sqrt(D)
    out, saved, dq, dk, dv = run(q, k, v, causal, scale, impl, bq, bk, dout)
    r_out, r_lse, r_p = ref_forward(q, k, v, causal, scale)
    r_dq, r_dk, r_dv = ref_backward(dout, q, k, v, causal, scale)
    assert out.dtype == np.float32 and out.shape == (B, H, Tq, D)
    np.testing.assert_allclose(out, r_out, rtol=0, atol=1e-5)
    if impl == "flash":
        assert saved.shape == (B, H, Tq)
        np.testing.assert_allclose(saved, r_lse, rtol=0, atol=1e-5)
    else:
        assert saved.shape == (B, H, Tq, Tk)
        np.testing.assert_allclose(saved, r_p, rtol=0, atol=1e-6)
    for got, want in ((dq, r_dq), (dk, r_dk), (dv, r_dv)):
        np.testing.assert_allclose(got, want, rtol=0, atol=1e-4)


@pytest.mark.parametrize("causal", [True, False])
def test_flash_agrees_with_standard_float64(causal):
    rng = np.random.default_rng(7)
    q, k, v, dout = inputs(rng, 2, 3, 77, 77 if causal else 50, 24, np.float64)
    flash = run(q, k, v, causal, 0.3, "flash", 16, 32, dout)
    std = run(q, k, v, causal, 0.3, "standard", 16, 32, dout)
    for i in (0, 2, 3, 4):
        np.testing.assert_allclose(flash[i], std[i], rtol=0, atol=1e-12)
    # the standard path's saved probabilities give back flash's log-sum-exp
    _, r_lse, _ = ref_forward(q, k, v, causal, 0.3)
    np.testing.assert_allclose(flash[1], r_lse, rtol=0, atol=1e-12)


def numerical_grads(f, arrays, eps=1e-6):
    """Central finite differences of the scalar f(*arrays) for every element of every array."""
    grads = []
    for a in arrays:
        g = np.zeros_like(a)
        for idx in np.ndindex(a.shape):
            old = a[idx]
            a[idx] = old + eps
            hi = f(*arrays)
            a[idx] = old - eps
            lo = f(*arrays)
            a[idx] = old
            g[idx] = (hi - lo) / (2 * eps)
        grads.append(g)
    return grads


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("Tq,Tk,causal", [(5, 7, True), (7, 7, True), (6, 4, False), (1, 3, True)])
def test_gradcheck_float64(impl, Tq, Tk, causal):
    rng = np.random.default_rng(Tq * 10 + Tk)
    q, k, v, w = inputs(rng, 1, 2, Tq, Tk, 5, np.float64)
    scale = 0.8

    def loss(q, k, v):  # a weighted sum of the outputs, so that dout = w
        return float((run(q, k, v, causal, scale, impl, 2, 3)[0] * w).sum())

    got = run(q, k, v, causal, scale, impl, 2, 3, dout=w)[2:]
    for g, n in zip(got, numerical_grads(loss, [q, k, v])):
        np.testing.assert_allclose(g, n, rtol=1e-6, atol=1e-8)


@pytest.mark.parametrize("isa", _core.available_isas())
def test_every_isa(isa):
    _core.set_cpu_isa(isa)
    rng = np.random.default_rng(11)
    for Tq, Tk, D, causal, bq, bk in [(100, 100, 64, True, 32, 64), (33, 90, 40, True, 16, 16),
                                      (70, 31, 17, False, 128, 16), (2, 77, 37, True, 64, 32),
                                      (5, 64, 64, False, 64, 64)]:
        q, k, v, dout = inputs(rng, 1, 3, Tq, Tk, D)
        scale = 1 / np.sqrt(D)
        r = [ref_forward(q, k, v, causal, scale)[0], *ref_backward(dout, q, k, v, causal, scale)]
        got = run(q, k, v, causal, scale, "flash", bq, bk, dout)
        for g, want, tol in zip([got[0], *got[2:]], r, (1e-5, 1e-4, 1e-4, 1e-4)):
            np.testing.assert_allclose(g, want, rtol=0, atol=tol)


@pytest.mark.parametrize("causal", [True, False])
@pytest.mark.parametrize("D", [16, 32, 64, 80])
def test_one_and_several_blocks_every_isa(each_isa, D, causal):
    """Short sequences in one block or a few (T <= block and T > block), odd lengths, each ISA:
    the diagonal tiles' causal band starts and ends inside register tiles of every height."""
    rng = np.random.default_rng(D + causal)
    for T_ in (1, 7, 63, 64):
        q, k, v, dout = inputs(rng, 1, 2, T_, T_, D)
        scale = 1 / np.sqrt(D)
        r = [*ref_forward(q, k, v, causal, scale)[:2], *ref_backward(dout, q, k, v, causal, scale)]
        for bq, bk in ((16, 16), (32, 32), (64, 64), (128, 128), (16, 64), (128, 32)):
            got = run(q, k, v, causal, scale, "flash", bq, bk, dout)
            for g, want, tol in zip(got, r, (1e-5, 1e-5, 1e-4, 1e-4, 1e-4)):
                np.testing.assert_allclose(g, want, rtol=0, atol=tol, err_msg=f"T={T_} b{bq}x{bk}")


@pytest.mark.parametrize("T_,block", [(64, 64), (63, 128), (64, 16)])
def test_causality_is_exact_every_isa(each_isa, T_, block):
    """As test_causality_is_exact, on each ISA, with the whole sequence in one block or in many."""
    rng = np.random.default_rng(6)
    q, k, v, dout = inputs(rng, 1, 2, T_, T_, 16)
    base = run(q, k, v, True, 0.25, "flash", block, block, dout)
    for j in (T_ - 1, 37, 12, 0):
        k2, v2 = k.copy(), v.copy()
        k2[:, :, j] = rng.standard_normal(k2[:, :, j].shape) * 3
        v2[:, :, j] = rng.standard_normal(v2[:, :, j].shape) * 3
        new = run(q, k2, v2, True, 0.25, "flash", block, block, dout)
        assert np.array_equal(new[0][:, :, :j], base[0][:, :, :j]), j
        assert np.array_equal(new[1][:, :, :j], base[1][:, :, :j]), j
        assert np.array_equal(new[2][:, :, :j], base[2][:, :, :j]), j
        assert not np.array_equal(new[0][:, :, j:], base[0][:, :, j:])


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("BH", [(1, 1), (1, 3), (2, 4)])
def test_one_and_two_threads_bitwise_equal(impl, BH):
    """B*H = 1 and 3 run flash backward's two-pass schedule on 2 threads, 8 its per-head one;
    1 thread always runs per head, so this also holds the two schedules to each other.
    (The problem is big enough for the kernels to use a second thread.)"""
    rng = np.random.default_rng(3)
    q, k, v, dout = inputs(rng, *BH, 200, 200, 48)
    for isa in _core.available_isas():
        _core.set_cpu_isa(isa)
        results = []
        for n in (1, 2):
            _core.set_num_threads(n)
            results.append(run(q, k, v, True, 0.2, impl, 32, 64, dout))
        for a, b in zip(*results):
            assert np.array_equal(a, b), isa


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("Tq,Tk", [(200, 200), (70, 200)])
def test_causality_is_exact(impl, Tq, Tk):
    """Changing key/value j leaves every output and dQ row that cannot see j bitwise equal."""
    rng = np.random.default_rng(5)
    q, k, v, dout = inputs(rng, 1, 2, Tq, Tk, 32)
    base = run(q, k, v, True, 0.25, impl, 32, 16, dout)
    for j in (Tk - 1, Tk - Tq + 37, Tk - Tq + 64):
        k2, v2 = k.copy(), v.copy()
        k2[:, :, j] = rng.standard_normal(k2[:, :, j].shape) * 3
        v2[:, :, j] = rng.standard_normal(v2[:, :, j].shape) * 3
        new = run(q, k2, v2, True, 0.25, impl, 32, 16, dout)
        blind = j - (Tk - Tq)  # query rows before this one cannot see key j
        assert np.array_equal(new[0][:, :, :blind], base[0][:, :, :blind])
        assert np.array_equal(new[2][:, :, :blind], base[2][:, :, :blind])
        assert not np.array_equal(new[0][:, :, blind:], base[0][:, :, blind:])


def test_empty_keys_and_queries():
    rng = np.random.default_rng(1)
    q, k, v, dout = inputs(rng, 1, 2, 5, 0, 8)
    for impl in IMPLS:
        out, saved, dq, dk, dv = run(q, k, v, False, 0.5, impl, dout=dout)
        assert np.array_equal(out, np.zeros_like(out)) and np.array_equal(dq, np.zeros_like(dq))
        assert dk.shape == (1, 2, 0, 8) and dv.shape == (1, 2, 0, 8)
    q, k, v, dout = inputs(rng, 1, 2, 0, 4, 8)
    for impl in IMPLS:
        out, saved, dq, dk, dv = run(q, k, v, True, 0.5, impl, dout=dout)
        assert out.shape == (1, 2, 0, 8)
        assert np.array_equal(dk, np.zeros_like(dk)) and np.array_equal(dv, np.zeros_like(dv))


def test_no_nan_with_extreme_scores():
    """Huge logits (one key dominating each row) overflow nothing and leave no NaN."""
    rng = np.random.default_rng(2)
    q, k, v, dout = inputs(rng, 1, 1, 90, 90, 16)
    for impl in IMPLS:
        out, saved, dq, dk, dv = run(q * 30, k * 30, v, True, 1.0, impl, 16, 16, dout)
        for a in (out, saved, dq, dk, dv):
            assert np.isfinite(a).all(), impl
        np.testing.assert_allclose(out, ref_forward(q * 30, k * 30, v, True, 1.0)[0], rtol=0, atol=1e-4)


# ----------------------------------------------------------------------------- memory

def extra_memory(impl, T_, D=16):
    rng = np.random.default_rng(0)
    q, k, v, dout = (T(a) for a in inputs(rng, 1, 1, T_, T_, D))
    before = _core.memory_stats()["current_bytes"]
    _core.reset_peak_memory_stats()
    out, saved = _core.attention_forward(q, k, v, True, 0.25, impl)
    grads = _core.attention_backward(dout, q, k, v, out, saved, True, 0.25, impl)
    del out, saved, grads
    return _core.memory_stats()["peak_bytes"] - before


def test_flash_memory_is_linear_and_a_tenth_of_standard():
    flash = {t: extra_memory("flash", t) for t in (1024, 2048, 4096)}
    standard = extra_memory("standard", 4096)
    assert standard >= 4096 * 4096 * 4  # it holds P at least
    assert flash[4096] * 10 <= standard, (flash, standard)
    # linear: doubling T about doubles flash's extra memory (a quadratic term would quadruple it)
    assert flash[4096] <= 2.6 * flash[2048] and flash[2048] <= 2.6 * flash[1024], flash


# ----------------------------------------------------------------------------- fused qkv

@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("B,H,seq,D", [(1, 1, 1, 16), (2, 3, 67, 16), (1, 2, 129, 24), (3, 1, 5, 80),
                                       (1, 3, 200, 48), (2, 4, 64, 16)])
def test_fused_qkv_reads_heads_in_place_bitwise(each_isa, threads, impl, B, H, seq, D):
    """attention_qkv_* on a (B,T,3C) projection equal attention_forward/backward on the permuted
    q, k, v bit for bit (the same kernels reading the heads in place), on 1 and 2 threads; B*H = 3
    and 2 take flash backward's two-pass schedule on 2 threads, the others its per-head one."""
    rng = np.random.default_rng(5)
    C = H * D
    qkv = rng.standard_normal((B, seq, 3 * C)).astype(np.float32)
    dout = rng.standard_normal((B, seq, C)).astype(np.float32)

    def heads(x):  # (B, T, C) -> (B, H, T, D)
        return x.reshape(B, seq, H, D).transpose(0, 2, 1, 3)

    def merged(x):  # (B, H, T, D) -> (B, T, C)
        return x.transpose(0, 2, 1, 3).reshape(B, seq, C)

    scale = 1 / np.sqrt(D)
    q, k, v = (heads(x) for x in np.split(qkv, 3, axis=2))
    want = run(q, k, v, True, scale, impl, 32, 64, heads(dout))
    want_dqkv = np.concatenate([merged(g) for g in want[2:]], axis=2)
    for n in (1, 2):
        _core.set_num_threads(n)
        out, saved = _core.attention_qkv_forward(T(qkv), H, scale, impl, 32, 64)
        dqkv = _core.attention_qkv_backward(T(dout), T(qkv), out, saved, H, scale, impl, 32, 64)
        assert np.array_equal(np.asarray(out), merged(want[0])), n
        assert np.array_equal(np.asarray(saved), want[1]), n
        assert np.array_equal(np.asarray(dqkv), want_dqkv), n


def test_fused_qkv_errors():
    qkv = T(np.zeros((2, 5, 12), np.float32))
    f = _core.attention_qkv_forward
    with pytest.raises(ValueError, match=r"3-D \(B, T, 3C\)"):
        f(T(np.zeros((5, 12), np.float32)), 2, 1.0)
    with pytest.raises(ValueError, match="divisible by n_head=3"):
        f(qkv, 3, 1.0)
    with pytest.raises(ValueError, match="n_head must be positive"):
        f(qkv, 0, 1.0)
    with pytest.raises(ValueError, match="block sizes must be positive"):
        f(qkv, 2, 1.0, "flash", 0, 64)
    with pytest.raises(TypeError, match="float32 or float64"):
        f(T(np.zeros((2, 5, 12), np.int32)), 2, 1.0)
    out, saved = f(qkv, 2, 0.5)
    b = _core.attention_qkv_backward
    with pytest.raises(ValueError, match="dout has shape"):
        b(T(np.zeros((2, 4, 4), np.float32)), qkv, out, saved, 2, 0.5)
    with pytest.raises(ValueError, match="saved has shape"):
        b(out, qkv, out, saved, 2, 0.5, "standard")
    with pytest.raises(TypeError, match="dtypes differ"):
        b(T(np.zeros((2, 5, 4), np.float64)), qkv, out, saved, 2, 0.5)


# ----------------------------------------------------------------------------- errors

def test_errors():
    rng = np.random.default_rng(0)
    q, k, v, dout = (T(a) for a in inputs(rng, 1, 2, 8, 8, 4))
    f = _core.attention_forward
    with pytest.raises(ValueError, match="4-D"):
        f(T(np.zeros((2, 8, 4), np.float32)), k, v, False, 1.0)
    with pytest.raises(ValueError, match="same shape"):
        f(q, k, T(np.zeros((1, 2, 7, 4), np.float32)), False, 1.0)
    with pytest.raises(ValueError, match="agree"):
        f(T(np.zeros((1, 3, 8, 4), np.float32)), k, v, False, 1.0)
    with pytest.raises(ValueError, match="agree"):
        f(T(np.zeros((1, 2, 8, 5), np.float32)), k, v, False, 1.0)
    with pytest.raises(TypeError, match="dtypes differ"):
        f(T(np.zeros((1, 2, 8, 4), np.float64)), k, v, False, 1.0)
    with pytest.raises(TypeError, match="float32 or float64"):
        f(T(np.zeros((1, 2, 8, 4), np.int32)), k, v, False, 1.0)
    for bq, bk in ((0, 64), (64, 0), (-1, 64)):
        with pytest.raises(ValueError, match="block sizes must be positive"):
            f(q, k, v, False, 1.0, "flash", bq, bk)
    with pytest.raises(ValueError, match="unknown impl 'fast'"):
        f(q, k, v, False, 1.0, "fast")
    with pytest.raises(ValueError, match="Tq <= Tk"):
        f(T(np.zeros((1, 2, 9, 4), np.float32)), k, v, True, 1.0)
    big = T(np.zeros((1, 1, 2, 1024), np.float32))
    with pytest.raises(ValueError, match="head dimension D=1024 exceeds"):
        f(big, big, big, False, 1.0)
    out, saved = f(q, k, v, True, 0.5)
    b = _core.attention_backward
    with pytest.raises(ValueError, match="saved has shape"):
        b(dout, q, k, v, out, saved, True, 0.5, "standard")
    with pytest.raises(ValueError, match="dout has shape"):
        b(T(np.zeros((1, 2, 7, 4), np.float32)), q, k, v, out, saved, True, 0.5)
    with pytest.raises(TypeError, match="dtypes differ"):
        b(T(np.zeros((1, 2, 8, 4), np.float64)), q, k, v, out, saved, True, 0.5)
    with pytest.raises(ValueError, match="Tq <= Tk"):
        b(dout, q, T(np.zeros((1, 2, 3, 4), np.float32)), T(np.zeros((1, 2, 3, 4), np.float32)), out, saved,
          True, 0.5)
