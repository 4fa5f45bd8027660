"""_core.matmul with fused work (bias=, gelu_a=, gelu_b=, a_row_sums=, gelu_grad=): bitwise the
values of the unfused ops (gelu_forward, then the product, then add_ of the bias, or then
gelu_backward), on every ISA, 1 and 2 threads,
every transpose, and shapes that take each path of the driver: edge tiles, several k blocks,
A read in place (small N: the GELU forces the packed copy), and a long K split into chunks.
float64 (used by gradient checks) against numpy. Bad input is a clear error."""

import numpy as np
import pytest

from femtogpt import _core

TRANSPOSES = [(False, False), (False, True), (True, False), (True, True)]
# (M, K, N): a single element; edge tiles in both directions; two k blocks; small N (A read in
# place when unfused); a long K into a small C (split into K chunks); the femto MLP's product
SHAPES = [(1, 1, 1), (37, 300, 53), (129, 65, 257), (61, 2053, 7), (200, 256, 64)]


pytestmark = pytest.mark.usefixtures("restore_isa_and_threads")


def T(x):  # noqa: N802
    return _core.from_numpy(np.ascontiguousarray(x))


def unfused(a, b, ta, tb, bias, gelu_a, gelu_b, approx):
    a_t = _core.gelu_forward(T(a), approx) if gelu_a else T(a)
    b_t = _core.gelu_forward(T(b), approx) if gelu_b else T(b)
    out = _core.matmul(a_t, b_t, ta, tb)
    if bias is not None:
        _core.add_(out, T(bias))
    return np.asarray(out)


@pytest.mark.parametrize("nt", [1, 2])
@pytest.mark.parametrize("ta,tb", TRANSPOSES)
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
@pytest.mark.parametrize("gelu_a,gelu_b,with_bias", [(True, False, False), (False, True, False),
                                                     (False, False, True), (True, False, True),
                                                     (True, True, True)])
def test_bitwise_equals_unfused(each_isa, nt, ta, tb, shape, gelu_a, gelu_b, with_bias):
    _core.set_num_threads(nt)
    M, K, N = shape
    rng = np.random.default_rng(M * 7 + K * 3 + N)
    a = (rng.standard_normal((K, M) if ta else (M, K)) * 2).astype(np.float32)
    b = (rng.standard_normal((N, K) if tb else (K, N)) * 2).astype(np.float32)
    bias = rng.standard_normal(N).astype(np.float32) if with_bias else None
    for approx in ("tanh", "none"):
        got = _core.matmul(T(a), T(b), ta, tb, bias=None if bias is None else T(bias),
                           gelu_a=approx if gelu_a else None, gelu_b=approx if gelu_b else None)
        want = unfused(a, b, ta, tb, bias, gelu_a, gelu_b, approx)
        assert np.array_equal(np.asarray(got), want), f"approximate={approx}"


@pytest.mark.parametrize("shape", [(37, 300, 53), (61, 2053, 7)], ids=["k-blocks", "split-k"])
@pytest.mark.parametrize("alpha,beta", [(0.5, 2.0), (-1.25, 1.0), (1.0, 0.0), (0.0, 1.5)])
def test_bitwise_equals_unfused_with_alpha_beta(each_isa, shape, alpha, beta):
    M, K, N = shape
    rng = np.random.default_rng(11)
    a, b = rng.standard_normal((M, K)).astype(np.float32), rng.standard_normal((K, N)).astype(np.float32)
    bias, c0 = rng.standard_normal(N).astype(np.float32), rng.standard_normal((M, N)).astype(np.float32)
    got = T(c0.copy())
    _core.matmul(T(a), T(b), out=got, alpha=alpha, beta=beta, bias=T(bias), gelu_a="tanh")
    want = T(c0.copy())
    _core.matmul(_core.gelu_forward(T(a), "tanh"), T(b), out=want, alpha=alpha, beta=beta)
    _core.add_(want, T(bias))
    assert np.array_equal(np.asarray(got), np.asarray(want))


