"""Gradient checking: analytic gradients against central finite differences."""

from __future__ import annotations

import numpy as np

from .graph import Tensor, no_grad


class GradcheckError(AssertionError):
    pass


def _project(out: Tensor, r: np.ndarray) -> float:
    return float((out.numpy().astype(np.float64) * r).sum())


def gradcheck(fn, inputs, eps: float = 1e-6, atol: float = 1e-5, rtol: float = 1e-4, seed: int = 0) -> bool:
    """Check fn's gradients with respect to every input that requires grad.

    ``fn(*inputs)`` must return a Tensor; inputs that require grad should be
    float64. A random projection r turns a non-scalar output into the scalar
    sum(r * out); its analytic gradient (backward with gradient r) is compared
    with (f(x + eps) - f(x - eps)) / (2 eps), element by element, perturbing the
    input in place through its zero-copy numpy view. Raises GradcheckError naming
    the input and element on a mismatch; returns True otherwise.
    """
    inputs = list(inputs)
    for i, x in enumerate(inputs):
        if isinstance(x, Tensor) and x.requires_grad and x.dtype != np.float64:
            raise TypeError(f"gradcheck: input {i} has dtype {x.dtype}; finite differences need float64")
        if isinstance(x, Tensor):
            x.grad = None
    out = fn(*inputs)
    rng = np.random.default_rng(seed)
    r = rng.standard_normal(out.shape)
    out.backward(gradient=r.astype(out.dtype))
    for i, x in enumerate(inputs):
        if not (isinstance(x, Tensor) and x.requires_grad):
            continue
        analytic = np.zeros(x.shape) if x.grad is None else x.grad.numpy().astype(np.float64)
        data = x.numpy()  # zero-copy: writes change the input itself
        flat = data.reshape(-1)
        numeric = np.zeros(flat.size)
        with no_grad():
            for j in range(flat.size):
                orig = flat[j]
                flat[j] = orig + eps
                plus = _project(fn(*inputs), r)
                flat[j] = orig - eps
                minus = _project(fn(*inputs), r)
                flat[j] = orig
                numeric[j] = (plus - minus) / (2 * eps)
        numeric = numeric.reshape(x.shape)
        bad = ~np.isclose(analytic, numeric, atol=atol, rtol=rtol)
        if bad.any():
            j = np.unravel_index(np.argmax(bad), x.shape)
            raise GradcheckError(
                f"gradcheck: input {i} (shape {x.shape}) element {tuple(int(k) for k in j)}: analytic "
                f"{analytic[j]:.8g} vs numeric {numeric[j]:.8g}; {int(bad.sum())} of {bad.size} elements differ")
    return True
