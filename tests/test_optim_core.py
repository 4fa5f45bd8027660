"""_core.adamw_step, grad_norm_sq and scale_all_ against numpy float64."""

import numpy as np
import pytest

from femtogpt import _core


def t(a):
    return _core.from_numpy(np.asarray(a))


def arr(x):
    return np.asarray(x)


def adamw_reference(p, g, m, v, lr, beta1, beta2, eps, wd, step):
    """torch.optim.AdamW's update (decoupled weight decay, bias correction), float64."""
    p = p * (1 - lr * wd)
    m = beta1 * m + (1 - beta1) * g
    v = beta2 * v + (1 - beta2) * g * g
    mhat = m / (1 - beta1 ** step)
    vhat = v / (1 - beta2 ** step)
    p = p - lr * mhat / (np.sqrt(vhat) + eps)
    return p, m, v


SHAPES = [(1,), (7,), (13, 17), (3, 5, 2), (), (65537,), (129, 257), (15,), (16,), (17,), (31,), (33,)]
WDS = [0.0, 0.1, 0.0, 0.01, 0.5, 0.1, 0.0, 0.1, 0.0, 0.1, 0.0, 0.1]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_adamw_matches_torch_formula(dtype, each_isa):
    rng = np.random.default_rng(0)
    params = [np.asarray(rng.standard_normal(s)).astype(dtype) for s in SHAPES]
    ref = [(p.astype(np.float64), np.zeros(p.shape), np.zeros(p.shape)) for p in params]
    tp = [t(p) for p in params]
    tm = [t(np.zeros(p.shape, dtype)) for p in params]
    tv = [t(np.zeros(p.shape, dtype)) for p in params]
    lr, b1, b2, eps = 3e-3, 0.9, 0.95, 1e-8
    for step in range(1, 6):
        grads = [np.asarray(rng.standard_normal(s)).astype(dtype) for s in SHAPES]
        assert _core.adamw_step(tp, [t(g) for g in grads], tm, tv, lr, b1, b2, eps, WDS, step) is None
        ref = [adamw_reference(p, g.astype(np.float64), m, v, lr, b1, b2, eps, wd, step)
               for (p, m, v), g, wd in zip(ref, grads, WDS)]
    rtol, atol = (2e-5, 1e-6) if dtype == np.float32 else (1e-12, 1e-14)
    for (p, m, v), a, b, c in zip(ref, tp, tm, tv):
        assert arr(a).dtype == dtype
        np.testing.assert_allclose(arr(a), p, rtol=rtol, atol=atol)
        np.testing.assert_allclose(arr(b), m, rtol=rtol, atol=atol)
        np.testing.assert_allclose(arr(c), v, rtol=rtol, atol=atol)


def test_adamw_mixed_dtypes_and_large_step(each_isa):
    rng = np.random.default_rng(1)
    p32, p64 = rng.standard_normal(100).astype(np.float32), rng.standard_normal(50)
    g32, g64 = rng.standard_normal(100).astype(np.float32), rng.standard_normal(50)
    m32, v32 = rng.standard_normal(100).astype(np.float32) * 0.1, rng.random(100).astype(np.float32) * 0.1
    m64, v64 = rng.standard_normal(50) * 0.1, rng.random(50) * 0.1
    tensors = [t(x) for x in (p32, p64, g32, g64, m32, m64, v32, v64)]
    _core.adamw_step(tensors[0:2], tensors[2:4], tensors[4:6], tensors[6:8], 1e-3, 0.9, 0.999, 1e-8, [0.1, 0.0],
                     1000)
    for i, (p, g, m, v, wd) in enumerate([(p32, g32, m32, v32, 0.1), (p64, g64, m64, v64, 0.0)]):
        ep, em, ev = adamw_reference(p.astype(np.float64), g.astype(np.float64), m.astype(np.float64),
                                     v.astype(np.float64), 1e-3, 0.9, 0.999, 1e-8, wd, 1000)
        rtol = 2e-5 if p.dtype == np.float32 else 1e-12
        np.testing.assert_allclose(arr(tensors[i]), ep, rtol=rtol, atol=1e-7)
        np.testing.assert_allclose(arr(tensors[4 + i]), em, rtol=rtol, atol=1e-7)
        np.testing.assert_allclose(arr(tensors[6 + i]), ev, rtol=rtol, atol=1e-7)


def test_adamw_empty_list():
    _core.adamw_step([], [], [], [], 1e-3, 0.9, 0.999, 1e-8, [], 1)


def make_state(shapes, dtype=np.float32):
    return [[t(np.zeros(s, dtype)) for s in shapes] for _ in range(4)]


