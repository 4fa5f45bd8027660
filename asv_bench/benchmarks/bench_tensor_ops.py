"""Tensor plumbing ops and the fused AdamW step of femtogpt._core against numpy.

Each class times the _core op and, in the same run, the numpy way of doing the
same thing, at the shapes a small GPT uses.
"""

import numpy as np

from femtogpt import _core


def gpt_param_shapes(n_layer=6, n_embd=384, block_size=256, vocab_size=65):
    """The parameter shapes of nanoGPT's Shakespeare-char model: ~10.7M parameters."""
    C = n_embd
    shapes = [(vocab_size, C), (block_size, C)]
    for _ in range(n_layer):
        shapes += [(C,), (C,), (3 * C, C), (3 * C,), (C, C), (C,), (C,), (C,), (4 * C, C), (4 * C,), (C, 4 * C), (C,)]
    return shapes + [(C,), (C,)]


def numpy_adamw(params, grads, ms, vs, lr, beta1, beta2, eps, wds, step):
    """The same update in numpy, in place, tensor by tensor (what a numpy optimizer would do)."""
    bc1, bc2 = 1 - beta1 ** step, 1 - beta2 ** step
    step_size, bc2_sqrt = lr / bc1, np.sqrt(bc2)
    for p, g, m, v, wd in zip(params, grads, ms, vs, wds):
        if wd:
            p *= 1 - lr * wd
        m *= beta1
        m += (1 - beta1) * g
        v *= beta2
        v += (1 - beta2) * g * g
        denom = np.sqrt(v)
        denom /= bc2_sqrt
        denom += eps
        p -= step_size * m / denom


class AdamWStep:
    """One optimizer step over a ~10M-parameter GPT's parameters (float32)."""

    timeout = 120

    def setup(self):
        rng = np.random.default_rng(0)
        shapes = gpt_param_shapes()
        self.np_p = [rng.standard_normal(s).astype(np.float32) for s in shapes]
        self.np_g = [rng.standard_normal(s).astype(np.float32) for s in shapes]
        self.np_m = [np.zeros(s, np.float32) for s in shapes]
        self.np_v = [np.zeros(s, np.float32) for s in shapes]
        self.wds = [0.1 if len(s) >= 2 else 0.0 for s in shapes]
        self.p = [_core.from_numpy(x) for x in self.np_p]
        self.g = [_core.from_numpy(x) for x in self.np_g]
        self.m = [_core.zeros(list(s)) for s in shapes]
        self.v = [_core.zeros(list(s)) for s in shapes]
        self.n_params = sum(int(np.prod(s)) for s in shapes)

    def time_core_adamw(self):
        _core.adamw_step(self.p, self.g, self.m, self.v, 1e-3, 0.9, 0.95, 1e-8, self.wds, 10)

    def time_numpy_adamw(self):
        numpy_adamw(self.np_p, self.np_g, self.np_m, self.np_v, 1e-3, 0.9, 0.95, 1e-8, self.wds, 10)

    def time_core_clip(self):
        norm = _core.grad_norm_sq(self.g) ** 0.5
        _core.scale_all_(self.g, 1.0 / max(norm, 1e-6) * norm)

    def time_numpy_clip(self):
        norm = float(np.sqrt(sum(float(np.vdot(g, g)) for g in self.np_g)))
        for g in self.np_g:
            g *= 1.0 / max(norm, 1e-6) * norm


class Add:
    """The residual add (B,T,C)+(B,T,C) and the bias add (B*T,4C)+(4C,)."""

    params = [[(8, 256, 384)]]
    param_names = ["shape"]

    def setup(self, shape):
        rng = np.random.default_rng(1)
        B, T, C = shape
        self.x = rng.standard_normal(shape).astype(np.float32)
        self.y = rng.standard_normal(shape).astype(np.float32)
        self.h = rng.standard_normal((B * T, 4 * C)).astype(np.float32)
        self.bias = rng.standard_normal(4 * C).astype(np.float32)
        self.tx, self.ty = _core.from_numpy(self.x), _core.from_numpy(self.y)
        self.th, self.tbias = _core.from_numpy(self.h), _core.from_numpy(self.bias)

    def time_core_residual(self, shape):
        _core.add(self.tx, self.ty)

    def time_numpy_residual(self, shape):
        np.add(self.x, self.y)

    def time_core_bias(self, shape):
        _core.add(self.th, self.tbias)

    def time_numpy_bias(self, shape):
        np.add(self.h, self.bias)

    def time_core_bias_grad(self, shape):
        _core.sum_to_suffix(self.th, [self.h.shape[1]])

    def time_numpy_bias_grad(self, shape):
        self.h.sum(axis=0)


class Permute:
    """The attention head split (B,T,H,D) -> (B,H,T,D) and a plain transpose."""

    params = [[(8, 256, 6, 64)]]
    param_names = ["shape"]

    def setup(self, shape):
        rng = np.random.default_rng(2)
        self.x = rng.standard_normal(shape).astype(np.float32)
        B, T, H, D = shape
        self.m = rng.standard_normal((B * T, H * D)).astype(np.float32)
        self.tx, self.tm = _core.from_numpy(self.x), _core.from_numpy(self.m)

    def time_core_heads(self, shape):
        _core.permute(self.tx, [0, 2, 1, 3])

    def time_numpy_heads(self, shape):
        np.ascontiguousarray(self.x.transpose(0, 2, 1, 3))

    def time_core_transpose(self, shape):
        _core.permute(self.tm, [1, 0])

    def time_numpy_transpose(self, shape):
        np.ascontiguousarray(self.m.T)
