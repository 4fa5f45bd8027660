"""femtogpt._core.matmul against numpy in float64: every transpose, alpha/beta,
odd shapes, batches, every ISA this CPU has, 1 and 2 threads, and bad input.

Tolerance. The products of float32 inputs are exact in float64, so the error is
the float32 summation's. A K-term sum's error is at most K*u*sum|a_p*b_p| with
u = 2**-24 (the classic bound, gamma_K), and behaves like sqrt(K)*u*... for random
rounding. We allow 1e-5*sqrt(K)*(|op(a)| @ |op(b)|): that is >= K*u*(...) for every
K <= (1e-5/u)**2 ~ 28000 (so it covers the worst case at every K tested), yet a
single dropped or doubled term (~ (|a|@|b|)/K) exceeds it at every K <= 28000 too.
Beta adds one rounding of beta*C: 1e-6*|beta*C| more.
"""

import numpy as np
import pytest

from femtogpt import _core

ISAS = _core.available_isas()
THREADS = [1, 2]
TRANSPOSES = [(False, False), (False, True), (True, False), (True, True)]
# (M, K, N): ones, primes, non-multiples of every register tile (4x8, 6x16, 14x32)
# and cache block (mc 120..168, kc 256..512, nc ~4080), K across k blocks.
SHAPES = [(1, 1, 1), (7, 13, 5), (129, 65, 257), (1000, 1, 1000), (300, 520, 150), (7, 9, 4100), (33, 600, 17)]


pytestmark = pytest.mark.usefixtures("restore_isa_and_threads")


def operands(rng, M, K, N, ta, tb, dtype=np.float32, batch=None):
    lead = () if batch is None else (batch,)
    a = rng.standard_normal(lead + ((K, M) if ta else (M, K))).astype(dtype)
    b = rng.standard_normal(lead + ((N, K) if tb else (K, N))).astype(dtype)
    return a, b


def op(x, t):
    return np.swapaxes(x, -1, -2) if t else x


def reference(a, b, ta, tb, alpha=1.0, c=None, beta=0.0):
    """float64 result and its tolerance (see the module docstring)."""
    a64, b64 = op(a, ta).astype(np.float64), op(b, tb).astype(np.float64)
    K = a64.shape[-1]
    ref = alpha * (a64 @ b64)
    tol = 1e-5 * np.sqrt(K) * abs(alpha) * (np.abs(a64) @ np.abs(b64)) + 1e-30
    if c is not None and beta != 0.0:
        ref = ref + beta * c.astype(np.float64)
        tol = tol + 1e-6 * np.abs(beta * c.astype(np.float64))
    return ref, tol


def check(got, ref, tol):
    got = np.asarray(got)
    assert got.shape == ref.shape
    err = np.abs(got.astype(np.float64) - ref)
    assert np.all(err <= tol), f"max error {err.max():.3g}, worst error/tolerance {(err / tol).max():.3g}"


def mm(a, b, ta=False, tb=False, out=None, **kw):
    return _core.matmul(_core.from_numpy(a), _core.from_numpy(b), ta, tb, out=out, **kw)


@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize("nt", THREADS)
@pytest.mark.parametrize("ta,tb", TRANSPOSES)
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
def test_matches_numpy(isa, nt, ta, tb, shape):
    _core.set_cpu_isa(isa)
    _core.set_num_threads(nt)
    rng = np.random.default_rng(hash(shape) % 2**32)
    a, b = operands(rng, *shape, ta, tb)
    check(mm(a, b, ta, tb), *reference(a, b, ta, tb))


@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize("ta,tb", TRANSPOSES)
@pytest.mark.parametrize("alpha,beta", [(0.5, -1.5), (2.0, 1.0), (-1.0, 0.25), (0.0, 0.5), (0.0, 0.0)])
@pytest.mark.parametrize("K", [300, 1100])
def test_alpha_beta(isa, ta, tb, alpha, beta, K):
    _core.set_cpu_isa(isa)
    rng = np.random.default_rng(7)
    # edge tiles in both directions and two k blocks (beta then 1); K=1100: split into K chunks
    M, N = 37, 53
    a, b = operands(rng, M, K, N, ta, tb)
    c0 = rng.standard_normal((M, N)).astype(np.float32)
    out = _core.from_numpy(c0)
    res = mm(a, b, ta, tb, out=out, alpha=alpha, beta=beta)
    assert res.same_storage(out)
    check(out, *reference(a, b, ta, tb, alpha, c0, beta))