def _gelu64(x, approx):
    x = x.astype(np.float64)
    if approx == "tanh":
        return 0.5 * x * (1 + np.tanh(np.sqrt(2 / np.pi) * (x + 0.044715 * x**3)))
    from math import erf
    return 0.5 * x * (1 + np.vectorize(erf)(x / np.sqrt(2)))


@pytest.mark.parametrize("ta,tb", TRANSPOSES)
@pytest.mark.parametrize("approx", ["tanh", "none"])
def test_float64_against_numpy(ta, tb, approx):
    rng = np.random.default_rng(5)
    M, K, N = 13, 29, 11
    a = rng.standard_normal((K, M) if ta else (M, K))
    b = rng.standard_normal((N, K) if tb else (K, N))
    bias = rng.standard_normal(N)
    c0 = rng.standard_normal((M, N))
    out = T(c0.copy())
    _core.matmul(T(a), T(b), ta, tb, out=out, alpha=0.5, beta=2.0, bias=T(bias), gelu_a=approx, gelu_b=approx)
    ga, gb = _gelu64(a, approx), _gelu64(b, approx)
    want = 0.5 * ((ga.T if ta else ga) @ (gb.T if tb else gb)) + 2.0 * c0 + bias
    np.testing.assert_allclose(np.asarray(out), want, rtol=1e-12, atol=1e-12)


def test_bias_with_alpha_beta_and_empty_k(each_isa):
    rng = np.random.default_rng(6)
    a, b = rng.standard_normal((5, 0)).astype(np.float32), rng.standard_normal((0, 7)).astype(np.float32)
    bias = rng.standard_normal(7).astype(np.float32)
    c0 = rng.standard_normal((5, 7)).astype(np.float32)
    out = T(c0.copy())
    _core.matmul(T(a), T(b), out=out, beta=0.5, bias=T(bias))
    assert np.array_equal(np.asarray(out), (c0 * np.float32(0.5)) + bias)


def test_bad_input():
    a, b = T(np.ones((3, 4), np.float32)), T(np.ones((4, 5), np.float32))
    with pytest.raises(ValueError, match=r"bias has shape \(4,\), expected \(5,\)"):
        _core.matmul(a, b, bias=T(np.ones(4, np.float32)))
    with pytest.raises(ValueError, match="expected"):
        _core.matmul(a, b, bias=T(np.ones((1, 5), np.float32)))
    with pytest.raises(TypeError):
        _core.matmul(a, b, bias=T(np.ones(5, np.float64)))
    with pytest.raises(ValueError, match="unknown gelu_a='relu'"):
        _core.matmul(a, b, gelu_a="relu")
    with pytest.raises(ValueError, match="one GELU form"):
        _core.matmul(a, b, gelu_a="tanh", gelu_b="none")
    with pytest.raises(ValueError, match="need 2-D a and b"):
        _core.matmul(T(np.ones((2, 3, 4), np.float32)), b, bias=T(np.ones(5, np.float32)))


# ---- a_row_sums: a linear layer's bias gradient computed as the weight gradient's product packs dout


@pytest.mark.parametrize("ta,tb", TRANSPOSES)
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
def test_row_sums(each_isa, ta, tb, shape):
    """The product is bitwise unchanged; the sums are within float32 summation error of float64 and
    bitwise the same on 1 and 2 threads (k blocks, and split-K chunks, are summed in a fixed order)."""
    M, K, N = shape
    rng = np.random.default_rng(M + 3 * K + 7 * N)
    a = rng.standard_normal((K, M) if ta else (M, K)).astype(np.float32)
    b = rng.standard_normal((N, K) if tb else (K, N)).astype(np.float32)
    sums = {}
    for nt in (1, 2):
        _core.set_num_threads(nt)
        s = T(np.full(M, np.nan, np.float32))
        got = _core.matmul(T(a), T(b), ta, tb, a_row_sums=s)
        assert np.array_equal(np.asarray(got), np.asarray(_core.matmul(T(a), T(b), ta, tb)))
        sums[nt] = np.asarray(s).copy()
    assert np.array_equal(sums[1], sums[2])
    op_a = (a.T if ta else a).astype(np.float64)
    np.testing.assert_allclose(sums[1], op_a.sum(axis=1), rtol=0, atol=1e-6 * K * np.abs(op_a).sum(axis=1).max())
    # with a GELU on a, the sums are of gelu(a), exactly as the product sees it
    s = T(np.zeros(M, np.float32))
    _core.matmul(T(a), T(b), ta, tb, gelu_a="tanh", a_row_sums=s)
    ga = np.asarray(_core.gelu_forward(T(op_a.astype(np.float32)), "tanh")).astype(np.float64)
    np.testing.assert_allclose(np.asarray(s), ga.sum(axis=1), rtol=0, atol=1e-6 * K * np.abs(ga).sum(axis=1).max())


