"""AdamW, learning-rate schedules and gradient clipping."""

from __future__ import annotations

import math
import numbers

import numpy as np

from . import _core
from .graph import Tensor


class AdamW:
    """AdamW as in torch.optim.AdamW (decoupled weight decay), one fused C++ update over all parameters.

    Weight decay applies to parameters of 2 or more dimensions (matmul weights and
    embeddings) and not to biases and LayerNorm gains, as in nanoGPT.
    """

    def __init__(self, params, lr: float = 1e-3, betas=(0.9, 0.95), eps: float = 1e-8, weight_decay: float = 0.1):
        self.params = [p for p in params]
        if not self.params:
            raise ValueError("AdamW got an empty parameter list")
        for i, p in enumerate(self.params):
            if not isinstance(p, Tensor) or not p.requires_grad:
                raise TypeError(f"AdamW: parameter {i} is not a Tensor that requires grad")
        for name, v in (("lr", lr), ("eps", eps), ("weight_decay", weight_decay)):
            if isinstance(v, bool) or not isinstance(v, numbers.Real):
                raise TypeError(f"AdamW: {name} must be a number, got {v!r}")
        if not all(math.isfinite(v) and v >= 0 for v in (lr, eps, weight_decay)):
            raise ValueError(f"AdamW: lr ({lr}), eps ({eps}) and weight_decay ({weight_decay}) must be finite "
                             f"and >= 0")
        if eps == 0:  # a weight whose gradient is still 0 would step by 0 / (sqrt(0) + 0) = NaN
            raise ValueError("AdamW: eps must be > 0 (it keeps the update finite where a gradient is 0), got 0")
        if not (isinstance(betas, (tuple, list)) and len(betas) == 2
                and all(isinstance(b, numbers.Real) and not isinstance(b, bool) for b in betas)):
            raise ValueError(f"AdamW: betas must be a pair of numbers (beta1, beta2), got {betas!r}")
        if not (0.0 <= betas[0] < 1.0 and 0.0 <= betas[1] < 1.0):
            raise ValueError(f"AdamW: betas must be in [0, 1), got {betas}")
        self.lr = lr
        self.betas = (float(betas[0]), float(betas[1]))
        self.eps = eps
        self.weight_decay = weight_decay
        self.step_count = 0
        self.exp_avg = [_core.zeros(list(p.shape), p.dtype, p.device) for p in self.params]
        self.exp_avg_sq = [_core.zeros(list(p.shape), p.dtype, p.device) for p in self.params]

    def zero_grad(self) -> None:
        for p in self.params:
            p.grad = None

    def step(self) -> None:
        live = [i for i, p in enumerate(self.params) if p.grad is not None]
        if not live:
            return
        self.step_count += 1
        decays = [self.weight_decay if self.params[i].ndim >= 2 else 0.0 for i in live]
        _core.adamw_step([self.params[i]._impl for i in live], [self.params[i].grad._impl for i in live],
                         [self.exp_avg[i] for i in live], [self.exp_avg_sq[i] for i in live],
                         float(self.lr), self.betas[0], self.betas[1], float(self.eps), decays, self.step_count)

    def state_dict(self, copy: bool = True) -> dict:
        """Moments as numpy arrays and the step count. copy=False: views of the moments themselves
        (valid until the next step changes them), for writing a checkpoint without a second copy."""
        state = {"step": np.array(self.step_count, dtype=np.int64)}
        for i in range(len(self.params)):
            state[f"exp_avg.{i}"] = np.array(self.exp_avg[i], copy=copy)
            state[f"exp_avg_sq.{i}"] = np.array(self.exp_avg_sq[i], copy=copy)
        return state

    def load_state_dict(self, state: dict) -> None:
        """Restore state_dict() output; everything is checked before anything changes."""
        if "step" not in state:
            raise ValueError("optimizer state is missing 'step'")
        step = np.asarray(state["step"])
        if step.shape != () or step.dtype.kind not in "iu" or step < 0:
            raise ValueError(f"optimizer state 'step' must be an integer >= 0, got {step!r}")
        moments = {}
        for i, p in enumerate(self.params):
            for key in (f"exp_avg.{i}", f"exp_avg_sq.{i}"):
                if key not in state:
                    raise ValueError(f"optimizer state is missing '{key}'")
                arr = np.asarray(state[key])
                if arr.dtype.kind != "f":
                    raise ValueError(f"optimizer state '{key}' has dtype {arr.dtype}, expected a floating point dtype")
                if arr.shape != p.shape:
                    raise ValueError(f"optimizer state '{key}' has shape {arr.shape}, parameter {i} has {p.shape}")
                moments[key] = arr
        for i, p in enumerate(self.params):
            for key, dst in ((f"exp_avg.{i}", self.exp_avg), (f"exp_avg_sq.{i}", self.exp_avg_sq)):
                dst[i] = _core.from_numpy(np.ascontiguousarray(moments[key], dtype=p.dtype), p.device)
        self.step_count = int(step)


def clip_grad_norm_(params, max_norm: float) -> float:
    """Scale gradients so that their global L2 norm is at most max_norm (0 or less: no clipping);
    returns the norm before."""
    if isinstance(max_norm, bool) or not isinstance(max_norm, numbers.Real) or math.isnan(max_norm):
        raise ValueError(f"clip_grad_norm_: max_norm must be a number (0 or less: no clipping), got {max_norm!r}")
    grads = [p.grad._impl for p in params if p.grad is not None]
    if not grads:
        return 0.0
    norm = math.sqrt(_core.grad_norm_sq(grads))
    if max_norm > 0 and norm > max_norm:
        _core.scale_all_(grads, max_norm / (norm + 1e-6))
    return norm


def cosine_lr(step: int, lr: float, min_lr: float, warmup_steps: int, max_steps: int) -> float:
    """Linear warmup to lr over warmup_steps, then cosine decay to min_lr at max_steps."""
    if step < warmup_steps:
        return lr * (step + 1) / warmup_steps
    if step >= max_steps:
        return min_lr
    progress = (step - warmup_steps) / max(1, max_steps - warmup_steps)
    return min_lr + 0.5 * (1.0 + math.cos(math.pi * progress)) * (lr - min_lr)