@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize("shape", [(6, 16, 16), (13, 300, 29), (1, 1, 1)])
def test_beta_zero_does_not_read_out(isa, shape):
    _core.set_cpu_isa(isa)
    rng = np.random.default_rng(3)
    a, b = operands(rng, *shape, False, False)
    out = _core.from_numpy(np.full((shape[0], shape[2]), np.nan, np.float32))
    mm(a, b, out=out, alpha=1.0, beta=0.0)
    assert np.all(np.isfinite(np.asarray(out)))
    check(out, *reference(a, b, False, False))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_k_zero(dtype):
    a = np.zeros((3, 0), dtype)
    b = np.zeros((0, 4), dtype)
    assert np.array_equal(np.asarray(mm(a, b)), np.zeros((3, 4)))
    c0 = np.arange(12, dtype=dtype).reshape(3, 4)
    out = _core.from_numpy(c0)
    mm(a, b, out=out, beta=2.0)
    assert np.array_equal(np.asarray(out), 2 * c0)


@pytest.mark.parametrize("shape", [(0, 5, 3), (4, 5, 0), (0, 0, 0)])
def test_zero_sized(shape):
    M, K, N = shape
    a = np.ones((M, K), np.float32)
    b = np.ones((K, N), np.float32)
    assert np.asarray(mm(a, b)).shape == (M, N)
    assert np.asarray(mm(a[None], b[None])).shape == (1, M, N)
    assert np.asarray(mm(np.ones((0, M, K), np.float32), b)).shape == (0, M, N)


@pytest.mark.parametrize("ta,tb", TRANSPOSES)
@pytest.mark.parametrize("shape", [(1, 1, 1), (7, 13, 5), (65, 130, 33)])
def test_float64(ta, tb, shape):
    rng = np.random.default_rng(11)
    a, b = operands(rng, *shape, ta, tb, np.float64)
    c0 = rng.standard_normal((shape[0], shape[2]))
    out = _core.from_numpy(c0)
    mm(a, b, ta, tb, out=out, alpha=0.75, beta=-0.5)
    ref = 0.75 * (op(a, ta) @ op(b, tb)) - 0.5 * c0
    np.testing.assert_allclose(np.asarray(out), ref, rtol=1e-12, atol=1e-12 * np.sqrt(shape[1]))


@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize("nt", THREADS)
@pytest.mark.parametrize("ta,tb", TRANSPOSES)
@pytest.mark.parametrize("bshape", [(5, 7, 13, 9), (128, 64, 16, 64), (3, 150, 70, 40)])
def test_batched(isa, nt, ta, tb, bshape):
    """3-D x 3-D: attention's per-head products (batch >= threads, small) and a few large ones."""
    _core.set_cpu_isa(isa)
    _core.set_num_threads(nt)
    batch, M, K, N = bshape
    rng = np.random.default_rng(5)
    a, b = operands(rng, M, K, N, ta, tb, batch=batch)
    check(mm(a, b, ta, tb), *reference(a, b, ta, tb))
    c0 = rng.standard_normal((batch, M, N)).astype(np.float32)
    out = _core.from_numpy(c0)
    mm(a, b, ta, tb, out=out, alpha=0.5, beta=2.0)
    check(out, *reference(a, b, ta, tb, 0.5, c0, 2.0))


@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize("nt", THREADS)
@pytest.mark.parametrize("ta,tb", TRANSPOSES)
def test_shared_b(isa, nt, ta, tb):
    """3-D x 2-D: one b for the whole batch (a linear layer on (B,T,C))."""
    _core.set_cpu_isa(isa)
    _core.set_num_threads(nt)
    batch, M, K, N = 4, 33, 70, 45
    rng = np.random.default_rng(9)
    a, _ = operands(rng, M, K, N, ta, tb, batch=batch)
    _, b = operands(rng, M, K, N, ta, tb)
    got = np.asarray(mm(a, b, ta, tb))
    assert got.shape == (batch, M, N)
    check(got, *reference(a, b[None], ta, tb))


