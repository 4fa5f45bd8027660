"""Modules: parameters with names, and the layers of a GPT (as in nanoGPT's model.py).

A Module's parameters are its Tensor attributes that require grad; submodules
and lists of submodules are walked in the order they were assigned, giving
dotted names (``h.0.attn.c_attn.weight``).
"""

from __future__ import annotations

import math

import numpy as np

from . import functional as F
from .graph import Tensor, empty, tensor


def parameter(array: np.ndarray) -> Tensor:
    return tensor(np.ascontiguousarray(array), requires_grad=True)


def normal_parameter(rng, shape: tuple, std: float) -> Tensor:
    """A float32 parameter of N(0, std) samples: the values of (rng.standard_normal(shape) * std)
    .astype(float32), drawn a few rows at a time straight into the tensor, so that no float64
    copy of the whole weight is made (the C library would keep its freed pages resident)."""
    t = empty(*shape)
    flat = t.numpy().reshape(shape[0], int(np.prod(shape[1:])))
    rows = max(1, 8192 // max(1, flat.shape[1]))
    for r in range(0, shape[0], rows):  # consecutive draws continue one stream: same values as one call
        flat[r:r + rows] = rng.standard_normal((min(rows, shape[0] - r), flat.shape[1])) * std
    t.requires_grad = True
    return t


class Module:
    training = True

    def named_parameters(self, prefix: str = ""):
        for name, value in vars(self).items():
            if isinstance(value, Tensor) and value.requires_grad:
                yield prefix + name, value
            elif isinstance(value, Module):
                yield from value.named_parameters(f"{prefix}{name}.")
            elif isinstance(value, (list, tuple)) and value and all(isinstance(m, Module) for m in value):
                for i, m in enumerate(value):
                    yield from m.named_parameters(f"{prefix}{name}.{i}.")

    def parameters(self) -> list:
        return [p for _, p in self.named_parameters()]

    def modules(self):
        yield self
        for value in vars(self).values():
            if isinstance(value, Module):
                yield from value.modules()
            elif isinstance(value, (list, tuple)):
                for m in value:
                    if isinstance(m, Module):
                        yield from m.modules()

    def train(self, mode: bool = True):
        for m in self.modules():
            m.training = mode
        return self

    def eval(self):
        return self.train(False)

    def zero_grad(self) -> None:
        for p in self.parameters():
            p.grad = None

    def to_dtype(self, dtype):
        """Convert every parameter in place (float64 is for gradient checks)."""
        from . import _core

        for p in self.parameters():
            p._impl = _core.from_numpy(np.ascontiguousarray(p.numpy(), dtype=dtype), p.device)
            p.grad = None
        return self

    def __call__(self, *args, **kwargs):
        return self.forward(*args, **kwargs)


class Linear(Module):
    """y = x @ W^T + b with W (out_features, in_features), as torch.nn.Linear."""

    def __init__(self, in_features: int, out_features: int, bias: bool = True, rng=None, std: float = 0.02):
        rng = rng if rng is not None else np.random.default_rng(0)
        self.weight = normal_parameter(rng, (out_features, in_features), std)
        self.bias = parameter(np.zeros(out_features, np.float32)) if bias else None

    def forward(self, x: Tensor) -> Tensor:
        return F.linear(x, self.weight, self.bias)


class Embedding(Module):
    def __init__(self, num_embeddings: int, embedding_dim: int, rng=None, std: float = 0.02):
        rng = rng if rng is not None else np.random.default_rng(0)
        self.weight = normal_parameter(rng, (num_embeddings, embedding_dim), std)

    def forward(self, idx) -> Tensor:
        return F.embedding(idx, self.weight)


class LayerNorm(Module):
    def __init__(self, ndim: int, bias: bool = True, eps: float = 1e-5):
        self.weight = parameter(np.ones(ndim, np.float32))
        self.bias = parameter(np.zeros(ndim, np.float32)) if bias else None
        self.eps = eps

    def forward(self, x: Tensor) -> Tensor:
        return F.layer_norm(x, x.shape[-1:], self.weight, self.bias, self.eps)

    def fused_linear(self, x: Tensor, weight: Tensor, bias: Tensor | None = None, x_again=None) -> Tensor:
        """F.linear(self(x), weight, bias), keeping x rather than the normalized copy for backward
        (or, given x_again, not even x: see F.layer_norm_linear)."""
        return F.layer_norm_linear(x, self.weight, self.bias, weight, bias, self.eps, x_again=x_again)


class Dropout(Module):
    """Dropout whose masks come from a seeded counter, so runs are reproducible."""

    def __init__(self, p: float, seed: int = 0):
        if not 0.0 <= p < 1.0:
            raise ValueError(f"dropout probability must be in [0, 1), got {p}")
        self.p = p
        self.seed = seed
        self.calls = 0

    def forward(self, x: Tensor) -> Tensor:
        seed = self.next_seed()
        return x if seed is None else F.dropout(x, self.p, True, seed=seed)

    def next_seed(self) -> int | None:
        """The seed of this call's mask, or None when this call drops nothing (eval, or p = 0).
        A distinct, reproducible seed per call: (module seed, call count)."""
        if not self.training or self.p == 0.0:
            return None
        self.calls += 1
        return (self.seed * 1_000_003 + self.calls) & 0x7FFFFFFFFFFFFFFF


class CausalSelfAttention(Module):
    def __init__(self, n_embd: int, n_head: int, bias: bool, dropout: float, attention: str, rng,
                 proj_std: float, seed: int = 0):
        if n_embd % n_head != 0:
            raise ValueError(f"n_embd ({n_embd}) must be divisible by n_head ({n_head})")
        self.c_attn = Linear(n_embd, 3 * n_embd, bias, rng)
        self.c_proj = Linear(n_embd, n_embd, bias, rng, std=proj_std)
        self.resid_dropout = Dropout(dropout, seed)
        self.n_head = n_head
        self.n_embd = n_embd
        self.attention = attention

    def forward(self, x: Tensor, norm: LayerNorm | None = None, x_again=None) -> Tensor:
        """attn(x), or attn(norm(x)) with the norm fused into the qkv projection (see F.layer_norm_linear;
        x_again, with norm: x is recomputed in backward, not kept)."""
        # x (B, T, C) -> qkv (B, T, 3C) -> per head q, k, v (B, H, T, D) -> causal attention -> y (B, T, C)
        if norm is None:
            if x_again is not None:
                raise ValueError("CausalSelfAttention.forward: x_again needs the fused norm (norm=...)")
            qkv = self.c_attn(x)
        else:
            qkv = norm.fused_linear(x, self.c_attn.weight, self.c_attn.bias, x_again=x_again)
        y = F.causal_self_attention(qkv, self.n_head, impl=self.attention)
        return self.resid_dropout(self.c_proj(y))

    def residual(self, x: Tensor, norm: LayerNorm, hand_on_y: bool = True, x_again=None):
        """x + attn(norm(x)), keeping neither attn's output nor the sum for backward, and a function
        that recomputes the sum there (see F.residual_attention_linear) -> (x2, x2_again).
        x_again: recomputes x in backward, so that nothing here keeps x either."""
        qkv = norm.fused_linear(x, self.c_attn.weight, self.c_attn.bias, x_again=x_again)  # (B, T, 3C)
        seed = self.resid_dropout.next_seed()
        return F.residual_attention_linear(x, qkv, self.n_head, self.c_proj.weight, self.c_proj.bias,
                                           0.0 if seed is None else self.resid_dropout.p, seed, self.attention,
                                           hand_on_y=hand_on_y, x_again=x_again)


class MLP(Module):
    def __init__(self, n_embd: int, bias: bool, dropout: float, rng, proj_std: float, seed: int = 0):
        self.c_fc = Linear(n_embd, 4 * n_embd, bias, rng)
        self.c_proj = Linear(4 * n_embd, n_embd, bias, rng, std=proj_std)
        self.dropout = Dropout(dropout, seed)

    def forward(self, x: Tensor, norm: LayerNorm | None = None, output: bool = True, x_again=None) -> Tensor:
        """mlp(x), or mlp(norm(x)) with the norm fused into the first projection.

        output=False records the same graph but skips the down projection's product (see F.gelu_linear).
        x_again (with norm): recomputes x in backward instead of keeping it (see F.layer_norm_linear).
        """
        if norm is None:
            if x_again is not None:
                raise ValueError("MLP.forward: x_again needs the fused norm (norm=...)")
            h = self.c_fc(x)  # (B, T, 4C)
        else:
            h = norm.fused_linear(x, self.c_fc.weight, self.c_fc.bias, x_again=x_again)  # (B, T, 4C)
        # c_proj(gelu(h)) as one op that keeps h, not gelu(h), for backward, and (h being ours
        # alone) writes dh over it there
        return self.dropout(F.gelu_linear(h, self.c_proj.weight, self.c_proj.bias, approximate="tanh",
                                          output=output, reuse_input=True))


class Block(Module):
    def __init__(self, n_embd: int, n_head: int, bias: bool, dropout: float, attention: str, rng, n_layer: int,
                 seed: int = 0, recompute_attention: bool = False):
        proj_std = 0.02 / math.sqrt(2 * n_layer)  # GPT-2: residual projections scaled by 1/sqrt(2 n_layer)
        self.ln_1 = LayerNorm(n_embd, bias)
        self.attn = CausalSelfAttention(n_embd, n_head, bias, dropout, attention, rng, proj_std, seed * 2 + 1)
        self.ln_2 = LayerNorm(n_embd, bias)
        self.mlp = MLP(n_embd, bias, dropout, rng, proj_std, seed * 2 + 2)
        self.recompute_attention = recompute_attention
        self.first_in_backward = False  # the GPT's last block: see forward

    def forward(self, x: Tensor, output: bool = True, x_again=None) -> Tensor:
        """x (B, T, C) -> (B, T, C). output=False: only the graph, for a checkpoint's recomputation.
        x_again: a function that gives x's data back bitwise in backward (the GPT's first block: the
        embeddings, recomputed from the token ids); the block then keeps nothing of x.

        A recomputed block keeps its attention output y for backward, as the uncheckpointed one does.
        F.causal_self_attention_linear would keep less, recomputing y in backward, at the cost of one
        more attention forward a block. Measured both ways (checkpointing every block, alternated):
        small preset at batch 16, peak RSS 286 to 292 MB with it vs 295 without, step time over the
        uncheckpointed one x1.21 to x1.26 vs x1.19; block 1024, x1.22 to x1.26 vs x1.18. Without it
        both targets of the memory issue (300 MB, x1.25) hold with a margin.

        recompute_attention (GPTConfig.recompute_attention): the block keeps neither the attention
        output nor the mid-block residual x + attn(ln_1(x)); backward recomputes both from the block's
        input and qkv, which it keeps anyway (F.residual_attention_linear). Same values and gradients.
        The block backward reaches first (first_in_backward, the model's last) computes y twice there
        rather than hold it from one recomputation to the next: its backward is the step's peak.
        Measured on the small preset at batch 16: 6 MiB less peak (pool reserved 443.9 vs 437.9 MiB),
        for one attention forward, under 1% of the step by the profile."""
        if self.recompute_attention:
            # x2 = x + attn(ln_1(x))
            x2, x2_again = self.attn.residual(x, norm=self.ln_1, hand_on_y=not self.first_in_backward,
                                              x_again=x_again)
            return x2 + self.mlp(x2, norm=self.ln_2, output=output, x_again=x2_again)
        x = x + self.attn(x, norm=self.ln_1, x_again=x_again)  # = x + attn(ln_1(x))
        return x + self.mlp(x, norm=self.ln_2, output=output)  # = x + mlp(ln_2(x))
