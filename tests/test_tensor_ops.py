"""Elementwise, reduction and layout ops of _core against numpy float64."""

import itertools

import numpy as np
import pytest

from femtogpt import _core

FLOATS = [np.float32, np.float64]
ALL_DTYPES = [np.float32, np.float64, np.int32, np.int64]


def tol(dtype):
    return dict(rtol=1e-5, atol=1e-6) if dtype == np.float32 else dict(rtol=1e-12, atol=1e-12)


def t(a):
    return _core.from_numpy(np.asarray(a))


def arr(x):
    return np.asarray(x)


def rand(shape, dtype, seed=0):
    rng = np.random.default_rng(seed)
    if np.issubdtype(dtype, np.integer):
        return np.asarray(rng.integers(-1000, 1000, size=shape)).astype(dtype)
    return np.asarray(rng.standard_normal(shape)).astype(dtype)


@pytest.fixture
def set_threads():
    """Yields a setter for the thread count and restores it afterwards."""
    before = _core.get_num_threads()
    yield _core.set_num_threads
    _core.set_num_threads(before)


# ---------------------------------------------------------------- broadcasting

# (a shape, b shape): every accepted broadcast
BROADCASTS = [
    ((7,), (7,)),
    ((3, 5), (3, 5)),
    ((13, 17), (17,)),  # bias onto (N, C)
    ((2, 3, 5), (3, 5)),  # (T, C) onto (B, T, C)
    ((2, 3, 5), (5,)),
    ((2, 3, 5), (1, 5)),  # leading 1s dropped
    ((2, 3, 5), (1, 3, 5)),
    ((2, 3, 5), ()),  # 0-D
    ((2, 3, 5), (1,)),  # one element
    ((2, 3, 5), (1, 1)),
    ((5,), (1, 1, 1)),  # one element: the result keeps a's shape
    ((), (1,)),
    ((), ()),
    ((1,), (1,)),
    ((0, 5), (5,)),
    ((40000, 3), (3,)),  # many chunks, short period
    ((3, 70001), (70001,)),  # period longer than a chunk
    ((70001,), ()),
]


@pytest.mark.parametrize("dtype", FLOATS)
@pytest.mark.parametrize("ashape,bshape", BROADCASTS)
def test_add_mul_broadcast(ashape, bshape, dtype):
    a, b = rand(ashape, dtype, 1), rand(bshape, dtype, 2)
    a64, b64 = a.astype(np.float64), b.astype(np.float64)
    expect_shape = a.shape
    a64, b64 = a64.reshape(expect_shape), (b64.reshape(()) if b.size == 1 else b64)
    got = arr(_core.add(t(a), t(b)))
    assert got.shape == expect_shape and got.dtype == dtype
    np.testing.assert_allclose(got, a64 + b64, **tol(dtype))
    np.testing.assert_allclose(arr(_core.add(t(a), t(b), -0.37)), a64 - 0.37 * b64, **tol(dtype))
    got = arr(_core.mul(t(a), t(b)))
    assert got.shape == expect_shape
    np.testing.assert_allclose(got, a64 * b64, **tol(dtype))
    dst = t(a)  # in place (a bias added to a matmul's output): the same kernel, the same bits
    _core.add_(dst, t(b), -0.37)
    assert arr(dst).tobytes() == arr(_core.add(t(a), t(b), -0.37)).tobytes()


@pytest.mark.parametrize("ashape,bshape", [((3, 5), (3,)), ((3, 5), (5, 3)), ((5,), (2, 5)), ((2, 3), (2, 1)),
                                           ((2, 3, 5), (2, 1, 5)), ((1,), (2,))])
def test_add_mul_bad_broadcast(ashape, bshape):
    a, b = t(rand(ashape, np.float32)), t(rand(bshape, np.float32))
    for op in (_core.add, _core.mul):
        with pytest.raises(ValueError) as e:
            op(a, b)
        assert str(ashape).replace(" ", "") in str(e.value).replace(" ", "")
        assert str(bshape).replace(" ", "") in str(e.value).replace(" ", "")