@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize(
    "ashape,bshape,ta,tb",
    [
        ((2048, 64), (64, 192), False, False),  # tall, the small model's linear layers
        ((256, 2048), (256, 64), True, False),  # weight gradient shape
        ((1031, 37), (1031, 61), True, False),  # long K into a small C: split into K chunks
        ((61, 2053), (2053, 7), False, False),
        ((300, 300), (301, 300), False, True),
        ((128, 64, 16), (128, 64, 16), False, True),  # per-head scores, batch-parallel
        ((8, 100, 70), (70, 90), False, False),  # shared b, folded into one tall product
    ],
)
def test_threads_bitwise_equal(isa, ashape, bshape, ta, tb):
    """Threads split the M x N tiles, and K only into chunks fixed by K: 1 and 2 threads give identical bits."""
    _core.set_cpu_isa(isa)
    rng = np.random.default_rng(2)
    a = rng.standard_normal(ashape).astype(np.float32)
    b = rng.standard_normal(bshape).astype(np.float32)
    results = []
    for nt in (1, 2):
        _core.set_num_threads(nt)
        results.append(np.asarray(mm(a, b, ta, tb)).copy())
    assert np.array_equal(results[0], results[1])


@pytest.mark.parametrize("K", [1024, 1153, 1154, 1537, 1538, 1539, 2047, 2100])
@pytest.mark.parametrize("ta,tb", [(False, False), (True, False)])
def test_long_k_split_into_chunks(each_isa, K, ta, tb):
    """A long K into a small C is cut into K chunks; a shorter last chunk may run in longer k blocks
    than the others (K=1154 with 192-deep blocks: 385, 385, 384), which once overflowed its scratch.
    (The kernels' k blocks are now 256 and 512 deep, which chunks of at most 512 never split
    unevenly like that; the scratch is still sized for it, and these K still cross chunks.)"""
    rng = np.random.default_rng(K)
    a, b = operands(rng, 37, K, 19, ta, tb)
    results = []
    for nt in (1, 2):
        _core.set_num_threads(nt)
        results.append(np.asarray(mm(a, b, ta, tb)).copy())
        check(results[-1], *reference(a, b, ta, tb))
    assert np.array_equal(results[0], results[1])


def test_isas_agree_within_tolerance():
    rng = np.random.default_rng(4)
    a, b = operands(rng, 131, 257, 67, False, True)
    ref, tol = reference(a, b, False, True)
    for isa in ISAS:
        _core.set_cpu_isa(isa)
        check(mm(a, b, False, True), ref, tol)


def test_force_unknown_isa():
    with pytest.raises(ValueError, match="unknown ISA"):
        _core.set_cpu_isa("sse9")


# ---- bad input -----------------------------------------------------------------------------


def t(*shape, dtype=np.float32):
    return _core.from_numpy(np.ones(shape, dtype))


def test_inner_dims_mismatch():
    with pytest.raises(ValueError, match="inner dimensions"):
        _core.matmul(t(3, 4), t(5, 6))
    with pytest.raises(ValueError, match="inner dimensions"):
        _core.matmul(t(3, 4), t(6, 5), trans_b=True)
    with pytest.raises(ValueError, match="inner dimensions"):
        _core.matmul(t(4, 3), t(3, 6), trans_a=True)


@pytest.mark.parametrize("ashape,bshape", [((3,), (3, 4)), ((3, 4), (4,)), ((2, 2, 3, 4), (4, 5)), ((3, 4), (2, 4, 5))])
def test_wrong_rank(ashape, bshape):
    with pytest.raises(ValueError, match="2-D x 2-D"):
        _core.matmul(t(*ashape), t(*bshape))


def test_batch_mismatch():
    with pytest.raises(ValueError, match="batch sizes differ"):
        _core.matmul(t(2, 3, 4), t(3, 4, 5))


@pytest.mark.parametrize("dtype", [np.int32, np.int64])
def test_int_dtypes(dtype):
    with pytest.raises(TypeError):
        _core.matmul(t(3, 4, dtype=dtype), t(4, 5, dtype=dtype))
    with pytest.raises(TypeError):
        _core.matmul(t(3, 4), t(4, 5, dtype=dtype))


def test_mixed_float_dtypes():
    with pytest.raises((TypeError, ValueError)):
        _core.matmul(t(3, 4), t(4, 5, dtype=np.float64))


def test_out_wrong_shape():
    with pytest.raises(ValueError, match="out has shape"):
        _core.matmul(t(3, 4), t(4, 5), out=t(5, 3))
    with pytest.raises(ValueError, match="out has shape"):
        _core.matmul(t(2, 3, 4), t(4, 5), out=t(3, 5))


def test_out_wrong_dtype():
    with pytest.raises((TypeError, ValueError)):
        _core.matmul(t(3, 4), t(4, 5), out=t(3, 5, dtype=np.float64))


def test_beta_without_out():
    with pytest.raises(ValueError, match="needs an `out`"):
        _core.matmul(t(3, 4), t(4, 5), beta=1.0)
