"""Differentiable ops, named and called as in ``torch.nn.functional``.

Each op runs a forward kernel of the C++ core and records a closure that runs
the matching backward kernel. Shapes are in the comments; B batch, T time,
C channels, V vocabulary, H heads, D head size.
"""

from __future__ import annotations

import builtins
import math

import numpy as np

from . import _core
from .graph import Tensor, _shape_list, is_grad_enabled, make_result, tensor

__all__ = [
    "linear", "matmul", "gelu", "relu", "layer_norm", "softmax", "log_softmax", "cross_entropy",
    "embedding", "dropout", "scaled_dot_product_attention", "causal_self_attention",
    "causal_self_attention_linear", "residual_attention_linear", "layer_norm_linear",
    "gelu_linear", "add", "sub", "mul", "scale", "neg",
    "reshape", "permute", "transpose", "split", "chunk", "cat", "sum", "mean",
]


def _as_tensor(x, like: Tensor | None, op: str) -> Tensor:
    """x as a Tensor: a number or an array of numbers (bool, int, float) is copied, in like's dtype
    when given; anything else (None, str, objects) is a TypeError (None would become NaN)."""
    if isinstance(x, Tensor):
        return x
    arr = np.asarray(x)
    if arr.dtype.kind not in "biuf":
        raise TypeError(f"{op}: expected a femtogpt.Tensor, a number or an array of numbers, got "
                        f"{type(x).__name__}" + (f" of dtype {arr.dtype}" if isinstance(x, np.ndarray) else ""))
    return tensor(arr.astype(like.dtype) if like is not None else x)


def _check_tensor(x, name: str, optional: bool = False) -> None:
    """Ops take femtogpt Tensors, as torch's functions take torch tensors (operators such as + and @
    convert numbers and numpy arrays; a function does not guess a dtype for them)."""
    if not isinstance(x, Tensor) and not (optional and x is None):
        raise TypeError(f"{name} must be a femtogpt.Tensor{' or None' if optional else ''}, got "
                        f"{type(x).__name__} (make one with femtogpt.tensor)")


def _check_float(x: Tensor, name: str) -> None:
    _check_tensor(x, name)
    if x.dtype.kind != "f":
        raise TypeError(f"{name} must be a floating point tensor, got dtype {x.dtype}")


def _check_dim(dim, ndim: int, name: str) -> int:
    """dim in [-ndim, ndim) as a non-negative index; IndexError naming the range otherwise, as torch."""
    if isinstance(dim, bool) or not isinstance(dim, (int, np.integer)):
        raise TypeError(f"{name}: dim must be an integer, got {dim!r}")
    if not -ndim <= dim < ndim:
        if ndim == 0:
            raise IndexError(f"{name}: a 0-d tensor has no dimension {dim}")
        raise IndexError(f"{name}: dimension out of range (expected to be in range of [{-ndim}, {ndim - 1}], "
                         f"but got {dim})")
    return int(dim) % ndim


def _check_positive_int(value, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"{name} must be an integer, got {value!r}")
    if value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value}")
    return int(value)