def test_adamw_errors():
    p, g, m, v = make_state([(3,), (2, 2)])
    args = dict(lr=1e-3, beta1=0.9, beta2=0.999, eps=1e-8)
    ok = lambda **kw: _core.adamw_step(**{**dict(params=p, grads=g, exp_avg=m, exp_avg_sq=v,  # noqa: E731
                                                  weight_decays=[0.0, 0.0], step=1), **args, **kw})
    ok()
    with pytest.raises(ValueError, match="step"):
        ok(step=0)
    with pytest.raises(ValueError, match="lengths"):
        ok(grads=g[:1])
    with pytest.raises(ValueError, match="lengths"):
        ok(weight_decays=[0.0])
    with pytest.raises(ValueError, match=r"\(2, 2\)"):
        ok(grads=[g[0], t(np.zeros((4,), np.float32))])
    with pytest.raises(TypeError):
        ok(exp_avg=[m[0], t(np.zeros((2, 2), np.float64))])
    with pytest.raises(TypeError):
        ok(params=[p[0], t(np.zeros((2, 2), np.int32))])
    with pytest.raises(ValueError):
        ok(beta1=1.0)
    with pytest.raises(ValueError):
        ok(beta2=-0.1)
    with pytest.raises(ValueError):
        ok(lr=-1.0)
    with pytest.raises(ValueError):
        ok(eps=float("nan"))
    with pytest.raises(ValueError):
        ok(weight_decays=[0.0, -0.1])
    with pytest.raises(ValueError, match="distinct"):
        ok(exp_avg_sq=m)
    with pytest.raises(ValueError, match="same tensor"):
        fresh = [t(np.zeros(3, np.float32)) for _ in range(2)]
        ok(params=[p[0], p[0].view([3])], grads=[g[0], g[0]], exp_avg=[m[0], fresh[0]], exp_avg_sq=[v[0], fresh[1]])


def test_adamw_one_and_two_threads_bitwise(each_isa):
    rng = np.random.default_rng(2)
    shapes = [(300, 301), (7,), (65536 * 3 + 5,)]
    start = [rng.standard_normal(s).astype(np.float32) for s in shapes]
    grads = [rng.standard_normal(s).astype(np.float32) for s in shapes]
    before = _core.get_num_threads()
    out = []
    try:
        for n in (1, 2):
            _core.set_num_threads(n)
            p = [t(x) for x in start]
            m = [t(np.zeros(s, np.float32)) for s in shapes]
            v = [t(np.zeros(s, np.float32)) for s in shapes]
            for step in (1, 2, 3):
                _core.adamw_step(p, [t(g) for g in grads], m, v, 1e-2, 0.9, 0.95, 1e-8, [0.1, 0.0, 0.1], step)
            out.append([arr(x).tobytes() for x in p + m + v])
    finally:
        _core.set_num_threads(before)
    assert out[0] == out[1]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_grad_norm_sq_and_scale_all(dtype, each_isa):
    rng = np.random.default_rng(3)
    xs = [np.asarray(rng.standard_normal(s)).astype(dtype) for s in [(1,), (), (13, 17), (100003,), (0, 3)]]
    expect = sum(float((x.astype(np.float64) ** 2).sum()) for x in xs)
    got = _core.grad_norm_sq([t(x) for x in xs])
    assert isinstance(got, float)
    np.testing.assert_allclose(got, expect, rtol=1e-12)
    ts = [t(x) for x in xs]
    assert _core.scale_all_(ts, 0.25) is None
    for a, x in zip(ts, xs):
        np.testing.assert_allclose(arr(a), x.astype(np.float64) * 0.25, rtol=1e-7 if dtype == np.float32 else 1e-15)
    assert _core.grad_norm_sq([]) == 0.0


def test_grad_norm_sq_mixed_dtypes_threads_and_errors(each_isa):
    rng = np.random.default_rng(4)
    xs = [rng.standard_normal(200001).astype(np.float32), rng.standard_normal(70000)]
    before = _core.get_num_threads()
    try:
        _core.set_num_threads(1)
        one = _core.grad_norm_sq([t(x) for x in xs])
        _core.set_num_threads(2)
        two = _core.grad_norm_sq([t(x) for x in xs])
    finally:
        _core.set_num_threads(before)
    assert one == two
    np.testing.assert_allclose(one, sum(float((x.astype(np.float64) ** 2).sum()) for x in xs), rtol=1e-12)
    with pytest.raises(TypeError):
        _core.grad_norm_sq([t(np.zeros(3, np.int64))])
    with pytest.raises(TypeError):
        _core.scale_all_([t(np.zeros(3, np.int32))], 2.0)
    x = t(np.ones(3))
    with pytest.raises(ValueError, match="same tensor"):
        _core.scale_all_([x, x], 2.0)
