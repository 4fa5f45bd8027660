"""Forward + backward time of the nn ops at the shapes of the "femto" and "small" models.

Each op is timed three ways in the same run: femtogpt's fast kernels (`time_femtogpt`),
its plain reference kernels (`time_reference`, _core.nn_reference) and the same math
in numpy float32 (`time_numpy`). Shapes (N = batch * context rows):
  femto: batch 32, context 64,  width 64,  vocab 76 -> N = 2048
  small: batch 16, context 256, width 384, vocab 76 -> N = 4096
layernorm (N, C); gelu (N, 4C) (the MLP's hidden layer); softmax and log_softmax
(N, context) (one row of attention scores per query); cross_entropy (N, V);
embedding: (batch, context) indices into (V, C); dropout (N, C).

Run directly (`python bench_nn_ops.py`) for a table of medians.
"""

import math

import numpy as np

try:
    from femtogpt import _core
except ImportError:  # pragma: no cover
    _core = None

MODELS = {
    "femto": dict(B=32, T=64, C=64, V=76),
    "small": dict(B=16, T=256, C=384, V=76),
}
OPS = ["layernorm", "gelu_tanh", "gelu_erf", "relu", "softmax", "log_softmax", "cross_entropy", "embedding",
       "dropout"]

_erf = np.vectorize(math.erf, otypes=[np.float32])


def _numpy_ops(op, d):
    """The numpy float32 forward + backward of `op` on the arrays in d."""
    if op == "layernorm":
        def run():
            x, w, b, g = d["x"], d["w"], d["b"], d["g"]
            mean = x.mean(-1, keepdims=True)
            rstd = 1 / np.sqrt(((x - mean) ** 2).mean(-1, keepdims=True) + 1e-5)
            xhat = (x - mean) * rstd
            _ = xhat * w + b
            dxhat = g * w
            _ = rstd * (dxhat - dxhat.mean(-1, keepdims=True) - xhat * (dxhat * xhat).mean(-1, keepdims=True))
            _ = (g * xhat).sum(0), g.sum(0)
        return run
    if op == "gelu_tanh":
        def run():
            x, g = d["h"], d["gh"]
            k = np.float32(math.sqrt(2 / math.pi))
            t = np.tanh(k * (x + np.float32(0.044715) * x**3))
            _ = 0.5 * x * (1 + t)
            _ = g * (0.5 * (1 + t) + 0.5 * x * (1 - t * t) * k * (1 + np.float32(3 * 0.044715) * x * x))
        return run
    if op == "gelu_erf":
        def run():
            x, g = d["h"], d["gh"]
            e = _erf(x * np.float32(1 / math.sqrt(2)))
            _ = 0.5 * x * (1 + e)
            _ = g * (0.5 * (1 + e) + x * np.exp(-0.5 * x * x) * np.float32(1 / math.sqrt(2 * math.pi)))
        return run
    if op == "relu":
        def run():
            out = np.maximum(d["h"], 0)
            _ = np.where(out > 0, d["gh"], 0)
        return run
    if op in ("softmax", "log_softmax"):
        def run():
            s, g = d["s"], d["gs"]
            e = np.exp(s - s.max(-1, keepdims=True))
            p = e / e.sum(-1, keepdims=True)
            if op == "softmax":
                _ = p * (g - (g * p).sum(-1, keepdims=True))
            else:
                _ = np.log(p)
                _ = g - p * g.sum(-1, keepdims=True)
        return run
    if op == "cross_entropy":
        def run():
            z, t = d["logits"], d["targets"]
            m = z.max(-1, keepdims=True)
            e = np.exp(z - m)
            ssum = e.sum(-1, keepdims=True)
            lse = m[:, 0] + np.log(ssum[:, 0])
            _ = (lse - z[np.arange(len(t)), t]).mean()
            dz = e / ssum
            dz[np.arange(len(t)), t] -= 1
            dz /= len(t)
        return run
    if op == "embedding":
        def run():
            _ = d["wte"][d["idx"]]
            dw = np.zeros_like(d["wte"])
            np.add.at(dw, d["idx"].reshape(-1), d["ge"].reshape(-1, d["wte"].shape[1]))
        return run
    if op == "dropout":
        def run():
            keep = d["rng"].random(d["x"].shape) >= 0.1
            _ = np.where(keep, d["x"] / np.float32(0.9), 0)
            _ = np.where(keep, d["g"] / np.float32(0.9), 0)
        return run
    raise ValueError(op)