def _qkv_features(qkv: Tensor, n_head, name: str) -> int:
    """C of a fused projection qkv (B, T, 3C) split into n_head heads of C // n_head > 0 features."""
    _check_tensor(qkv, f"{name}: qkv")
    n_head = _check_positive_int(n_head, f"{name}: n_head")
    if qkv.ndim != 3 or qkv.shape[-1] % 3 or (qkv.shape[-1] // 3) % n_head:
        raise ValueError(f"{name}: expected qkv (B, T, 3C) with C divisible by n_head {n_head}, got {qkv.shape}")
    if qkv.shape[-1] == 0:
        raise ValueError(f"{name}: qkv {qkv.shape} has no features (C = 0): the heads need a size > 0")
    return qkv.shape[-1] // 3


# ---- linear algebra -----------------------------------------------------------


def matmul(a: Tensor, b: Tensor) -> Tensor:
    """a (..., M, K) @ b (..., K, N) -> (..., M, N); leading dims of b equal a's, or b is 2-D."""
    _check_tensor(a, "matmul: a")
    _check_tensor(b, "matmul: b")
    if a.ndim < 2 or b.ndim < 2:
        raise ValueError(f"matmul needs tensors of at least 2 dims, got shapes {a.shape} and {b.shape}")
    lead = a.shape[:-2]
    if b.ndim > 2 and b.shape[:-2] != lead:
        raise ValueError(f"matmul: batch dims differ: {a.shape} @ {b.shape}")
    a3 = a._impl.view([-1, a.shape[-2], a.shape[-1]]) if a.ndim != 2 else a._impl
    b3 = b._impl.view([-1, b.shape[-2], b.shape[-1]]) if b.ndim > 2 else b._impl
    out = _core.matmul(a3, b3)
    out_shape = list(lead) + [a.shape[-2], b.shape[-1]]
    out = out.view(out_shape)

    def backward(g):
        g3 = g.view([-1, out_shape[-2], out_shape[-1]]) if len(out_shape) != 2 else g
        da = _core.matmul(g3, b3, trans_b=True).view(list(a.shape)) if a.requires_grad else None
        db = None
        if b.requires_grad:
            if b.ndim == 2 and a.ndim != 2:
                # b shared across the batch: sum the per-batch products = one product over stacked rows
                a2 = a._impl.view([-1, a.shape[-1]])
                g2 = g.view([-1, out_shape[-1]])
                db = _core.matmul(a2, g2, trans_a=True)
            else:
                db = _core.matmul(a3, g3, trans_a=True).view(list(b.shape))
        return da, db

    return make_result(out, (a, b), backward)


def _check_linear(name: str, x: Tensor, weight: Tensor, bias: Tensor | None) -> int:
    """The input features of x (..., in) once weight (out, in) and bias (out,) are checked to match."""
    _check_tensor(x, f"{name}: input")
    _check_tensor(weight, f"{name}: weight")
    _check_tensor(bias, f"{name}: bias", optional=True)
    in_f = x.shape[-1] if x.ndim else None
    if weight.ndim != 2 or in_f != weight.shape[1]:
        raise ValueError(f"{name}: input of shape {x.shape} does not match weight of shape {weight.shape} "
                         f"(expected weight (out_features, {in_f}))")
    if bias is not None and bias.shape != (weight.shape[0],):
        raise ValueError(f"{name}: bias has shape {bias.shape}, expected ({weight.shape[0]},)")
    return in_f


def linear(x: Tensor, weight: Tensor, bias: Tensor | None = None) -> Tensor:
    """x (..., in), weight (out, in), bias (out,) -> (..., out)."""
    in_f = _check_linear("linear", x, weight, bias)
    x2 = x._impl.view([-1, in_f])
    out = _linear_forward(x2, weight, bias)  # (N, out)
    out_shape = list(x.shape[:-1]) + [weight.shape[0]]
    x_shape, need_dx = list(x.shape), x.requires_grad

    def backward(g):
        dx, dw, db = _linear_backward(g.view([-1, out_shape[-1]]), x2, weight, bias, need_dx)
        return (None if dx is None else dx.view(x_shape)), dw, db

    return make_result(out.view(out_shape), (x, weight, bias), backward)


# ---- activations and normalization -----------------------------------------------


def gelu(x: Tensor, approximate: str = "none") -> Tensor:
    _check_float(x, "gelu input")
    out = _core.gelu_forward(x._impl, approximate)
    return make_result(out, (x,), lambda g: (_core.gelu_backward(g, x._impl, approximate),))


def relu(x: Tensor) -> Tensor:
    _check_float(x, "relu input")
    out = _core.relu_forward(x._impl)
    return make_result(out, (x,), lambda g: (_core.relu_backward(g, out),))


def layer_norm(x: Tensor, normalized_shape, weight: Tensor | None = None, bias: Tensor | None = None,
               eps: float = 1e-5) -> Tensor:
    """Normalizes over the last dimension: x (..., C), weight and bias (C,)."""
    _check_tensor(x, "layer_norm: input")
    _check_tensor(weight, "layer_norm: weight", optional=True)
    _check_tensor(bias, "layer_norm: bias", optional=True)
    if isinstance(normalized_shape, int):
        normalized_shape = (normalized_shape,)
    normalized_shape = tuple(normalized_shape)
    if len(normalized_shape) != 1 or x.shape[-1:] != normalized_shape:
        raise ValueError(f"layer_norm: normalized_shape {normalized_shape} must be the last dimension of the "
                         f"input of shape {x.shape} (only 1-D normalized shapes are supported)")
    out, mean, rstd = _core.layernorm_forward(
        x._impl, None if weight is None else weight._impl, None if bias is None else bias._impl, float(eps))

    def backward(g):
        return _core.layernorm_backward(g, x._impl, None if weight is None else weight._impl, mean, rstd,
                                        bias is not None)

    return make_result(out, (x, weight, bias), backward)


def _last_dim_only(dim: int, x: Tensor, name: str) -> None:
    if dim not in (-1, x.ndim - 1):
        raise ValueError(f"{name}: only dim=-1 (the last dimension) is supported, got dim={dim}")


def softmax(x: Tensor, dim: int = -1) -> Tensor:
    _check_float(x, "softmax input")
    _last_dim_only(dim, x, "softmax")
    out = _core.softmax_forward(x._impl)
    return make_result(out, (x,), lambda g: (_core.softmax_backward(g, out),))


def log_softmax(x: Tensor, dim: int = -1) -> Tensor:
    _check_float(x, "log_softmax input")
    _last_dim_only(dim, x, "log_softmax")
    out = _core.log_softmax_forward(x._impl)
    return make_result(out, (x,), lambda g: (_core.log_softmax_backward(g, out),))


def cross_entropy(logits: Tensor, targets, ignore_index: int = -100, reduction: str = "mean") -> Tensor:
    """logits (N, V), targets (N,) integer class indices -> loss (0-D, or (N,) for reduction='none')."""
    _check_tensor(logits, "cross_entropy: logits")
    targets = _as_tensor(targets, None, "cross_entropy: targets")
    if logits.ndim != 2 or targets.ndim != 1:
        raise ValueError(f"cross_entropy expects logits (N, V) and targets (N,), got {logits.shape} and "
                         f"{targets.shape}")
    loss, lse = _core.cross_entropy_forward(logits._impl, targets._impl, int(ignore_index), reduction)

    def backward(g):
        return (_core.cross_entropy_backward(g, logits._impl, targets._impl, lse, int(ignore_index), reduction),
                None)

    return make_result(loss, (logits, targets), backward)


def embedding(idx, weight: Tensor) -> Tensor:
    """idx (...) integer, weight (V, C) -> (..., C)."""
    _check_tensor(weight, "embedding: weight")
    idx = _as_tensor(idx, None, "embedding: idx")
    out = _core.embedding_forward(idx._impl, weight._impl)
    vocab = weight.shape[0]
    return make_result(out, (idx, weight), lambda g: (None, _core.embedding_backward(g, idx._impl, vocab)))


_dropout_counter = [0]


def dropout(x: Tensor, p: float = 0.5, training: bool = True, seed: int | None = None) -> Tensor:
    """Zeroes each element with probability p and scales the rest by 1/(1-p).

    The mask is a function of (seed, element index): the same seed gives the same
    mask, and backward regenerates it instead of storing it. Without a seed, each
    call draws a new one from a counter (so runs are still reproducible).
    """
    _check_tensor(x, "dropout: input")
    if not 0.0 <= p < 1.0:
        raise ValueError(f"dropout probability must be in [0, 1), got {p}")
    if not training or p == 0.0:
        return x
    if seed is None:
        _dropout_counter[0] += 1
        seed = _dropout_counter[0]
    seed = int(seed)
    out = _core.dropout_forward(x._impl, float(p), seed)
    return make_result(out, (x,), lambda g: (_core.dropout_backward(g, float(p), seed),))


def scaled_dot_product_attention(q: Tensor, k: Tensor, v: Tensor, is_causal: bool = False,
                                 scale: float | None = None, impl: str = "flash", block_q: int = 64,
                                 block_k: int = 64) -> Tensor:
    """q (B, H, Tq, D), k and v (B, H, Tk, D) -> (B, H, Tq, D).

    impl="flash" tiles queries and keys with an online softmax and saves only the
    per-row log-sum-exp; impl="standard" materializes the (Tq, Tk) probabilities.
    scale defaults to 1/sqrt(D). With is_causal and Tq < Tk, the queries are the
    last Tq positions (as with a KV cache).
    """
    for name, t in (("q", q), ("k", k), ("v", v)):
        _check_tensor(t, f"scaled_dot_product_attention: {name}")
    if q.ndim != 4:
        raise ValueError(f"scaled_dot_product_attention expects q, k, v of shape (B, H, T, D), got q {q.shape}")
    if q.shape[-1] == 0:
        raise ValueError(f"scaled_dot_product_attention: the head size D (the last dim of q) must be > 0, "
                         f"got q {q.shape}")
    if scale is None:
        scale = 1.0 / math.sqrt(q.shape[-1])
    args = (bool(is_causal), float(scale), impl, int(block_q), int(block_k))
    out, saved = _core.attention_forward(q._impl, k._impl, v._impl, *args)

    def backward(g):
        return _core.attention_backward(g, q._impl, k._impl, v._impl, out, saved, *args)

    return make_result(out, (q, k, v), backward)


def causal_self_attention(qkv: Tensor, n_head: int, impl: str = "flash", block_q: int = 64,
                          block_k: int = 64) -> Tensor:
    """The attention of a GPT block on its fused projection: qkv (B, T, 3C) -> y (B, T, C), heads merged.

    Equivalent to splitting qkv into q, k, v, viewing each as (B, H, T, D),
    causal scaled_dot_product_attention, and merging the heads back (bitwise: the
    same kernels); but the kernels read the heads in place in qkv and write y and
    dqkv in place, so neither direction copies or permutes anything.
    """
    D = _qkv_features(qkv, n_head, "causal_self_attention") // n_head  # noqa: N806 - the shape comments' letters
    args = (int(n_head), 1.0 / math.sqrt(D), impl, int(block_q), int(block_k))
    out, saved = _core.attention_qkv_forward(qkv._impl, *args)  # (B, T, C), lse (B, H, T)

    def backward(g):
        return (_core.attention_qkv_backward(g, qkv._impl, out, saved, *args),)

    return make_result(out, (qkv,), backward)


def causal_self_attention_linear(qkv: Tensor, n_head: int, weight: Tensor, bias: Tensor | None = None,
                                 impl: str = "flash", block_q: int = 64, block_k: int = 64) -> Tensor:
    """linear(causal_self_attention(qkv, n_head), weight, bias): qkv (B, T, 3C), weight (out, C) -> (B, T, out).

    Saves qkv and the attention's log-sum-exp (or probabilities, standard), not its output y:
    backward runs the attention forward again (deterministic, so bitwise the same y) for the
    projection's weight gradient and the attention's backward. One more attention forward for
    (B, T, C) less memory (the GPT's checkpointed blocks do not use it: see nn.Block.forward).
    """
    C = _qkv_features(qkv, n_head, "causal_self_attention_linear")  # noqa: N806
    _check_tensor(weight, "causal_self_attention_linear: weight")
    _check_tensor(bias, "causal_self_attention_linear: bias", optional=True)
    if weight.ndim != 2 or weight.shape[1] != C or bias is not None and bias.shape != (weight.shape[0],):
        raise ValueError(f"causal_self_attention_linear: weight {weight.shape} and bias "
                         f"{None if bias is None else bias.shape} do not match the attention output's "
                         f"{C} features (expected weight (out_features, {C}) and bias (out_features,))")
    args = (int(n_head), 1.0 / math.sqrt(C // n_head), impl, int(block_q), int(block_k))
    y, saved = _core.attention_qkv_forward(qkv._impl, *args)  # (B, T, C)
    out = _linear_forward(y.view([-1, C]), weight, bias)
    del y
    out_shape = list(qkv.shape[:-1]) + [weight.shape[0]]
    qkv_impl, need_dqkv = qkv._impl, qkv.requires_grad

    def backward(g):
        g2 = g.view([-1, out_shape[-1]])
        y2, _ = _core.attention_qkv_forward(qkv_impl, *args)  # recomputed
        dw, db = _linear_param_grads(g2, y2.view([-1, C]), weight, bias)
        if not need_dqkv:
            return None, dw, db
        dy = _core.matmul(g2, weight._impl).view(list(y2.shape))
        return _core.attention_qkv_backward(dy, qkv_impl, y2, saved, *args), dw, db

    return make_result(out.view(out_shape), (qkv, weight, bias), backward)


def residual_attention_linear(x: Tensor, qkv: Tensor, n_head: int, weight: Tensor, bias: Tensor | None = None,
                              dropout_p: float = 0.0, dropout_seed: int | None = None, impl: str = "flash",
                              block_q: int = 64, block_k: int = 64, hand_on_y: bool = True, x_again=None):
    """x + dropout(linear(causal_self_attention(qkv, n_head), weight, bias)), and a function that gives
    that sum's data back in backward: x (B, T, C), qkv (B, T, 3C), weight (C, C) -> x2 (B, T, C), x2_again.

    The mid-block residual of a GPT block, for selective recomputation (GPTConfig.recompute_attention).
    Saves only qkv and the attention's log-sum-exp: not the attention output y, nor x2. The op after
    it (the MLP's layer_norm_linear, given x2_again) keeps nothing of x2 either: in backward, x2_again
    runs the attention forward, the projection, the dropout and the sum again from x and qkv, which
    the block keeps for its first half anyway (the same kernels on the same data: bitwise the same
    x2), and leaves y for this op's backward, which runs next (hand_on_y=False: it does not, and
    that backward computes y again; for the block that backward reaches first, while every other
    block's activations are still held, where keeping y in between would add it to the step's peak).
    Without x2_again called, this op's backward computes y itself. Per block: two (B, T, C)
    activations less, for one more attention forward (two, without hand_on_y) and C x C projection.
    With impl="standard" each recomputation also builds the (B, H, T, T) probabilities again (and
    drops them): a transient that can outweigh what the op saves.
    x_again: a function that gives x's data back bitwise (see layer_norm_linear); the op then keeps
    nothing of x, and x2_again calls it.
    """
    C = _qkv_features(qkv, n_head, "residual_attention_linear")  # noqa: N806
    _check_tensor(x, "residual_attention_linear: x")
    _check_tensor(weight, "residual_attention_linear: weight")
    _check_tensor(bias, "residual_attention_linear: bias", optional=True)
    if x.shape != qkv.shape[:-1] + (C,) or x.dtype != qkv.dtype:
        raise ValueError(f"residual_attention_linear: x has shape {x.shape} and dtype {x.dtype}, expected "
                         f"{qkv.shape[:-1] + (C,)} and {qkv.dtype} to match qkv {qkv.shape}")
    if weight.ndim != 2 or weight.shape != (C, C) or bias is not None and bias.shape != (C,):
        raise ValueError(f"residual_attention_linear: weight {weight.shape} and bias "
                         f"{None if bias is None else bias.shape} must be ({C}, {C}) and ({C},)")
    dropout_p = float(dropout_p)
    if dropout_p and dropout_seed is None:
        raise ValueError("residual_attention_linear: dropout_p > 0 needs the dropout_seed that regenerates "
                         "its mask in backward")
    args = (int(n_head), 1.0 / math.sqrt(C // n_head), impl, int(block_q), int(block_k))
    x_impl, qkv_impl, need_dqkv = x._impl, qkv._impl, qkv.requires_grad
    ys = []  # y recomputed by x2_again, for the backward that runs after it

    def x2_from(x_data, y, in_place: bool):  # x + dropout(y @ weight^T + bias) -> (B, T, C)
        a = _linear_forward(y.view([-1, C]), weight, bias).view(list(x_data.shape))
        if dropout_p:
            a = _core.dropout_forward(a, dropout_p, int(dropout_seed))
        if not in_place:
            return _core.add(x_data, a)
        _core.add_(a, x_data)  # bitwise x + a, over a (ours alone): one (B, T, C) less
        return a

    y, saved = _core.attention_qkv_forward(qkv_impl, *args)  # (B, T, C), lse (B, H, T)
    # Forward sums into a new tensor: summing over a there too lowers no peak, and measured on the
    # small preset it left the pool 12 MiB more fragmented (first fit: 449.9 MiB reserved, 437.9)
    x2 = x2_from(x_impl, y, in_place=False)
    del y
    if x_again is not None:
        x_impl = None  # x2_again gets x from x_again

    def x2_again():
        y2, _ = _core.attention_qkv_forward(qkv_impl, *args)
        if hand_on_y:
            ys.append(y2)
        return x2_from(x_impl if x_again is None else x_again(), y2, in_place=True)

    def backward(g):
        ga = _core.dropout_backward(g, dropout_p, int(dropout_seed)) if dropout_p else g
        g2 = ga.view([-1, C])
        y2 = ys.pop() if ys else _core.attention_qkv_forward(qkv_impl, *args)[0]
        dw, db = _linear_param_grads(g2, y2.view([-1, C]), weight, bias)
        dqkv = None
        if need_dqkv:
            dy = _core.matmul(g2, weight._impl).view(list(y2.shape))
            dqkv = _core.attention_qkv_backward(dy, qkv_impl, y2, saved, *args)
        return g, dqkv, dw, db

    return make_result(x2, (x, qkv, weight, bias), backward), x2_again


# ---- fused ops that save less for backward -----------------------------------------------
#
# A GPT block keeps, for backward, the inputs of its matmuls. Two of those are
# cheap elementwise functions of a tensor that backward needs anyway: the
# layer-normalized input of the qkv and fc projections (a function of the block's
# residual x and the per-row mean and rstd), and the GELU output that feeds the
# MLP's down projection (a function of the fc output h). These ops save x or h
# and recompute the cheap part in backward, using the same kernels in the same
# order as the unfused ops, so values and gradients are bitwise the same.


def _weight_and_bias_grads(g2, a2, weight, bias, gelu: str | None = None):
    """(dweight, dbias) of out (N, out) = act(a2) (N, in) @ weight^T + bias, from g2 (N, out), with
    act = gelu when given (the product applies it to a2 as it packs it): dweight = g2^T act(a2), and
    dbias, the column sums of g2, summed by the same product as it packs g2^T."""
    need_db = bias is not None and bias.requires_grad
    if not weight.requires_grad:
        return None, _core.sum_to_suffix(g2, [g2.shape[-1]]) if need_db else None
    db = _core.empty([g2.shape[-1]], g2.dtype) if need_db else None
    return _core.matmul(g2, a2, trans_a=True, gelu_b=gelu, a_row_sums=db), db


def _linear_param_grads(g2, a2, weight, bias):
    """(dweight, dbias) of out (N, out) = a2 (N, in) @ weight^T + bias, from g2 (N, out)."""
    return _weight_and_bias_grads(g2, a2, weight, bias)


def _linear_backward(g2, a2, weight, bias, need_da: bool):
    """Gradients of out (N, out) = a2 (N, in) @ weight^T + bias: (da, dweight, dbias)."""
    da = _core.matmul(g2, weight._impl) if need_da else None
    return (da, *_linear_param_grads(g2, a2, weight, bias))


def _linear_forward(a2, weight: Tensor, bias: Tensor | None, gelu: str | None = None):
    """a2 (N, in) @ weight^T + bias -> (N, out); gelu: the product reads gelu(a2), never stored."""
    return _core.matmul(a2, weight._impl, trans_b=True, bias=None if bias is None else bias._impl, gelu_a=gelu)


def layer_norm_linear(x: Tensor, ln_weight: Tensor | None, ln_bias: Tensor | None, weight: Tensor,
                      bias: Tensor | None = None, eps: float = 1e-5, x_again=None) -> Tensor:
    """linear(layer_norm(x), weight, bias): x (..., C), ln_weight/ln_bias (C,), weight (out, C) -> (..., out).

    Saves x and the per-row mean and rstd, not the normalized copy of x. x_again: a function that
    gives x's data (a _core.Tensor) back bitwise, from what other ops keep anyway; the op then
    saves that instead of x, and backward calls it (see residual_attention_linear).
    """
    C = _check_linear("layer_norm_linear", x, weight, bias)  # noqa: N806
    _check_tensor(ln_weight, "layer_norm_linear: ln_weight", optional=True)
    _check_tensor(ln_bias, "layer_norm_linear: ln_bias", optional=True)
    lw = None if ln_weight is None else ln_weight._impl
    lb = None if ln_bias is None else ln_bias._impl
    xn, mean, rstd = _core.layernorm_forward(x._impl, lw, lb, float(eps))  # (..., C)
    out = _linear_forward(xn.view([-1, C]), weight, bias)  # (N, out)
    del xn
    out_shape = list(x.shape[:-1]) + [weight.shape[0]]
    x_saved, x_shape = (x._impl if x_again is None else None), list(x.shape)
    need_dx = x.requires_grad or ln_weight is not None and ln_weight.requires_grad or \
        ln_bias is not None and ln_bias.requires_grad

    def backward(g):
        g2 = g.view([-1, out_shape[-1]])
        x_impl = x_again() if x_again is not None else x_saved
        xn2 = _core.layernorm_forward(x_impl, lw, lb, float(eps))[0].view([-1, C])  # recomputed
        dw, db = _linear_param_grads(g2, xn2, weight, bias)
        del xn2  # before dxn is made: the two never coexist
        if not need_dx:
            return None, None, None, dw, db
        dxn = _core.matmul(g2, weight._impl)  # ours alone: dx is written over it
        dx, dlw, dlb = _core.layernorm_backward_(dxn.view(x_shape), x_impl, lw, mean, rstd, lb is not None)
        return dx, dlw, dlb, dw, db

    return make_result(out.view(out_shape), (x, ln_weight, ln_bias, weight, bias), backward)


def gelu_linear(h: Tensor, weight: Tensor, bias: Tensor | None = None, approximate: str = "none",
                output: bool = True, reuse_input: bool = False) -> Tensor:
    """linear(gelu(h), weight, bias): h (..., K), weight (out, K) -> (..., out).

    Saves h, not gelu(h), and never stores gelu(h) at all: the products apply the GELU to
    blocks of h as they pack them, in forward and again for the weight gradient.
    output=False records the op for backward but returns zeros instead of computing the
    product: for gradient checkpointing's recomputation of a block, whose output no
    backward reads (backward needs only h and the gradient coming in).
    reuse_input=True: the caller gives h up (nothing else reads it, like torch's inplace=True), and
    backward writes dh over it instead of making (..., K) temporaries.
    """
    _check_float(h, "gelu_linear input")
    K = _check_linear("gelu_linear", h, weight, bias)  # noqa: N806
    if reuse_input and h.requires_grad and h._node is None:
        raise ValueError("gelu_linear(reuse_input=True) overwrites h in backward, so h must be an op's "
                         "result that nothing else reads, not a leaf tensor (its data would become its gradient)")
    out_shape = list(h.shape[:-1]) + [weight.shape[0]]
    if output:
        out = _linear_forward(h._impl.view([-1, K]), weight, bias, gelu=approximate)
    else:
        out = _core.zeros(out_shape, h.dtype, h.device)
    h_impl, need_dh = h._impl, h.requires_grad

    def backward(g):
        g2 = g.view([-1, out_shape[-1]])
        # dweight = g^T gelu(h): the product recomputes gelu(h) block by block as it packs h
        dw, db = _weight_and_bias_grads(g2, h_impl.view([-1, K]), weight, bias, gelu=approximate)
        if not need_dh:
            return None, dw, db
        if reuse_input:  # dh over h, made a few rows at a time
            return _core.gelu_linear_backward_input_(h_impl.view([-1, K]), g2, weight._impl, approximate).view(
                list(h_impl.shape)), dw, db
        da = _core.matmul(g2, weight._impl)
        # dh overwrites da, the (..., K) gradient that only this op holds
        return _core.gelu_backward_(da.view(list(h_impl.shape)), h_impl, approximate), dw, db

    return make_result(out.view(out_shape), (h, weight, bias), backward)


# ---- elementwise ------------------------------------------------------------------


def _is_suffix(small: tuple, big: tuple) -> bool:
    return len(small) <= len(big) and big[len(big) - len(small):] == small


def _reduce_to(g, shape: tuple):
    """The gradient of broadcasting `shape` up to g's shape: sum over the broadcast axes."""
    if tuple(g.shape) == shape:
        return g
    if _is_suffix(shape, tuple(g.shape)) and math.prod(shape) > 0:
        return _core.sum_to_suffix(g, list(shape))
    # General numpy broadcasting (e.g. (B, 1, C)): reduce with numpy into a new tensor.
    arr = np.asarray(g)
    lead = arr.ndim - len(shape)
    axes = tuple(range(lead)) + tuple(lead + i for i, s in enumerate(shape) if s == 1 and arr.shape[lead + i] != 1)
    red = arr.sum(axis=axes, keepdims=True).reshape(shape) if axes else arr.reshape(shape)
    return _core.from_numpy(np.ascontiguousarray(red, dtype=arr.dtype))


def _binary(a, b, kind: str) -> Tensor:
    if type(a) is Tensor and type(b) is Tensor:
        # Fast path: same shapes, or b broadcast as a suffix of a's shape; the core checks
        # shapes and dtypes itself and refuses anything else with a ValueError.
        try:
            if kind == "mul":
                out = _core.mul(a._impl, b._impl)
            else:
                out = _core.add(a._impl, b._impl, -1.0 if kind == "sub" else 1.0)
        except ValueError:
            pass  # a broadcast the core does not do: the general path below
        else:
            recorded = (a.requires_grad or b.requires_grad) and is_grad_enabled()
            return make_result(out, (a, b), _binary_backward(a, b, kind, None) if recorded else None)
    a = _as_tensor(a, b if isinstance(b, Tensor) else None, kind)
    b = _as_tensor(b, a, kind)
    if a.dtype != b.dtype:
        raise TypeError(f"{kind}: dtypes differ ({a.dtype} and {b.dtype})")
    sa, sb = a.shape, b.shape
    alpha = -1.0 if kind == "sub" else 1.0
    if sa == sb or _is_suffix(sb, sa) or b.numel() == 1:
        big, small, swapped = a, b, False
    elif _is_suffix(sa, sb) or a.numel() == 1:
        big, small, swapped = b, a, True
    else:
        try:
            out_shape = np.broadcast_shapes(sa, sb)
        except ValueError:
            raise ValueError(f"{kind}: shapes {sa} and {sb} cannot be broadcast together") from None
        an, bn = np.asarray(a._impl), np.asarray(b._impl)
        res = an * bn if kind == "mul" else (an - bn if kind == "sub" else an + bn)
        out = _core.from_numpy(np.ascontiguousarray(res))
        return make_result(out, (a, b), _binary_backward(a, b, kind, tuple(out_shape)))
    if kind == "mul":
        out = _core.mul(big._impl, small._impl)
    elif not swapped:
        out = _core.add(big._impl, small._impl, alpha)
    elif kind == "add":
        out = _core.add(big._impl, small._impl)
    else:  # a - b with a the broadcast one: -b + a
        out = _core.add(_core.scale(big._impl, -1.0), small._impl)
    return make_result(out, (a, b), _binary_backward(a, b, kind, tuple(big.shape)))


def _binary_backward(a: Tensor, b: Tensor, kind: str, out_shape: tuple | None):
    """out_shape None: the core's fast path, where out has a's shape (b broadcasts onto a).
    Captures only what backward reads: flags and shapes, and for mul the other factor's data;
    an add keeps neither input alive."""
    a_grad, b_grad = a.requires_grad, b.requires_grad
    a_shape = None if out_shape is None or not a_grad else tuple(a.shape)  # None: g's shape
    b_shape = tuple(b.shape) if b_grad else None
    a_impl = a._impl if kind == "mul" and b_grad else None
    b_impl = b._impl if kind == "mul" and a_grad else None

    def backward(g):
        shape = tuple(g.shape) if out_shape is None else out_shape
        ga = gb = None
        if kind == "mul":
            if a_grad:
                ga = _mul_broadcast(g, b_impl, shape)
                ga = ga if a_shape is None else _reduce_to(ga, a_shape)
            if b_grad:
                gb = _reduce_to(_mul_broadcast(g, a_impl, shape), b_shape)
        else:
            if a_grad:
                ga = g if a_shape is None else _reduce_to(g, a_shape)
            if b_grad:
                gb = _reduce_to(g, b_shape)
                if kind == "sub":
                    gb = _core.scale(gb, -1.0)
        return ga, gb

    return backward


def _mul_broadcast(g, other, out_shape: tuple):
    """g (out_shape) * other (broadcastable to out_shape)."""
    oshape = tuple(other.shape)
    if oshape == out_shape or _is_suffix(oshape, out_shape) or math.prod(oshape) == 1:
        return _core.mul(g, other)
    res = np.asarray(g) * np.asarray(other)
    return _core.from_numpy(np.ascontiguousarray(res))


def add(a, b) -> Tensor:
    return _binary(a, b, "add")


def sub(a, b) -> Tensor:
    return _binary(a, b, "sub")


def mul(a, b) -> Tensor:
    return _binary(a, b, "mul")


def scale(x: Tensor, s: float) -> Tensor:
    _check_tensor(x, "scale: input")
    s = float(s)
    return make_result(_core.scale(x._impl, s), (x,), lambda g: (_core.scale(g, s),))


def neg(x: Tensor) -> Tensor:
    return scale(x, -1.0)


# ---- shape ---------------------------------------------------------------------------


def reshape(x: Tensor, *shape) -> Tensor:
    _check_tensor(x, "reshape: input")
    out = x._impl.view(_shape_list(shape))
    in_shape = list(x.shape)
    return make_result(out, (x,), lambda g: (g.view(in_shape),))


def permute(x: Tensor, *dims) -> Tensor:
    _check_tensor(x, "permute: input")
    if len(dims) == 1 and isinstance(dims[0], (tuple, list)):
        dims = dims[0]
    n = x.ndim
    dims = [int(d) % n if -n <= int(d) < n else int(d) for d in dims]
    if sorted(dims) != list(range(n)):
        raise ValueError(f"permute: dims {list(dims)} are not a permutation of the {n} dims of shape {x.shape}")
    inverse = [0] * n
    for i, d in enumerate(dims):
        inverse[d] = i
    out = _core.permute(x._impl, dims)
    return make_result(out, (x,), lambda g: (_core.permute(g, inverse),))


def transpose(x: Tensor, dim0: int, dim1: int) -> Tensor:
    _check_tensor(x, "transpose: input")
    dim0, dim1 = _check_dim(dim0, x.ndim, "transpose"), _check_dim(dim1, x.ndim, "transpose")
    dims = list(range(x.ndim))
    dims[dim0], dims[dim1] = dims[dim1], dims[dim0]
    return permute(x, dims)


def _slice(x: Tensor, dim: int, start: int, length: int) -> Tensor:
    out = _core.slice(x._impl, dim, start, length)
    full = list(x.shape)
    return make_result(out, (x,), lambda g: (_core.slice_backward(g, full, dim, start),))


def split(x: Tensor, split_size_or_sections, dim: int = -1) -> list:
    """Like torch.split: chunks of size split_size (the last may be smaller), or the given sizes."""
    _check_tensor(x, "split: input")
    n = x.ndim
    if not -n <= dim < n:
        raise ValueError(f"split: dim {dim} out of range for shape {x.shape}")
    dim %= n
    size = x.shape[dim]
    if isinstance(split_size_or_sections, int):
        step = split_size_or_sections
        if step <= 0:
            raise ValueError(f"split: split size must be positive, got {step}")
        sizes = [min(step, size - s) for s in range(0, size, step)]
    else:
        sizes = [int(s) for s in split_size_or_sections]
        if builtins.sum(sizes) != size:
            raise ValueError(f"split: sections {sizes} do not add up to dimension {dim} of size {size}")
    out, start = [], 0
    for s in sizes:
        out.append(_slice(x, dim, start, s))
        start += s
    return out


def chunk(x: Tensor, chunks: int, dim: int = -1) -> list:
    _check_tensor(x, "chunk: input")
    chunks = _check_positive_int(chunks, "chunk: chunks")
    size = x.shape[_check_dim(dim, x.ndim, "chunk")]
    return split(x, max(1, -(-size // chunks)), dim)


def cat(tensors, dim: int = 0) -> Tensor:
    tensors = list(tensors)
    if not tensors:
        raise ValueError("cat: needs at least one tensor")
    for i, t in enumerate(tensors):
        _check_tensor(t, f"cat: tensor {i}")
    dim = _check_dim(dim, tensors[0].ndim, "cat")
    out = _core.concat([t._impl for t in tensors], dim)
    sizes = [t.shape[dim] for t in tensors]

    def backward(g):
        grads, start = [], 0
        for s in sizes:
            grads.append(_core.slice(g, dim, start, s))
            start += s
        return tuple(grads)

    return make_result(out, tuple(tensors), backward)


# ---- reductions ----------------------------------------------------------------------


def sum(x: Tensor) -> Tensor:  # noqa: A001 - the torch name
    _check_float(x, "sum input")
    shape, dtype, device = list(x.shape), x.dtype, x.device

    def backward(g):
        full = _core.empty(shape, dtype, device)
        _core.fill_(full, float(np.asarray(g).reshape(())))
        return (full,)

    return make_result(_core.sum_all(x._impl), (x,), backward)


def mean(x: Tensor) -> Tensor:
    _check_float(x, "mean input")
    shape, dtype, device = list(x.shape), x.dtype, x.device
    n = max(1, x.numel())

    def backward(g):
        full = _core.empty(shape, dtype, device)
        _core.fill_(full, float(np.asarray(g).reshape(())) / n)
        return (full,)

    return make_result(_core.mean_all(x._impl), (x,), backward)


# ---- Tensor methods and operators ----------------------------------------------------------


def _scalar_or(fn_tensor, fn_scalar):
    def op(self, other):
        if isinstance(other, (int, float)) and not isinstance(other, bool):
            return fn_scalar(self, float(other))
        return fn_tensor(self, other)

    return op


Tensor.__add__ = _scalar_or(add, lambda x, s: add(x, tensor(np.asarray(s, dtype=x.dtype))))
Tensor.__radd__ = Tensor.__add__
Tensor.__sub__ = _scalar_or(sub, lambda x, s: add(x, tensor(np.asarray(-s, dtype=x.dtype))))
Tensor.__rsub__ = lambda self, other: sub(_as_tensor(other, self, "sub"), self)
Tensor.__mul__ = _scalar_or(mul, scale)
Tensor.__rmul__ = Tensor.__mul__


def _truediv(x: Tensor, s) -> Tensor:
    if isinstance(s, Tensor) or isinstance(s, bool) or not isinstance(s, (int, float)):
        raise TypeError(f"a tensor can only be divided by a Python number, got {type(s).__name__}")
    return scale(x, 1.0 / s)


Tensor.__truediv__ = _truediv
Tensor.__neg__ = neg
Tensor.__matmul__ = lambda self, other: matmul(self, _as_tensor(other, self, "matmul"))
Tensor.reshape = reshape
Tensor.view = reshape
Tensor.permute = permute
Tensor.transpose = transpose
Tensor.split = split
Tensor.chunk = chunk
Tensor.sum = sum
Tensor.mean = mean