@pytest.mark.parametrize("M", [1, 6, 14, 29])
def test_row_sums_in_one_k_block_are_sequential(each_isa, M):
    """Within a k block (here the whole of K = 200, below every kernel's kc) each row is summed left
    to right from +0, whichever kernel packs it: bitwise float32 cumsum's last column."""
    rng = np.random.default_rng(M)
    a = rng.standard_normal((200, M)).astype(np.float32)  # A transposed: always packed
    a[0, 0] = -0.0
    s = T(np.full(M, np.nan, np.float32))
    _core.matmul(T(a), T(rng.standard_normal((200, 40)).astype(np.float32)), True, False, a_row_sums=s)
    assert np.array_equal(np.asarray(s), np.cumsum(a.T, axis=1, dtype=np.float32)[:, -1])


@pytest.mark.parametrize("ta", [False, True])
def test_row_sums_float64_and_degenerate_shapes(ta):
    rng = np.random.default_rng(8)
    a = rng.standard_normal((9, 5) if ta else (5, 9))
    b = rng.standard_normal((9, 4))
    s = T(np.zeros(5))
    _core.matmul(T(a), T(b), ta, False, a_row_sums=s)
    np.testing.assert_allclose(np.asarray(s), (a.T if ta else a).sum(axis=1), rtol=1e-13, atol=1e-13)
    a32 = a.astype(np.float32)
    for b_cols, alpha in ((0, 1.0), (4, 0.0)):  # no product to run, but rows to sum
        s = T(np.zeros(5, np.float32))
        _core.matmul(T(a32), T(np.ones((9, b_cols), np.float32)), ta, False, alpha=alpha, a_row_sums=s)
        np.testing.assert_allclose(np.asarray(s), (a32.T if ta else a32).astype(np.float64).sum(axis=1), atol=1e-5)
    s = T(np.full(5, 7.0, np.float32))  # K = 0: empty sums
    _core.matmul(T(np.ones((0, 5) if ta else (5, 0), np.float32)), T(np.ones((0, 4), np.float32)), ta, False,
                 a_row_sums=s)
    assert np.array_equal(np.asarray(s), np.zeros(5, np.float32))


def test_row_sums_bad_input():
    a, b = T(np.ones((3, 4), np.float32)), T(np.ones((4, 5), np.float32))
    with pytest.raises(ValueError, match=r"a_row_sums has shape \(5,\), expected \(3,\)"):
        _core.matmul(a, b, a_row_sums=T(np.ones(5, np.float32)))
    with pytest.raises(TypeError):
        _core.matmul(a, b, a_row_sums=T(np.ones(3, np.float64)))
    with pytest.raises(ValueError, match="need 2-D a and b"):
        _core.matmul(T(np.ones((2, 3, 4), np.float32)), b, a_row_sums=T(np.ones(3, np.float32)))


# ---- gelu_grad: a GELU's input gradient, the product times gelu'(G), applied tile by tile

# (M, K, N): one element; edge tiles; the femto MLP's dh (one k block, A read in place); K = 512,
# the deepest product the AVX-512 kernel makes in one k block; K past one k block; a long K into
# a small C (split into chunks)
GELU_GRAD_SHAPES = [(1, 1, 1), (129, 65, 257), (300, 64, 256), (37, 512, 53), (37, 600, 53), (61, 2053, 7)]