def _core_ops(op, d, m):
    """femtogpt's forward + backward of `op`; m is _core or _core.nn_reference."""
    t = {k: _core.from_numpy(v) for k, v in d.items() if isinstance(v, np.ndarray)}
    if op == "layernorm":
        def run():
            _, mean, rstd = m.layernorm_forward(t["x"], t["w"], t["b"], 1e-5)
            m.layernorm_backward(t["g"], t["x"], t["w"], mean, rstd)
        return run
    if op in ("gelu_tanh", "gelu_erf"):
        approx = "tanh" if op == "gelu_tanh" else "none"

        def run():
            m.gelu_forward(t["h"], approx)
            m.gelu_backward(t["gh"], t["h"], approx)
        return run
    if op == "relu":  # one kernel: the reference module has none of its own
        def run():
            out = _core.relu_forward(t["h"])
            _core.relu_backward(t["gh"], out)
        return run
    if op in ("softmax", "log_softmax"):
        fwd, bwd = getattr(m, op + "_forward"), getattr(m, op + "_backward")

        def run():
            bwd(t["gs"], fwd(t["s"]))
        return run
    if op == "cross_entropy":
        one = _core.from_numpy(np.array(1.0, np.float32))

        def run():
            _, lse = m.cross_entropy_forward(t["logits"], t["targets"], -100, "mean")
            m.cross_entropy_backward(one, t["logits"], t["targets"], lse, -100, "mean")
        return run
    if op == "embedding":
        V = d["wte"].shape[0]

        def run():
            _core.embedding_forward(t["idx"], t["wte"])
            m.embedding_backward(t["ge"], t["idx"], V)
        return run
    if op == "dropout":
        def run():
            m.dropout_forward(t["x"], 0.1, 1234)
            m.dropout_backward(t["g"], 0.1, 1234)
        return run
    raise ValueError(op)


def _inputs(model):
    s = MODELS[model]
    B, T, C, V = s["B"], s["T"], s["C"], s["V"]
    N = B * T
    rng = np.random.default_rng(0)

    def f32(*shape):
        return rng.standard_normal(shape).astype(np.float32)

    return dict(x=f32(N, C), w=f32(C), b=f32(C), g=f32(N, C), h=f32(N, 4 * C), gh=f32(N, 4 * C),
                s=f32(N, T), gs=f32(N, T), logits=f32(N, V), targets=rng.integers(0, V, N).astype(np.int64),
                wte=f32(V, C), idx=rng.integers(0, V, (B, T)).astype(np.int64), ge=f32(B, T, C),
                rng=np.random.default_rng(1))


class NNOps:
    params = (list(MODELS), OPS)
    param_names = ["model", "op"]

    def setup(self, model, op):
        d = _inputs(model)
        self.fast = _core_ops(op, d, _core)
        self.ref = _core_ops(op, d, _core.nn_reference)
        self.numpy = _numpy_ops(op, d)

    def time_femtogpt(self, model, op):
        self.fast()

    def time_reference(self, model, op):
        self.ref()

    def time_numpy(self, model, op):
        self.numpy()


if __name__ == "__main__":
    import statistics
    import sys
    import time

    def median_ms(fn, repeat=15):
        fn()
        ts = []
        for _ in range(repeat):
            t0 = time.perf_counter()
            fn()
            ts.append(time.perf_counter() - t0)
        return 1e3 * statistics.median(ts)

    ops = sys.argv[1:] or OPS
    print(f"isa={_core.cpu_isa()} threads={_core.get_num_threads()}  (median ms, forward + backward)")
    print(f"{'model':6} {'op':14} {'femtogpt':>9} {'reference':>9} {'numpy':>9}")
    for model in MODELS:
        for op in ops:
            b = NNOps()
            b.setup(model, op)
            print(f"{model:6} {op:14} {median_ms(b.fast):9.3f} {median_ms(b.ref):9.3f} {median_ms(b.numpy):9.3f}")
