"""The autodiff graph: gradients of every functional op (finite differences in float64),
accumulation, no_grad, freeing saved activations, and the errors of misuse."""

import numpy as np
import pytest

import femtogpt as fg
import femtogpt.functional as F
from femtogpt.testing import GradcheckError, gradcheck


def t64(rng, *shape, grad=True, scale=1.0):
    return fg.tensor(rng.standard_normal(shape) * scale, requires_grad=grad)


# ---- gradients against finite differences, on odd shapes ------------------------------------


@pytest.mark.parametrize("shape", [(1, 1), (3, 5), (7, 13)])
def test_linear_with_and_without_bias(rng, shape):
    n, cin = shape
    x, w, b = t64(rng, 2, n, cin), t64(rng, 5, cin), t64(rng, 5)
    gradcheck(lambda x, w, b: F.linear(x, w, b), [x, w, b])
    gradcheck(lambda x, w: F.linear(x, w), [x, w])


@pytest.mark.parametrize("shapes", [((3, 4), (4, 5)), ((2, 3, 4), (2, 4, 5)), ((2, 3, 4), (4, 5)),
                                    ((2, 2, 3, 4), (2, 2, 4, 1))])
def test_matmul(rng, shapes):
    a, b = t64(rng, *shapes[0]), t64(rng, *shapes[1])
    gradcheck(lambda a, b: a @ b, [a, b])
    np.testing.assert_allclose((a @ b).numpy(), a.numpy() @ b.numpy(), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("n, cin, cout", [(1, 1, 1), (3, 5, 7), (13, 11, 2)])
@pytest.mark.parametrize("affine", [True, False])
def test_layer_norm_linear(rng, n, cin, cout, affine):
    x, w, b = t64(rng, 2, n, cin), t64(rng, cout, cin), t64(rng, cout)
    lw, lb = (t64(rng, cin), t64(rng, cin)) if affine else (None, None)
    if affine:
        gradcheck(lambda x, lw, lb, w, b: F.layer_norm_linear(x, lw, lb, w, b), [x, lw, lb, w, b])
    gradcheck(lambda x, w: F.layer_norm_linear(x, lw, lb, w), [x, w])


@pytest.mark.parametrize("n, k, cout", [(1, 1, 1), (3, 5, 7), (13, 11, 2)])
@pytest.mark.parametrize("approximate", ["tanh", "none"])
def test_gelu_linear(rng, n, k, cout, approximate):
    h, w, b = t64(rng, 2, n, k), t64(rng, cout, k), t64(rng, cout)
    gradcheck(lambda h, w, b: F.gelu_linear(h, w, b, approximate), [h, w, b])
    gradcheck(lambda h, w: F.gelu_linear(h, w, None, approximate), [h, w])


@pytest.mark.parametrize("approximate", ["tanh", "none"])
def test_gelu_linear_reusing_its_input(rng, approximate):
    """reuse_input=True writes dh over h: h must be private to the op, hence the copy h * 1.0."""
    h, w, b = t64(rng, 2, 3, 5), t64(rng, 7, 5), t64(rng, 7)
    gradcheck(lambda h, w, b: F.gelu_linear(h * 1.0, w, b, approximate, reuse_input=True), [h, w, b])
    with pytest.raises(ValueError, match="not a leaf tensor"):
        F.gelu_linear(h, w, b, approximate, reuse_input=True)


@pytest.mark.parametrize("dtype, N, O, K", [
    # O within one k block: tile by tile over h (the product's GELU-gradient epilogue); the femto
    # MLP's shape reads g in place; O = 512 is one k block on AVX-512 only, 513 on none
    (np.float32, 300, 64, 256), (np.float32, 257, 512, 100), (np.float32, 257, 513, 100),
    (np.float32, 600, 29, 4099), (np.float64, 600, 29, 2053),  # 3 chunks of 200 rows where chunked
    # a long inner sum (O >= 1024, where the product may cut it into chunks for a small result):
    # no row chunk is small enough to sum in another order than the whole product does
    (np.float32, 257, 1024, 4096), (np.float32, 4100, 1024, 256)])
def test_gelu_linear_backward_input_in_row_chunks(each_isa, threads, dtype, N, O, K):  # noqa: N803
    """dh over h, tile by tile or ~4 MiB of rows at a time in equal chunks: bitwise gelu_backward(g @ w, h)."""
    h = np.random.default_rng(3).standard_normal((N, K)).astype(dtype)
    g = np.random.default_rng(4).standard_normal((N, O)).astype(dtype)
    w = (np.random.default_rng(5).standard_normal((O, K)) / np.sqrt(O)).astype(dtype)
    for nt in (1, 2):
        fg.set_num_threads(nt)
        want = np.asarray(fg._core.gelu_backward(fg._core.matmul(fg._core.from_numpy(g), fg._core.from_numpy(w)),
                                                 fg._core.from_numpy(h), "tanh"))
        h_t = fg._core.from_numpy(h.copy())
        got = fg._core.gelu_linear_backward_input_(h_t, fg._core.from_numpy(g), fg._core.from_numpy(w), "tanh")
        assert got.same_storage(h_t)
        np.testing.assert_array_equal(np.asarray(h_t), want)
    h_t = fg._core.from_numpy(np.ones((8, 8), dtype))
    with pytest.raises(ValueError, match="must not share memory with h"):  # g is h: the result would overwrite it
        fg._core.gelu_linear_backward_input_(h_t, h_t, fg._core.from_numpy(np.ones((8, 8), dtype)))
    with pytest.raises(ValueError, match=r"expected h \(N,K\), g \(N,O\), w \(O,K\)"):
        fg._core.gelu_linear_backward_input_(fg._core.from_numpy(h[:5].copy()), fg._core.from_numpy(g),
                                             fg._core.from_numpy(w))


@pytest.mark.parametrize("impl", ["flash", "standard"])
def test_causal_self_attention_linear(rng, impl):
    """Backward recomputes the attention output: float64 gradients against finite differences, and
    float32 values and gradients bitwise those of causal_self_attention followed by linear."""
    qkv, w, b = t64(rng, 2, 5, 12), t64(rng, 3, 4), t64(rng, 3)
    gradcheck(lambda qkv, w, b: F.causal_self_attention_linear(qkv, 2, w, b, impl=impl), [qkv, w, b])
    gradcheck(lambda qkv, w: F.causal_self_attention_linear(qkv, 2, w, None, impl=impl), [qkv, w])

    def t32(*shape):
        return fg.tensor(rng.standard_normal(shape).astype(np.float32), requires_grad=True)

    qkv, w, b = t32(3, 37, 3 * 24), t32(13, 24), t32(13)
    lean = _values_and_grads(lambda q, w, b: F.causal_self_attention_linear(q, 3, w, b, impl=impl), [qkv, w, b])
    plain = _values_and_grads(lambda q, w, b: F.linear(F.causal_self_attention(q, 3, impl=impl), w, b), [qkv, w, b])
    for a, p in zip([lean[0], *lean[1]], [plain[0], *plain[1]]):
        np.testing.assert_array_equal(a, p)
    with pytest.raises(ValueError, match="expected weight \\(out_features, 24\\)"):
        F.causal_self_attention_linear(qkv, 3, t32(13, 23))


def _mid_block(x, qkv, w, b, lw, lb, wf, bf, p=0.0, seed=None, impl="flash", n_head=2):
    """x2 + layer_norm_linear(x2), x2 = x + dropout(linear(attention(qkv))): a GPT block's shape,
    with the second op recomputing x2 in backward (what nn.Block does under recompute_attention)."""
    x2, x2_again = F.residual_attention_linear(x, qkv, n_head, w, b, p, seed, impl)
    return x2 + F.layer_norm_linear(x2, lw, lb, wf, bf, x_again=x2_again)


@pytest.mark.parametrize("impl", ["flash", "standard"])
@pytest.mark.parametrize("T, p", [(1, 0.0), (5, 0.0), (7, 0.3)])
def test_residual_attention_linear(rng, impl, T, p):
    """float64 gradients against finite differences, through both of x2's uses (the residual path and
    the op that recomputes it), with and without dropout (its mask comes from the seed)."""
    C = 6  # noqa: N806 - 2 heads of 3
    ins = [t64(rng, 2, T, C), t64(rng, 2, T, 3 * C), t64(rng, C, C), t64(rng, C), t64(rng, C), t64(rng, C),
           t64(rng, C, C), t64(rng, C)]
    gradcheck(lambda *a: _mid_block(*a, p=p, seed=11, impl=impl), ins)
    # alone (nothing calls x2_again: backward recomputes y itself), and without bias
    gradcheck(lambda x, qkv, w: F.residual_attention_linear(x, qkv, 2, w, None, p, 11, impl)[0], ins[:3])


@pytest.mark.parametrize("impl", ["flash", "standard"])
@pytest.mark.parametrize("p", [0.0, 0.25])
def test_residual_attention_linear_equals_the_unfused_ops_bitwise(rng, impl, p, each_isa, threads):
    def t32(*shape):
        return fg.tensor(rng.standard_normal(shape).astype(np.float32), requires_grad=True)

    C = 24  # noqa: N806 - 3 heads of 8
    ins = [t32(3, 37, C), t32(3, 37, 3 * C), t32(C, C), t32(C), t32(C), t32(C), t32(29, C), t32(29)]

    def plain(x, qkv, w, b, lw, lb, wf, bf):
        x2 = x + F.dropout(F.linear(F.causal_self_attention(qkv, 3, impl=impl), w, b), p, True, seed=5)
        return F.cat([x2, F.layer_norm_linear(x2, lw, lb, wf, bf)], dim=-1)

    def lean(x, qkv, w, b, lw, lb, wf, bf):
        x2, again = F.residual_attention_linear(x, qkv, 3, w, b, p, 5 if p else None, impl)
        return F.cat([x2, F.layer_norm_linear(x2, lw, lb, wf, bf, x_again=again)], dim=-1)

    for nt in (1, 2):
        fg.set_num_threads(nt)
        want, got = _values_and_grads(plain, ins), _values_and_grads(lean, ins)
        for a, b in zip([got[0], *got[1]], [want[0], *want[1]]):
            np.testing.assert_array_equal(a, b)


def test_residual_attention_linear_runs_the_attention_once_in_backward(rng, monkeypatch):
    """y recomputed for x2 in backward is handed to the op's own backward, not computed twice."""
    C = 6  # noqa: N806
    ins = [t64(rng, 2, 5, C), t64(rng, 2, 5, 3 * C), t64(rng, C, C), t64(rng, C), t64(rng, C), t64(rng, C),
           t64(rng, C, C), t64(rng, C)]
    calls = []
    real = fg._core.attention_qkv_forward
    monkeypatch.setattr(fg._core, "attention_qkv_forward", lambda *a: calls.append(1) or real(*a))
    out = _mid_block(*ins)
    assert len(calls) == 1
    out.sum().backward()
    assert len(calls) == 2


def test_residual_attention_linear_bad_input(rng):
    x, qkv, w = t64(rng, 2, 5, 6), t64(rng, 2, 5, 18), t64(rng, 6, 6)
    with pytest.raises(ValueError, match=r"x has shape \(2, 4, 6\).*expected \(2, 5, 6\)"):
        F.residual_attention_linear(t64(rng, 2, 4, 6), qkv, 2, w)
    with pytest.raises(ValueError, match=r"expected qkv \(B, T, 3C\) with C divisible by n_head 4"):
        F.residual_attention_linear(x, qkv, 4, w)
    with pytest.raises(ValueError, match=r"must be \(6, 6\) and \(6,\)"):
        F.residual_attention_linear(x, qkv, 2, t64(rng, 5, 6))
    with pytest.raises(ValueError, match="needs the dropout_seed"):
        F.residual_attention_linear(x, qkv, 2, w, None, 0.1)
    with pytest.raises(ValueError, match="dtype float32"):
        F.residual_attention_linear(fg.tensor(np.zeros((2, 5, 6), np.float32)), qkv, 2, w)


def _values_and_grads(fn, inputs):
    out = fn(*inputs)
    (out * out).sum().backward()
    grads = [t.grad.numpy().copy() for t in inputs]
    for t in inputs:
        t.grad = None
    return out.numpy().copy(), grads


def test_fused_ops_equal_the_unfused_ones_bitwise(rng):
    """The fused ops recompute with the same kernels in the same order: float32 results are identical."""
    def t32(*shape):
        return fg.tensor(rng.standard_normal(shape).astype(np.float32), requires_grad=True)

    x, lw, lb, w, b = t32(3, 37, 67), t32(67), t32(67), t32(29, 67), t32(29)
    fused = _values_and_grads(lambda *a: F.layer_norm_linear(*a), [x, lw, lb, w, b])
    plain = _values_and_grads(lambda x, lw, lb, w, b: F.linear(F.layer_norm(x, (67,), lw, lb), w, b),
                              [x, lw, lb, w, b])
    np.testing.assert_array_equal(fused[0], plain[0])
    for f, p in zip(fused[1], plain[1]):
        np.testing.assert_array_equal(f, p)
    h = t32(3, 37, 131)
    w2 = t32(29, 131)
    plain = _values_and_grads(lambda h, w, b: F.linear(F.gelu(h, "tanh"), w, b), [h, w2, b])
    for reuse in (False, True):
        fused = _values_and_grads(lambda h, w, b: F.gelu_linear(h * 1.0, w, b, "tanh", reuse_input=reuse),
                                  [h, w2, b])
        np.testing.assert_array_equal(fused[0], plain[0])
        for f, p in zip(fused[1], plain[1]):
            np.testing.assert_array_equal(f, p)


def test_gelu_linear_without_output_records_the_same_backward(rng):
    """output=False (a checkpoint's recomputation) skips the product but gives the same gradients."""
    h, w, b = t64(rng, 2, 5, 7), t64(rng, 3, 7), t64(rng, 3)
    g = rng.standard_normal((2, 5, 3))
    full = F.gelu_linear(h, w, b, "tanh")
    full.backward(g)
    expect = [t.grad.numpy().copy() for t in (h, w, b)]
    for t in (h, w, b):
        t.grad = None
    lazy = F.gelu_linear(h, w, b, "tanh", output=False)
    assert lazy.shape == full.shape and not lazy.numpy().any()
    lazy.backward(g)
    for t, e in zip((h, w, b), expect):
        np.testing.assert_array_equal(t.grad.numpy(), e)


def test_fused_ops_check_shapes(rng):
    x, w = t64(rng, 3, 5), t64(rng, 4, 6)
    with pytest.raises(ValueError, match="layer_norm_linear.*expected weight \\(out_features, 5\\)"):
        F.layer_norm_linear(x, None, None, w)
    with pytest.raises(ValueError, match="gelu_linear.*expected weight \\(out_features, 5\\)"):
        F.gelu_linear(x, w)
    with pytest.raises(ValueError, match="bias has shape \\(3,\\), expected \\(4,\\)"):
        F.gelu_linear(t64(rng, 3, 6), w, t64(rng, 3))


@pytest.mark.parametrize("approximate", ["tanh", "none"])
def test_gelu(rng, approximate):
    gradcheck(lambda x: F.gelu(x, approximate=approximate), [t64(rng, 3, 7)])


def test_relu(rng):
    x = t64(rng, 4, 5)
    x.numpy()[np.abs(x.numpy()) < 0.05] = 0.3  # keep away from the kink, where differences are meaningless
    gradcheck(F.relu, [x])


@pytest.mark.parametrize("affine", [True, False])
def test_layer_norm(rng, affine):
    x = t64(rng, 2, 3, 7)
    if affine:
        w, b = t64(rng, 7), t64(rng, 7)
        gradcheck(lambda x, w, b: F.layer_norm(x, (7,), w, b), [x, w, b])
    else:
        gradcheck(lambda x: F.layer_norm(x, 7), [x])
        b = t64(rng, 7)  # a bias without a weight
        gradcheck(lambda x, b: F.layer_norm(x, (7,), None, b), [x, b])


def test_softmax_and_log_softmax(rng):
    gradcheck(F.softmax, [t64(rng, 3, 5)])
    gradcheck(F.log_softmax, [t64(rng, 1, 13)])


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_cross_entropy(rng, reduction):
    logits = t64(rng, 7, 5)
    targets = np.array([0, 4, 2, -100, 1, 1, 3])
    gradcheck(lambda z: F.cross_entropy(z, targets, reduction=reduction), [logits])


def test_embedding(rng):
    w = t64(rng, 11, 3)
    idx = np.array([[1, 5, 1], [10, 0, 5]])  # repeated indices accumulate
    gradcheck(lambda w: F.embedding(idx, w), [w])


def test_dropout_gradient_uses_the_same_mask(rng):
    x = t64(rng, 5, 7)
    gradcheck(lambda x: F.dropout(x, 0.3, seed=7), [x])


@pytest.mark.parametrize("impl", ["flash", "standard"])
@pytest.mark.parametrize("causal", [True, False])
def test_attention(rng, impl, causal):
    q, k, v = t64(rng, 1, 2, 5, 3), t64(rng, 1, 2, 5, 3), t64(rng, 1, 2, 5, 3)
    gradcheck(lambda q, k, v: F.scaled_dot_product_attention(q, k, v, is_causal=causal, impl=impl, block_q=2,
                                                             block_k=3), [q, k, v])


@pytest.mark.parametrize("shapes", [((3, 4), (3, 4)), ((2, 3, 4), (4,)), ((2, 3, 4), (3, 4)), ((3, 4), ()),
                                    ((4,), (3, 4)), ((2, 1, 4), (3, 1))])
@pytest.mark.parametrize("op", ["add", "sub", "mul"])
def test_broadcasting_binary_ops(rng, shapes, op):
    a, b = t64(rng, *shapes[0]), t64(rng, *shapes[1])
    fn = {"add": lambda a, b: a + b, "sub": lambda a, b: a - b, "mul": lambda a, b: a * b}[op]
    gradcheck(fn, [a, b])
    np.testing.assert_allclose(fn(a, b).numpy(), fn(a.numpy(), b.numpy()), rtol=1e-12)


def test_scalar_ops(rng):
    x = t64(rng, 3, 2)
    gradcheck(lambda x: (2.5 * x - 1.0) / 4.0 + 3.0, [x])
    gradcheck(lambda x: -x, [x])
    np.testing.assert_allclose(((2.5 * x - 1.0) / 4.0).numpy(), (2.5 * x.numpy() - 1.0) / 4.0)


def test_shape_ops(rng):
    x = t64(rng, 2, 3, 4)
    gradcheck(lambda x: x.reshape(4, 6) * 1.0, [x])
    gradcheck(lambda x: x.permute(2, 0, 1), [x])
    gradcheck(lambda x: x.transpose(0, 1), [x])
    a, b, c = F.split(x, [1, 2, 1], dim=2)
    np.testing.assert_array_equal(b.numpy(), x.numpy()[:, :, 1:3])
    gradcheck(lambda x: F.split(x, 3, dim=-1)[1], [x])
    gradcheck(lambda x: F.chunk(x, 2, dim=2)[1] * F.chunk(x, 2, dim=2)[0], [x])
    y = t64(rng, 2, 1, 4)
    gradcheck(lambda x, y: F.cat([x, y], dim=1), [x, y])


def test_reductions(rng):
    x = t64(rng, 3, 5)
    gradcheck(lambda x: (x * x).sum(), [x])
    gradcheck(lambda x: x.mean(), [x])
    assert abs(x.sum().item() - x.numpy().sum()) < 1e-12


def test_gradcheck_catches_a_wrong_gradient(rng):
    x = t64(rng, 3)

    def wrong(x):
        out = F.scale(x, 2.0)
        if out._node is not None:  # recorded (not under the numerical check's no_grad)
            out._node.backward = lambda g: (fg._core.scale(g, 3.0),)  # claims d(2x)/dx = 3
        return out

    with pytest.raises(GradcheckError, match="analytic"):
        gradcheck(wrong, [x])


# ---- float32 forward against a float64 numpy reference --------------------------------------


def test_float32_mlp_matches_numpy(rng):
    x = rng.standard_normal((7, 13)).astype(np.float32)
    w = (rng.standard_normal((5, 13)) * 0.3).astype(np.float32)
    y = F.gelu(F.linear(fg.tensor(x), fg.tensor(w)), approximate="tanh").numpy()
    z = x.astype(np.float64) @ w.T.astype(np.float64)
    ref = 0.5 * z * (1 + np.tanh(np.sqrt(2 / np.pi) * (z + 0.044715 * z ** 3)))
    np.testing.assert_allclose(y, ref, rtol=1e-5, atol=1e-5)


# ---- graph semantics ---------------------------------------------------------------------------


def test_issue_example():
    rng = np.random.default_rng(0)
    x = fg.tensor(rng.standard_normal((4, 8)).astype(np.float32), requires_grad=True)
    w = fg.tensor(rng.standard_normal((16, 8)).astype(np.float32), requires_grad=True)
    y = F.gelu(F.linear(x, w)).sum()
    y.backward()
    assert x.grad.shape == (4, 8) and w.grad.shape == (16, 8)
    assert np.abs(x.grad.numpy()).sum() > 0


def test_gradient_accumulates_when_a_tensor_is_used_twice(rng):
    x = t64(rng, 3)
    (x * x + x).sum().backward()
    np.testing.assert_allclose(x.grad.numpy(), 2 * x.numpy() + 1)


def test_gradients_accumulate_across_backward_calls(rng):
    x = t64(rng, 3)
    (x * 2.0).sum().backward()
    (x * 3.0).sum().backward()
    np.testing.assert_allclose(x.grad.numpy(), np.full(3, 5.0))
    x.zero_grad()
    assert x.grad is None


def test_no_grad_records_nothing(rng):
    x = t64(rng, 3)
    with fg.no_grad():
        y = x * 2.0
    assert not y.requires_grad and y.is_leaf
    with pytest.raises(RuntimeError, match="does not require grad"):
        y.sum().backward()


def test_only_tensors_that_require_grad_are_recorded(rng):
    a, b = t64(rng, 3, grad=False), t64(rng, 3, grad=False)
    assert not (a * b).requires_grad


def test_second_backward_through_a_freed_graph_is_an_error(rng):
    x = t64(rng, 3)
    y = (x * x).sum()
    y.backward()
    with pytest.raises(RuntimeError, match="second time"):
        y.backward()


def test_backward_of_a_non_scalar_needs_a_gradient(rng):
    x = t64(rng, 3)
    with pytest.raises(RuntimeError, match="non-scalar"):
        (x * 2.0).backward()
    y = x * 2.0
    with pytest.raises(ValueError, match="gradient has shape"):
        y.backward(np.ones(4))


def test_detach_cuts_the_graph(rng):
    x = t64(rng, 3)
    y = (x * 2.0).detach()
    assert not y.requires_grad


def test_saved_activations_are_freed_during_backward(rng):
    """Memory falls while backward runs, not only at its end: the pool's current bytes, sampled
    from inside a backward closure late in the order, are below their value at the start."""
    # Large activations, small weights: the weight gradients made during backward weigh little.
    x = fg.tensor(rng.standard_normal((4096, 64)).astype(np.float32), requires_grad=True)
    w = [fg.tensor(rng.standard_normal((64, 64)).astype(np.float32) * 0.1, requires_grad=True) for _ in range(6)]
    h = x
    for wi in w:
        h = F.gelu(F.linear(h, wi))
    loss = h.sum()
    seen = []
    first = w[0]
    orig = None

    # Wrap the backward of the first layer's linear output (the last node to run) to sample memory.
    stack = [loss._node]
    target = None
    while stack:
        n = stack.pop()
        if first in n.inputs:
            target = n
            break
        stack.extend(e for e in n.inputs if isinstance(e, fg.graph.Node))
    orig = target.backward

    def probe(g):
        seen.append(fg.memory_stats()["current_bytes"])
        return orig(g)

    target.backward = probe
    del stack, n, h
    start = fg.memory_stats()["current_bytes"]
    loss.backward()
    assert seen and seen[0] < start


def test_outputs_that_no_backward_reads_are_freed_in_forward(rng):
    """The graph links ops, not their outputs: linear's output feeds only an add, whose backward
    reads neither input, so it is freed as soon as forward drops it (as with torch's grad_fn)."""
    x = fg.tensor(rng.standard_normal((4096, 64)).astype(np.float32), requires_grad=True)
    w = fg.tensor(rng.standard_normal((64, 64)).astype(np.float32), requires_grad=True)
    before = fg.memory_stats()["current_bytes"]
    y = F.linear(x, w) + x  # (4096, 64): linear's output is a temporary
    held = fg.memory_stats()["current_bytes"] - before
    assert held < 1.5 * y.nbytes, f"{held} bytes held for a {y.nbytes}-byte result"
    y.sum().backward()
    assert x.grad is not None and w.grad is not None


def test_leaves_fed_one_gradient_get_their_own_grad(rng):
    """x + y hands one gradient to both inputs; their .grad must not share memory (clipping scales in place)."""
    a, b = t64(rng, 3, 4), t64(rng, 3, 4)
    (a + b).sum().backward()
    np.testing.assert_array_equal(a.grad.numpy(), np.ones((3, 4)))
    a.grad.numpy()[:] = 5.0
    np.testing.assert_array_equal(b.grad.numpy(), np.ones((3, 4)))
    fg.clip_grad_norm_([a, b], 1.0)  # refused before: "the same tensor" twice


def test_leaves_fed_views_of_one_gradient_get_their_own_grad(rng):
    """x + y.view(...) hands y a view of x's gradient: a different tensor object over the same memory
    (a reviewer's repro: clip_grad_norm_ refused it, and scaling in place would have scaled it twice)."""
    a = fg.tensor(np.ones((2, 3), np.float32), requires_grad=True)
    b = fg.tensor(np.ones(6, np.float32), requires_grad=True)
    (a + b.view(2, 3)).sum().backward()
    assert not a.grad._impl.same_storage(b.grad._impl)
    fg.clip_grad_norm_([a, b], 1.0)
    np.testing.assert_allclose(a.grad.numpy().ravel(), b.grad.numpy(), rtol=0)  # each scaled once
    fg.AdamW([a, b]).step()


def test_a_failing_backward_reports_its_own_error_again(rng):
    x = t64(rng, 3)

    def failing(g):
        raise ValueError("boom in backward")

    y = fg.graph.make_result(fg._core.scale(x._impl, 2.0), (x,), failing)
    for _ in range(2):  # not "backward through a part of the graph a second time"
        with pytest.raises(ValueError, match="boom in backward"):
            y.sum().backward()


def test_type_errors(rng):
    i = fg.tensor(np.arange(6).reshape(2, 3))
    with pytest.raises(TypeError):
        F.gelu(i)
    with pytest.raises(TypeError):
        fg.tensor(np.arange(3), requires_grad=True)
    with pytest.raises(ValueError, match=r"\(2, 3\).*\(5, 4\)|\(5, 4\).*\(2, 3\)"):
        F.linear(fg.tensor(np.ones((2, 3), np.float32)), fg.tensor(np.ones((5, 4), np.float32)))
    with pytest.raises(ValueError, match="cannot be broadcast"):
        t64(rng, 2, 3) + t64(rng, 4)
    with pytest.raises(ValueError, match=r"\[0, 1\)"):
        F.dropout(t64(rng, 3), 1.0)



def test_cat_and_transpose_dims_out_of_range_are_index_errors(rng):
    """cat took dim %= ndim: dim=5 and dim=-3 of 2-D tensors concatenated along dim 1."""
    a, b = t64(rng, 2, 3), t64(rng, 2, 3)
    for dim in (5, 2, -3):
        with pytest.raises(IndexError, match=rf"cat: dimension out of range \(expected to be in range of "
                                             rf"\[-2, 1\], but got {dim}\)"):
            F.cat([a, b], dim=dim)
    assert F.cat([a, b], dim=-2).shape == (4, 3) and F.cat([a, b], dim=-1).shape == (2, 6)
    with pytest.raises(IndexError, match=r"transpose: .*\[-2, 1\], but got 5"):
        a.transpose(0, 5)
    with pytest.raises(IndexError, match=r"chunk: .*but got 2"):
        F.chunk(a, 2, dim=2)
    with pytest.raises(TypeError, match="cat: tensor 1 must be a femtogpt.Tensor"):
        F.cat([a, b.numpy()])


@pytest.mark.parametrize("op", [lambda x: x * None, lambda x: x + None, lambda x: x - None, lambda x: None - x,
                                lambda x: x * "2", lambda x: F.mul(x, None)])
def test_arithmetic_with_none_or_a_string_is_a_type_error(rng, op):
    """np.asarray(None, float32) is NaN: x * None was a tensor of NaNs."""
    with pytest.raises(TypeError, match="(mul|add|sub): expected a femtogpt.Tensor, a number or an array"):
        op(t64(rng, 2, 3))


def test_functions_take_tensors_and_operators_convert_arrays(rng):
    """Functions raise a TypeError naming the argument (as torch.nn.functional's do) instead of
    "'numpy.ndarray' object has no attribute '_impl'"; the operators + - * @ convert numbers and arrays."""
    x, w = t64(rng, 2, 3), t64(rng, 4, 3)
    arr = np.ones((2, 3))
    for call, name in [(lambda: F.gelu(arr), "gelu input"), (lambda: F.relu(arr), "relu input"),
                       (lambda: F.softmax(arr), "softmax input"), (lambda: F.log_softmax(arr), "log_softmax input"),
                       (lambda: F.linear(arr, w), "linear: input"), (lambda: F.linear(x, w.numpy()), "linear: weight"),
                       (lambda: F.linear(x, w, np.ones(4)), "linear: bias"),
                       (lambda: F.matmul(x, np.ones((3, 2))), "matmul: b"), (lambda: F.matmul(arr, w), "matmul: a"),
                       (lambda: F.layer_norm(arr, 3), "layer_norm: input"), (lambda: F.sum(arr), "sum input"),
                       (lambda: F.reshape(arr, 6), "reshape: input"), (lambda: F.dropout(arr, 0.1), "dropout: input"),
                       (lambda: F.cross_entropy(arr, [0, 1]), "cross_entropy: logits"),
                       (lambda: F.causal_self_attention(np.ones((1, 2, 6)), 1), "causal_self_attention: qkv")]:
        with pytest.raises(TypeError, match=f"{name} must be a femtogpt.Tensor"):
            call()
    np.testing.assert_allclose((x @ w.numpy().T).numpy(), x.numpy() @ w.numpy().T)
    np.testing.assert_allclose((x @ [[1.0], [2.0], [3.0]]).numpy(), x.numpy() @ [[1.0], [2.0], [3.0]])
    np.testing.assert_allclose((x + arr).numpy(), x.numpy() + 1)


@pytest.mark.parametrize("make", [lambda: fg.zeros(2.7), lambda: fg.ones(2, 3.0), lambda: fg.empty((2.5, 3)),
                                  lambda: fg.randn(2.2, seed=0), lambda: fg.zeros(3).reshape(1.5, 2),
                                  lambda: fg.zeros(6).reshape((2.5, 3)), lambda: fg.zeros(6).view(2, "3")])
def test_sizes_must_be_integers(make):
    """int() made zeros(2.7) a (2,) tensor and reshape(2.5, 3) a (2, 3) one."""
    with pytest.raises(TypeError, match="sizes must be integers"):
        make()


def test_chunk_and_attention_check_their_counts_and_sizes(rng):
    x = t64(rng, 2, 6)
    for chunks in (0, -2):
        with pytest.raises(ValueError, match=f"chunk: chunks must be a positive integer, got {chunks}"):
            F.chunk(x, chunks)
    with pytest.raises(TypeError, match="chunks must be an integer"):
        F.chunk(x, 1.5)
    qkv = t64(rng, 1, 2, 12)
    for n_head in (0, -1):
        with pytest.raises(ValueError, match=f"n_head must be a positive integer, got {n_head}"):
            F.causal_self_attention(qkv, n_head)
        with pytest.raises(ValueError, match="n_head must be a positive integer"):
            F.causal_self_attention_linear(qkv, n_head, t64(rng, 4, 4))
    with pytest.raises(ValueError, match=r"has no features \(C = 0\)"):
        F.causal_self_attention(t64(rng, 1, 2, 0), 1)
    q = t64(rng, 1, 1, 2, 0)
    with pytest.raises(ValueError, match="head size D .* must be > 0"):
        F.scaled_dot_product_attention(q, q, q)


def test_backward_checks_the_gradients_dtype(rng):
    """A float64 gradient for a float32 output failed deep inside with "mul: dtypes differ"."""
    x = fg.tensor(np.ones((2, 3), np.float32), requires_grad=True)
    y = x * x
    with pytest.raises(TypeError, match=r"gradient has dtype float64 on cpu, expected float32 on cpu .* \(2, 3\)"):
        y.backward(fg.tensor(np.ones((2, 3))))
    y.backward(np.ones((2, 3)))  # an array converts, as the operators convert them
    np.testing.assert_array_equal(x.grad.numpy(), 2 * np.ones((2, 3)))


@pytest.mark.parametrize("impl", ["flash", "standard"])
def test_packed_causal_self_attention_equals_the_unpacked_ops(rng, impl):
    B, T, H, D = 2, 5, 2, 3
    C = H * D
    qkv = t64(rng, B, T, 3 * C)

    def unpacked(qkv):
        q, k, v = F.split(qkv, C, dim=2)
        q, k, v = (t.reshape(B, T, H, D).transpose(1, 2) for t in (q, k, v))
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True, impl=impl)
        return y.transpose(1, 2).reshape(B, T, C)

    np.testing.assert_allclose(F.causal_self_attention(qkv, H, impl=impl).numpy(), unpacked(qkv).numpy(),
                               rtol=1e-12, atol=1e-12)
    gradcheck(lambda qkv: F.causal_self_attention(qkv, H, impl=impl, block_q=2, block_k=2), [qkv])


