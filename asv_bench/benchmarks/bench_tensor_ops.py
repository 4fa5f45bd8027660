"""Tensor plumbing ops, the fused AdamW step and token sampling of femtogpt._core against numpy.

Each class times the _core op and, in the same run, the numpy way of doing the
same thing, at the shapes a small GPT uses (the "small" preset: 6 layers,
C = 384, ~10.7M parameters; activations (8, 256, 384)); sampling at GPT-2's
vocabulary of 50257.

Run directly (`python bench_tensor_ops.py`) for a table of medians.
"""

import numpy as np

try:
    from femtogpt import _core
except ImportError:  # pragma: no cover
    _core = None


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


def numpy_sample(logits, temperature, top_k, top_p, rng):
    """Temperature, top-k and nucleus sampling in numpy (the usual sort-based way)."""
    z = logits.astype(np.float64) / temperature
    if top_k:
        kth = np.partition(z, -top_k, axis=-1)[:, -top_k][:, None]
        z = np.where(z < kth, -np.inf, z)
    p = np.exp(z - z.max(-1, keepdims=True))
    p /= p.sum(-1, keepdims=True)
    if top_p < 1:
        order = np.argsort(-p, axis=-1, kind="stable")
        sp = np.take_along_axis(p, order, -1)
        drop = np.cumsum(sp, -1) - sp >= top_p
        sp[drop] = 0
        p = np.zeros_like(p)
        np.put_along_axis(p, order, sp, -1)
        p /= p.sum(-1, keepdims=True)
    u = rng.random((p.shape[0], 1))
    return (np.cumsum(p, -1) > u).argmax(-1)


class Sample:
    """One token per row from logits (8, 50257): full softmax, top-k 50, nucleus 0.9."""

    params = [["full", "top_k", "top_p"]]
    param_names = ["mode"]
    SETTINGS = {"full": (1.0, 0, 1.0), "top_k": (1.0, 50, 1.0), "top_p": (1.0, 0, 0.9)}

    def setup(self, mode):
        rng = np.random.default_rng(3)
        self.logits = (rng.standard_normal((8, 50257)) * 3).astype(np.float32)
        self.tlogits = _core.from_numpy(self.logits)
        self.state = _core.rng_state(0, 8)
        self.rng = np.random.default_rng(0)

    def time_core_sample(self, mode):
        _core.sample_tokens(self.tlogits, *self.SETTINGS[mode], self.state)

    def time_numpy_sample(self, mode):
        numpy_sample(self.logits, *self.SETTINGS[mode], self.rng)


if __name__ == "__main__":  # a table of medians, _core against numpy
    from _util import median_seconds

    for cls in (AdamWStep, Add, Permute, Sample):
        for args in ([()] if not hasattr(cls, "params") else [(p,) for p in cls.params[0]]):
            bench = cls()
            bench.setup(*args)
            names = sorted(n for n in dir(cls) if n.startswith("time_core_"))
            for name in names:
                what = name[len("time_core_"):]
                core = median_seconds(lambda: getattr(bench, name)(*args))
                ref = median_seconds(lambda: getattr(bench, "time_numpy_" + what)(*args))
                label = f"{cls.__name__}.{what}" + (f"[{args[0]}]" if args else "")
                print(f"{label:36s} core {core * 1e3:9.3f} ms   numpy {ref * 1e3:9.3f} ms   x{ref / core:5.2f}")