def in_place_allowed(K, dtype=np.float32):
    """Where out may be gelu_grad_of itself: float64 always; float32 for a product made in one k
    block (256 deep on generic and AVX2, 512 on AVX-512; these shapes never split K at K < 1024)."""
    return dtype == np.float64 or K <= (512 if _core.cpu_isa() == "avx512" else 256)


@pytest.mark.parametrize("nt", [1, 2])
@pytest.mark.parametrize("ta,tb", TRANSPOSES)
@pytest.mark.parametrize("shape", GELU_GRAD_SHAPES, ids=lambda s: "x".join(map(str, s)))
def test_gelu_grad_bitwise_equals_unfused(each_isa, nt, ta, tb, shape):
    """matmul(..., gelu_grad=, gelu_grad_of=G) is bitwise gelu_backward(matmul(...), G), into a new
    tensor and, where allowed, written over G itself (dh over h)."""
    _core.set_num_threads(nt)
    M, K, N = shape
    rng = np.random.default_rng(M * 5 + K * 3 + N)
    a = rng.standard_normal((K, M) if ta else (M, K)).astype(np.float32)
    b = (rng.standard_normal((N, K) if tb else (K, N)) / np.sqrt(K)).astype(np.float32)
    g = (rng.standard_normal((M, N)) * 3).astype(np.float32)
    for approx in ("tanh", "none"):
        for alpha in (1.0, -0.75):
            want = np.asarray(_core.gelu_backward(_core.matmul(T(a), T(b), ta, tb, alpha=alpha), T(g), approx))
            got = _core.matmul(T(a), T(b), ta, tb, alpha=alpha, gelu_grad=approx, gelu_grad_of=T(g))
            assert np.array_equal(np.asarray(got), want), f"approximate={approx}, alpha={alpha}"
            g_t = T(g.copy())
            if in_place_allowed(K):
                out = _core.matmul(T(a), T(b), ta, tb, out=g_t, alpha=alpha, gelu_grad=approx, gelu_grad_of=g_t)
                assert out.same_storage(g_t)
                assert np.array_equal(np.asarray(g_t), want), f"in place, approximate={approx}, alpha={alpha}"
            else:
                with pytest.raises(ValueError, match="one pass over K"):
                    _core.matmul(T(a), T(b), ta, tb, out=g_t, gelu_grad=approx, gelu_grad_of=g_t)