def test_checkpoint_of_a_function_that_returns_its_input(rng):
    """The recomputed output may be the (leaf) input itself: its gradient is the incoming one."""
    from femtogpt.graph import checkpoint
    x = t64(rng, 2, 3)
    (checkpoint(lambda t: t, x) * 2.0).sum().backward()
    np.testing.assert_array_equal(x.grad.numpy(), np.full((2, 3), 2.0))


def test_backward_does_not_hold_a_summed_gradient_into_the_next_node():
    """y feeds a and the sum: its gradient is g + 3g, a new tensor. The 3g that went into it is garbage
    from then on and must not stay alive while y's own backward (two N-sized outputs) runs: at most
    three N-sized gradients at once (g, 3g and their sum), where four meant it was held."""
    n = 1 << 20  # 4 MiB of float32: the pool's large tier, exact sizes
    x = fg.tensor(np.ones(n, np.float32), requires_grad=True)
    w = fg.tensor(np.ones(n, np.float32), requires_grad=True)
    y = x * w
    a = y * 3.0
    out = (y + a).sum()
    del y, a
    fg.reset_peak_memory_stats()
    before = fg.memory_stats()["current_bytes"]
    out.backward()
    assert fg.memory_stats()["peak_bytes"] - before < 3.5 * 4 * n
    np.testing.assert_array_equal(x.grad.numpy(), np.full(n, 4.0, np.float32))
