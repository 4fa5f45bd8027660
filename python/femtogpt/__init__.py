"""femtogpt: train and sample small GPT language models from scratch, fast, on the CPU.

The C++ core (``femtogpt._core``) holds the tensors, the memory pool and the
kernels; this package is the thin Python layer: the autodiff graph, the GPT
model, the optimizer, data, checkpoints, training and generation.
"""

from . import _core
from .graph import Tensor, empty, enable_grad, no_grad, ones, randn, tensor, zeros

__version__ = _core.__version__


def _apply_isa_from_env() -> None:
    import os

    name = os.environ.get("FEMTOGPT_ISA")
    if name:
        try:
            _core.set_cpu_isa(name)
        except ValueError as e:
            raise ValueError(f"FEMTOGPT_ISA={name}: {e}") from None


_apply_isa_from_env()

memory_stats = _core.memory_stats
reset_peak_memory_stats = _core.reset_peak_memory_stats
empty_cache = _core.empty_cache
set_num_threads = _core.set_num_threads
get_num_threads = _core.get_num_threads
cpu_isa = _core.cpu_isa
available_isas = _core.available_isas


def fma_peak_gflops(threads: int | None = None, seconds: float = 0.2) -> float:
    """This CPU's arithmetic peak in GFLOP/s for the active kernel family (``cpu_isa()``), measured:
    independent multiply-add chains held in registers on ``threads`` threads (default
    ``get_num_threads()``) for about ``seconds``. Set a training step's GFLOP/s
    (``GPT.flops_per_token() * tokens/s``) against it for the step's efficiency, nanoGPT's MFU.
    Noisy on a shared machine: measure it beside what it is compared with."""
    return _core.fma_peak_gflops(get_num_threads() if threads is None else threads, seconds)


def matmul(a: Tensor, b: Tensor, trans_a: bool = False, trans_b: bool = False, out: Tensor | None = None,
           alpha: float = 1.0, beta: float = 0.0) -> Tensor:
    """out = alpha * op(a) @ op(b) + beta * out, with op() transposing when asked (no copy).

    a (M, K) or (B, M, K) and b (K, N), (B, K, N) -> (M, N) or (B, M, N); with
    trans_a, a is stored (K, M) (or (B, K, M)); with trans_b, b is stored (N, K).
    Not differentiable: use ``a @ b`` or ``femtogpt.functional`` in models.
    """
    for name, t in (("a", a), ("b", b), ("out", out)):
        if t is not None and not isinstance(t, Tensor):
            raise TypeError(f"matmul: {name} must be a femtogpt.Tensor, got {type(t).__name__}")
    res = _core.matmul(a._impl, b._impl, trans_a, trans_b, None if out is None else out._impl, alpha, beta)
    return out if out is not None else Tensor(res)


from . import functional  # noqa: E402  (attaches the Tensor operators)
from .model import GPT, GPTConfig  # noqa: E402
from .optim import AdamW, clip_grad_norm_, cosine_lr  # noqa: E402

__all__ = [
    "GPT", "GPTConfig", "AdamW", "clip_grad_norm_", "cosine_lr", "Tensor", "tensor", "zeros", "ones", "empty", "randn", "no_grad", "enable_grad", "matmul", "functional",
    "memory_stats", "reset_peak_memory_stats", "empty_cache", "set_num_threads", "get_num_threads",
    "cpu_isa", "available_isas", "fma_peak_gflops",
]