@pytest.mark.parametrize("ta,tb", TRANSPOSES)
def test_gelu_grad_float64(ta, tb):
    """float64 (gradient checks): bitwise the unfused ops, in place too (any K), and the tanh form
    against numpy's closed form."""
    M, K, N = 23, 300, 31
    rng = np.random.default_rng(8)
    a, b = rng.standard_normal((K, M) if ta else (M, K)), rng.standard_normal((N, K) if tb else (K, N))
    g = rng.standard_normal((M, N)) * 3
    for approx in ("tanh", "none"):
        want = np.asarray(_core.gelu_backward(_core.matmul(T(a), T(b), ta, tb), T(g), approx))
        assert np.array_equal(np.asarray(_core.matmul(T(a), T(b), ta, tb, gelu_grad=approx, gelu_grad_of=T(g))), want)
        g_t = T(g.copy())
        _core.matmul(T(a), T(b), ta, tb, out=g_t, gelu_grad=approx, gelu_grad_of=g_t)
        assert np.array_equal(np.asarray(g_t), want)
    k = np.sqrt(2 / np.pi)
    t = np.tanh(k * (g + 0.044715 * g**3))
    dgelu = 0.5 * (1 + t) + 0.5 * g * (1 - t * t) * k * (1 + 3 * 0.044715 * g * g)
    product = (a.T if ta else a) @ (b.T if tb else b)
    got = np.asarray(_core.matmul(T(a), T(b), ta, tb, gelu_grad="tanh", gelu_grad_of=T(g)))
    np.testing.assert_allclose(got, product * dgelu, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("K", [0, 8, 600])  # empty; one k block (in place allowed); past one k block
def test_gelu_grad_alpha_zero_and_empty_k(each_isa, K):
    """An empty product gives 0 * gelu'(G) element by element, as the unfused ops: -0.0 where the
    derivative is negative, NaN where G is not finite; in place too where allowed."""
    rng = np.random.default_rng(2)
    a, b = rng.standard_normal((4, K)).astype(np.float32), rng.standard_normal((K, 5)).astype(np.float32)
    g = np.full((4, 5), -2.0, np.float32)
    g[0, 0], g[1, 1], g[2, 2] = np.nan, np.inf, 3.0
    for alpha in (0.0, 1.0):
        want = np.asarray(_core.gelu_backward(_core.matmul(T(a), T(b), alpha=alpha), T(g), "tanh"))
        got = np.asarray(_core.matmul(T(a), T(b), alpha=alpha, gelu_grad="tanh", gelu_grad_of=T(g)))
        np.testing.assert_array_equal(got, want)
        assert np.array_equal(np.signbit(got), np.signbit(want))
        if K and in_place_allowed(K):
            g_t = T(g.copy())
            _core.matmul(T(a), T(b), out=g_t, alpha=alpha, gelu_grad="tanh", gelu_grad_of=g_t)
            np.testing.assert_array_equal(np.asarray(g_t), want)
            assert np.array_equal(np.signbit(np.asarray(g_t)), np.signbit(want))


def test_gelu_grad_empty_k_and_bad_input(each_isa):
    a, b, g = T(np.ones((3, 0), np.float32)), T(np.ones((0, 5), np.float32)), T(np.ones((3, 5), np.float32))
    assert np.array_equal(np.asarray(_core.matmul(a, b, gelu_grad="tanh", gelu_grad_of=g)), np.zeros((3, 5)))
    a, b = T(np.ones((3, 4), np.float32)), T(np.ones((4, 5), np.float32))
    with pytest.raises(ValueError, match="go together"):
        _core.matmul(a, b, gelu_grad="tanh")
    with pytest.raises(ValueError, match="go together"):
        _core.matmul(a, b, gelu_grad_of=g)
    with pytest.raises(ValueError, match=r"gelu_grad_of has shape \(5, 3\), expected \(3, 5\)"):
        _core.matmul(a, b, gelu_grad="tanh", gelu_grad_of=T(np.ones((5, 3), np.float32)))
    with pytest.raises(TypeError):
        _core.matmul(a, b, gelu_grad="tanh", gelu_grad_of=T(np.ones((3, 5), np.float64)))
    with pytest.raises(ValueError, match="unknown gelu_grad='relu'"):
        _core.matmul(a, b, gelu_grad="relu", gelu_grad_of=g)
    with pytest.raises(ValueError, match="one GELU form"):
        _core.matmul(a, b, gelu_a="none", gelu_grad="tanh", gelu_grad_of=g)
    with pytest.raises(ValueError, match="neither beta nor a bias"):
        _core.matmul(a, b, bias=T(np.ones(5, np.float32)), gelu_grad="tanh", gelu_grad_of=g)
    with pytest.raises(ValueError, match="neither beta nor a bias"):
        _core.matmul(a, b, out=T(np.ones((3, 5), np.float32)), beta=1.0, gelu_grad="tanh", gelu_grad_of=g)
    with pytest.raises(ValueError, match="need 2-D a and b"):
        _core.matmul(T(np.ones((2, 3, 4), np.float32)), b, gelu_grad="tanh", gelu_grad_of=T(np.ones((2, 3, 5),
                                                                                                   np.float32)))
    rows = T(np.ones((6, 5), np.float32))  # out and gelu_grad_of overlapping, not the same tensor
    with pytest.raises(ValueError, match="shares memory"):
        _core.matmul(a, b, out=rows.narrow0(0, 3), gelu_grad="tanh", gelu_grad_of=rows.narrow0(1, 3))