def test_elementwise_type_errors():
    f32, f64 = t(rand((4,), np.float32)), t(rand((4,), np.float64))
    i32, i64 = t(rand((4,), np.int32)), t(rand((4,), np.int64))
    for bad in (i32, i64):
        with pytest.raises(TypeError):
            _core.add(bad, bad)
        with pytest.raises(TypeError):
            _core.mul(bad, bad)
        with pytest.raises(TypeError):
            _core.scale(bad, 2.0)
        with pytest.raises(TypeError):
            _core.add_(bad, bad)
        with pytest.raises(TypeError):
            _core.sum_all(bad)
        with pytest.raises(TypeError):
            _core.mean_all(bad)
        with pytest.raises(TypeError):
            _core.sum_to_suffix(bad, [4])
    with pytest.raises(TypeError):
        _core.add(f32, f64)
    with pytest.raises(TypeError):
        _core.mul(f64, f32)
    with pytest.raises(TypeError):
        _core.add_(f32, f64)
    with pytest.raises(TypeError):
        _core.copy_(f32, f64)


@pytest.mark.parametrize("dtype", FLOATS)
@pytest.mark.parametrize("shape", [(), (1,), (13,), (3, 7), (40961,)])
def test_scale_add_inplace(shape, dtype):
    a, b = rand(shape, dtype, 3), rand(shape, dtype, 4)
    np.testing.assert_allclose(arr(_core.scale(t(a), 1.7)), a.astype(np.float64) * 1.7, **tol(dtype))
    dst = t(a)
    assert _core.add_(dst, t(b), 0.5) is None
    np.testing.assert_allclose(arr(dst), a.astype(np.float64) + 0.5 * b, **tol(dtype))
    dst = t(a)
    _core.add_(dst, t(b))
    np.testing.assert_allclose(arr(dst), a.astype(np.float64) + b, **tol(dtype))
    dst = t(a)
    _core.add_(dst, dst, 2.0)  # x += 2 x
    np.testing.assert_allclose(arr(dst), 3.0 * a.astype(np.float64), **tol(dtype))


def test_add_inplace_shape_mismatch():
    with pytest.raises(ValueError, match=r"\(4, 3\).*\(3, 4\)"):
        _core.add_(t(rand((3, 4), np.float32)), t(rand((4, 3), np.float32)))
    with pytest.raises(ValueError, match=r"\(3, 4\).*\(4,\)"):  # dst does not broadcast onto src
        _core.add_(t(rand((4,), np.float32)), t(rand((3, 4), np.float32)))


def test_add_inplace_partial_overlap_rejected():
    x = t(rand((4, 5), np.float32))
    with pytest.raises(ValueError, match="overlap"):
        _core.add_(x.narrow0(0, 3), x.narrow0(1, 3))
    # a broadcast src that is dst's own first row would be overwritten while it is still being read
    with pytest.raises(ValueError, match="share memory"):
        _core.add_(x, x.narrow0(0, 1).view([5]))


@pytest.mark.parametrize("dtype", ALL_DTYPES)
@pytest.mark.parametrize("shape", [(), (1,), (5, 3), (70003,)])
def test_fill_copy(shape, dtype):
    dst = t(np.zeros(shape, dtype))
    assert _core.fill_(dst, 7) is None
    assert np.array_equal(arr(dst), np.full(shape, 7, dtype))
    src = rand(shape, dtype, 5)
    assert _core.copy_(dst, t(src)) is None
    assert np.array_equal(arr(dst), src)


def test_fill_bad_int_value():
    with pytest.raises(ValueError):
        _core.fill_(t(np.zeros(3, np.int32)), 0.5)
    with pytest.raises(ValueError):
        _core.fill_(t(np.zeros(3, np.int32)), 1e10)


def test_copy_errors():
    with pytest.raises(ValueError, match=r"\(3,\).*\(4,\)"):
        _core.copy_(t(np.zeros(3)), t(np.zeros(4)))
    with pytest.raises(TypeError):
        _core.copy_(t(np.zeros(3, np.int64)), t(np.zeros(3, np.int32)))


def test_copy_overlapping_views():
    base = np.arange(20, dtype=np.float32).reshape(5, 4)
    x = t(base)
    _core.copy_(x.narrow0(1, 3), x.narrow0(0, 3))
    expect = base.copy()
    expect[1:4] = base[0:3]
    assert np.array_equal(arr(x), expect)


# ---------------------------------------------------------------- reductions

SUFFIX_CASES = [
    ((), ()),
    ((), (1,)),
    ((7,), (7,)),
    ((7,), ()),
    ((13, 17), (17,)),
    ((13, 17), ()),
    ((2, 3, 5), (3, 5)),
    ((2, 3, 5), (5,)),
    ((2, 3, 5), (1, 5)),
    ((2, 3, 5), (1, 1, 5)),
    ((2, 3, 5), (1,)),
    ((1, 1), (1,)),
    ((4099, 3), (3,)),  # narrow K: split over row blocks
    ((64, 12, 2), (2,)),
    ((257, 769), (769,)),  # wide K: several column tiles
    ((3, 100003), (100003,)),
    ((0, 5), (5,)),
    ((5, 0), (0,)),
    ((131075,), ()),
]


@pytest.mark.parametrize("dtype", FLOATS)
@pytest.mark.parametrize("xshape,shape", SUFFIX_CASES)
def test_sum_to_suffix(xshape, shape, dtype, each_isa):
    x = rand(xshape, dtype, 6)
    got = arr(_core.sum_to_suffix(t(x), list(shape)))
    assert got.shape == shape and got.dtype == dtype
    x64 = x.astype(np.float64)
    expect = x64.reshape(-1, max(1, int(np.prod(shape)))).sum(0).reshape(shape) if x.size else np.zeros(shape)
    np.testing.assert_allclose(got, expect, rtol=1e-6 if dtype == np.float32 else 1e-12, atol=1e-5)


@pytest.mark.parametrize("xshape,shape", [((3, 5), (3,)), ((3, 5), (2, 3, 5)), ((3, 5), (5, 3)), ((2, 3), (2, 1))])
def test_sum_to_suffix_errors(xshape, shape):
    with pytest.raises(ValueError):
        _core.sum_to_suffix(t(rand(xshape, np.float32)), list(shape))


@pytest.mark.parametrize("dtype", FLOATS)
@pytest.mark.parametrize("shape", [(), (1,), (2, 3), (97, 101), (300007,)])
def test_sum_mean_all(shape, dtype, each_isa):
    x = rand(shape, dtype, 7) + 0.5
    s, m = arr(_core.sum_all(t(x))), arr(_core.mean_all(t(x)))
    assert s.shape == () and m.shape == () and s.dtype == dtype
    x64 = x.astype(np.float64)
    # double accumulation: float32 results are the correctly rounded float64 sum
    np.testing.assert_allclose(s, x64.sum(), rtol=1e-7 if dtype == np.float32 else 1e-13)
    np.testing.assert_allclose(m, x64.mean(), rtol=1e-7 if dtype == np.float32 else 1e-13)


def test_sum_all_float32_accumulates_in_double(each_isa):
    x = np.full(10_000_001, 0.1, np.float32)  # a float32 running sum drifts by percents
    np.testing.assert_allclose(arr(_core.sum_all(t(x))), x.astype(np.float64).sum(), rtol=1e-7)


def test_empty_reductions():
    assert arr(_core.sum_all(t(np.zeros((0, 3), np.float32)))) == 0
    assert np.isnan(arr(_core.mean_all(t(np.zeros((0,), np.float64)))))


# ---------------------------------------------------------------- layout

def permutations_of(rank):
    perms = list(itertools.permutations(range(rank)))
    if len(perms) > 12:  # a spread, including identity and full reversal
        perms = perms[:: len(perms) // 10] + [tuple(reversed(range(rank)))]
    return perms


PERMUTE_SHAPES = {1: [(1,), (7,)], 2: [(1, 5), (33, 37), (3, 1)], 3: [(2, 3, 5), (37, 1, 41)],
                  4: [(2, 7, 3, 5), (1, 3, 1, 2)], 5: [(2, 3, 1, 5, 2)], 6: [(2, 1, 3, 2, 1, 2)]}


@pytest.mark.parametrize("dtype", ALL_DTYPES)
@pytest.mark.parametrize("rank", [1, 2, 3, 4, 5, 6])
def test_permute(rank, dtype):
    for shape in PERMUTE_SHAPES[rank]:
        x = rand(shape, dtype, rank)
        for dims in permutations_of(rank):
            got = arr(_core.permute(t(x), list(dims)))
            assert got.dtype == dtype
            assert np.array_equal(got, x.transpose(dims)), (shape, dims)


@pytest.mark.parametrize("shape,dims", [((4, 67, 6, 32), (0, 2, 1, 3)),  # attention (B,T,H,D) -> (B,H,T,D)
                                        ((4, 6, 67, 32), (0, 2, 1, 3)),
                                        ((2, 65, 3, 4, 16), (2, 0, 3, 1, 4)),  # qkv split
                                        ((130, 129), (1, 0)),  # tiled transpose, partial tiles
                                        ((3, 70, 5, 33), (3, 1, 2, 0)),
                                        ((3, 4, 5), (-1, 0, -2))])
def test_permute_gpt_shapes(shape, dims):
    x = rand(shape, np.float32, 8)
    assert np.array_equal(arr(_core.permute(t(x), list(dims))), x.transpose(dims))


def test_permute_scalar_and_empty():
    assert arr(_core.permute(t(np.array(3.5)), [])) == 3.5
    assert arr(_core.permute(t(np.zeros((0, 3))), [1, 0])).shape == (3, 0)


@pytest.mark.parametrize("dims", [[0], [0, 0], [0, 2], [1, 2, 3], [0, -3]])
def test_permute_bad_dims(dims):
    with pytest.raises(ValueError):
        _core.permute(t(np.zeros((2, 3))), dims)


def test_permute_too_many_dims():
    with pytest.raises(ValueError, match="6"):
        _core.permute(t(np.zeros((1,) * 7)), list(range(7)))


@pytest.mark.parametrize("dtype", ALL_DTYPES)
@pytest.mark.parametrize("shape", [(7,), (3, 5), (2, 3, 5), (4, 1, 3, 2)])
def test_slice_and_backward(shape, dtype):
    x = rand(shape, dtype, 9)
    for dim in range(-len(shape), len(shape)):
        n = shape[dim]
        for start, length in [(0, n), (0, 1), (n - 1, 1), (n // 2, n - n // 2), (1 % n, 0)]:
            idx = [slice(None)] * len(shape)
            idx[dim] = slice(start, start + length)
            got = arr(_core.slice(t(x), dim, start, length))
            assert np.array_equal(got, x[tuple(idx)])
            if np.issubdtype(dtype, np.floating):
                back = arr(_core.slice_backward(t(got), list(shape), dim, start))
                expect = np.zeros(shape, dtype)
                expect[tuple(idx)] = got
                assert np.array_equal(back, expect)


def test_slice_round_trip_concat():
    x = rand((3, 11, 4), np.float32, 10)
    for dim, cuts in [(0, [0, 1, 3]), (1, [0, 2, 7, 11]), (2, [0, 4]), (-1, [0, 1, 2, 3, 4])]:
        pieces = [_core.slice(t(x), dim, a, b - a) for a, b in zip(cuts, cuts[1:])]
        assert np.array_equal(arr(_core.concat(pieces, dim)), x)
        # the gradients of the slices sum back to ones
        total = sum(arr(_core.slice_backward(_core.from_numpy(np.ones(p.shape, np.float32)), list(x.shape), dim, a))
                    for p, a in zip(pieces, cuts))
        assert np.array_equal(total, np.ones(x.shape, np.float32))


def test_slice_gpt_qkv_split():
    qkv = rand((4, 67, 3 * 48), np.float32, 11)  # (B, T, 3C) -> q, k, v
    parts = [arr(_core.slice(t(qkv), 2, i * 48, 48)) for i in range(3)]
    for i, p in enumerate(parts):
        assert np.array_equal(p, qkv[:, :, i * 48:(i + 1) * 48])


@pytest.mark.parametrize("dtype", ALL_DTYPES)
def test_concat(dtype):
    a, b, c = rand((2, 3, 5), dtype, 1), rand((2, 1, 5), dtype, 2), rand((2, 0, 5), dtype, 3)
    assert np.array_equal(arr(_core.concat([t(a), t(b), t(c)], 1)), np.concatenate([a, b, c], 1))
    assert np.array_equal(arr(_core.concat([t(a)], 0)), a)
    assert np.array_equal(arr(_core.concat([t(a), t(a)], -1)), np.concatenate([a, a], -1))
    big = [rand((300, 7, 64), dtype, s) for s in range(3)]
    assert np.array_equal(arr(_core.concat([t(p) for p in big], 1)), np.concatenate(big, 1))


def test_layout_errors():
    x = t(np.zeros((3, 4), np.float32))
    with pytest.raises(ValueError):
        _core.slice(x, 2, 0, 1)
    with pytest.raises(ValueError):
        _core.slice(x, 1, 3, 2)
    with pytest.raises(ValueError):
        _core.slice(x, 1, -1, 1)
    with pytest.raises(ValueError):
        _core.slice(x, 0, 0, -1)
    with pytest.raises(ValueError):
        _core.slice(t(np.array(1.0)), 0, 0, 1)
    with pytest.raises(ValueError):
        _core.slice_backward(x, [3, 5, 1], 1, 0)
    with pytest.raises(ValueError):
        _core.slice_backward(x, [4, 4], 1, 0)
    with pytest.raises(ValueError):
        _core.slice_backward(x, [3, 5], 1, 2)
    with pytest.raises(ValueError):
        _core.concat([], 0)
    with pytest.raises(ValueError, match=r"\(3, 5\)"):
        _core.concat([x, t(np.zeros((3, 5), np.float32))], 0)
    with pytest.raises(ValueError):
        _core.concat([x, t(np.zeros((3,), np.float32))], 0)
    with pytest.raises(TypeError):
        _core.concat([x, t(np.zeros((3, 4), np.float64))], 0)
    with pytest.raises(ValueError):
        _core.concat([x, x], 2)


# ---------------------------------------------------------------- threads

def test_one_and_two_threads_bitwise(set_threads, each_isa):
    rng = np.random.default_rng(12)
    x = rng.standard_normal((64, 129, 48)).astype(np.float32)
    bias = rng.standard_normal((48,)).astype(np.float32)
    y = rng.standard_normal((64, 129, 48)).astype(np.float32)

    def run():
        return [arr(_core.add(t(x), t(bias), 0.3)), arr(_core.mul(t(x), t(y))),
                arr(_core.scale(t(x), 0.7)),
                arr(_core.sum_to_suffix(t(x), [48])), arr(_core.sum_to_suffix(t(x), [129, 48])),
                arr(_core.sum_to_suffix(t(x.reshape(-1, 3)), [3])),
                arr(_core.sum_all(t(x))), arr(_core.mean_all(t(x))),
                arr(_core.permute(t(x), [1, 0, 2])), arr(_core.permute(t(x), [2, 1, 0])),
                arr(_core.concat([t(x), t(y)], 1)), arr(_core.slice(t(x), 1, 5, 100))]

    set_threads(1)
    one = run()
    set_threads(2)
    two = run()
    for a, b in zip(one, two):
        assert a.tobytes() == b.tobytes()
