"""The autodiff graph: Tensor, backward(), no_grad().

In the spirit of micrograd's engine: every differentiable op (functional.py)
computes its output with a forward kernel of the C++ core and attaches to it a
closure that maps the output's gradient to its inputs' gradients with the
matching backward kernel. ``backward()`` orders the graph topologically and
applies the closures in reverse, accumulating gradients where a tensor feeds
several ops. Each closure, and with it every activation it saved, is released
as soon as it has run, so memory returns to the pool during backward.

A Tensor wraps a ``_core.Tensor`` (its bytes, always contiguous) in ``_impl``.
An op's output that requires grad points at a ``Node`` (like torch's grad_fn):
the backward closure and the nodes of the op's inputs. Nodes never hold an
output's data; only a closure that needs a tensor for backward keeps it, so an
activation that no backward reads is freed as soon as Python drops it.
"""

from __future__ import annotations

import contextlib
import threading
import weakref

import numpy as np

from . import _core

class _GradMode(threading.local):
    grad_enabled = True  # per thread, as in torch


_state = _GradMode()


def is_grad_enabled() -> bool:
    return _state.grad_enabled


@contextlib.contextmanager
def no_grad():
    """Run ops without recording them for backward (like torch.no_grad)."""
    prev = is_grad_enabled()
    _state.grad_enabled = False
    try:
        yield
    finally:
        _state.grad_enabled = prev


@contextlib.contextmanager
def enable_grad():
    prev = is_grad_enabled()
    _state.grad_enabled = True
    try:
        yield
    finally:
        _state.grad_enabled = prev


def _freed_backward(_grad):
    raise RuntimeError(
        "trying to run backward through a part of the graph a second time: its saved "
        "activations were freed by the first backward() (compute the forward again)"
    )


class Node:
    """One recorded op: its backward closure and where its inputs' gradients go.

    ``inputs`` has one entry per op input: the input's Node when the input is
    itself an op's output, the input Tensor when it is a leaf that requires grad
    (its .grad receives the gradient), or None when no gradient flows there.
    """

    __slots__ = ("backward", "inputs", "retained")

    def __init__(self, backward, inputs: tuple):
        self.backward = backward  # grad of the output (_core.Tensor) -> tuple of input grads
        self.inputs = inputs
        self.retained = None  # weakref to the output Tensor after retain_grad()


def _edge(t):
    """Where the gradient of op input t goes (see Node.inputs)."""
    if t is None or not t.requires_grad:
        return None
    return t._node if t._node is not None else t


class Tensor:
    """An n-dimensional array on a device, optionally recording ops for backward.

    Attributes: ``requires_grad``; ``grad`` (a Tensor once backward has reached
    this tensor, for leaves); ``shape``, ``dtype`` (a numpy dtype), ``device``.
    """

    __slots__ = ("_impl", "requires_grad", "grad", "_node", "__weakref__")
    __array_priority__ = 1000  # numpy defers `array + tensor` to Tensor.__radd__

    def __init__(self, impl, requires_grad: bool = False):
        if not isinstance(impl, _core.Tensor):
            raise TypeError(f"Tensor wraps a _core.Tensor, got {type(impl).__name__}; use femtogpt.tensor(data)")
        self._impl = impl
        self.requires_grad = bool(requires_grad)
        if self.requires_grad and impl.dtype.kind != "f":
            raise TypeError(f"only floating point tensors can require gradients, got dtype {impl.dtype}")
        self.grad = None
        self._node = None  # the Node of the op that made this tensor, when recorded for backward

    # ---- properties -------------------------------------------------------
    @property
    def shape(self) -> tuple:
        return self._impl.shape

    @property
    def dtype(self) -> np.dtype:
        return self._impl.dtype

    @property
    def device(self) -> str:
        return self._impl.device

    @property
    def nbytes(self) -> int:
        return self._impl.nbytes

    @property
    def ndim(self) -> int:
        return self._impl.ndim

    @property
    def is_leaf(self) -> bool:
        return self._node is None

    def size(self, dim=None):
        return self.shape if dim is None else self.shape[dim]

    def numel(self) -> int:
        return self._impl.numel()

    def dim(self) -> int:
        return self._impl.ndim

    def __len__(self) -> int:
        if not self.shape:
            raise TypeError("len() of a 0-d tensor")
        return self.shape[0]

    # ---- conversion ---------------------------------------------------------
    def numpy(self) -> np.ndarray:
        """A zero-copy numpy view of a CPU tensor; it keeps the memory alive."""
        if self.device != "cpu":
            raise ValueError(f"numpy() needs a cpu tensor, this one is on {self.device}; use .to('cpu') first")
        return np.asarray(self._impl)

    def __array__(self, dtype=None, copy=None):
        arr = self.numpy()
        if dtype is not None and np.dtype(dtype) != arr.dtype:
            return arr.astype(dtype)
        return arr.copy() if copy else arr

    def item(self):
        if self.numel() != 1:
            raise ValueError(f"item() needs a tensor with one element, got shape {self.shape}")
        return self.to("cpu").numpy().reshape(()).item() if self.device != "cpu" else self.numpy().reshape(()).item()

    def tolist(self):
        return self.numpy().tolist()

    def to(self, device: str) -> "Tensor":
        if device == self.device:
            return self
        return Tensor(self._impl.to(device), requires_grad=self.requires_grad)

    def detach(self) -> "Tensor":
        """The same memory, cut from the graph."""
        return Tensor(self._impl)

    def clone(self) -> "Tensor":
        return Tensor(self._impl.clone())

    def requires_grad_(self, flag: bool = True) -> "Tensor":
        if flag and self.dtype.kind != "f":
            raise TypeError(f"only floating point tensors can require gradients, got dtype {self.dtype}")
        self.requires_grad = bool(flag)
        return self

    def retain_grad(self) -> None:
        """Keep .grad on this non-leaf tensor after backward."""
        if self._node is not None:
            self._node.retained = weakref.ref(self)

    def zero_grad(self) -> None:
        self.grad = None

    def __repr__(self) -> str:
        grad = ", requires_grad=True" if self.requires_grad else ""
        if self.device == "cpu" and self.numel() <= 64:
            body = np.array2string(self.numpy(), separator=", ", prefix="tensor(")
            return f"tensor({body}, dtype={self.dtype}{grad})"
        return f"tensor(shape={self.shape}, dtype={self.dtype}, device='{self.device}'{grad})"

    # ---- autodiff -----------------------------------------------------------
    def backward(self, gradient=None) -> None:
        """Accumulate d(self)/d(leaf) into every leaf's ``.grad``."""
        if not self.requires_grad:
            raise RuntimeError("backward() on a tensor that does not require grad (no input required grad, "
                               "or it was computed under no_grad())")
        if gradient is None:
            if self.numel() != 1:
                raise RuntimeError(f"backward() of a non-scalar tensor of shape {self.shape} needs a gradient "
                                   "argument of the same shape")
            seed = _core.zeros(list(self.shape), self.dtype, self.device)
            _core.fill_(seed, 1.0)
        else:
            g = gradient if isinstance(gradient, Tensor) else tensor(np.asarray(gradient, dtype=self.dtype))
            if g.shape != self.shape:
                raise ValueError(f"gradient has shape {g.shape}, expected {self.shape}")
            if g.dtype != self.dtype or g.device != self.device:
                raise TypeError(f"gradient has dtype {g.dtype} on {g.device}, expected {self.dtype} on "
                                f"{self.device} like the tensor of shape {self.shape} that backward() is called on")
            seed = g._impl
        run_backward(self, seed)


def _topological_order(root: Node) -> list:
    """The nodes reachable from root, every node after all nodes it feeds (root last)."""
    order, seen = [], set()
    stack = [(root, False)]
    while stack:
        node, expanded = stack.pop()
        if expanded:
            order.append(node)
            continue
        if id(node) in seen:
            continue
        seen.add(id(node))
        stack.append((node, True))
        for e in node.inputs:
            if type(e) is Node and id(e) not in seen:
                stack.append((e, False))
    return order


def _accumulate(existing, g):
    return g if existing is None else _core.add(existing, g)


def _accumulate_leaf(leaf: Tensor, g, given: set) -> None:
    """Add g into leaf.grad. `given`: the storages of the gradients this backward already stored
    as some leaf's .grad; an op may hand one gradient to several inputs (x + y), or a view of it
    (x + y.view(...)), and two leaves must not share memory in a .grad that later code (clipping,
    the optimizer) changes in place."""
    if leaf.grad is not None:
        leaf.grad = Tensor(_core.add(leaf.grad._impl, g))
        return
    if g.storage_id in given:
        g = g.clone()
    given.add(g.storage_id)
    leaf.grad = Tensor(g)


def run_backward(root: Tensor, seed) -> None:
    if root._node is None:  # backward of a leaf: its gradient is the seed
        _accumulate_leaf(root, seed, set())
        return
    _backward_from(root._node, [seed])


def _backward_from(root: Node, seed_box: list) -> None:
    """Backward from root's gradient, which is taken out of seed_box: from here on only the graph
    holds it, so it is freed as soon as the last node that reads it has run."""
    given = set()
    order = _topological_order(root)
    grads = {id(root): seed_box.pop()}
    # Pop nodes off the order (outputs first) so that, once a node has run, nothing
    # here refers to it any more and what its closure saved can be freed.
    while order:
        node = order.pop()
        g = grads.pop(id(node), None)
        if g is None:
            continue
        if node.retained is not None:
            out = node.retained()
            if out is not None:
                _accumulate_leaf(out, g, given)
        fn, inputs = node.backward, node.inputs
        node.backward, node.inputs = _freed_backward, ()
        try:
            if getattr(fn, "takes_gradient_box", False):
                # it hands the gradient on (a checkpoint's inner backward) and may drop it
                # early: only the box holds it, not this frame
                box = [g]
                del g
                input_grads = fn(box)
            else:
                input_grads = fn(g)
        except BaseException:  # keep the node as it was, so that the real error is not masked later
            node.backward, node.inputs = fn, inputs
            raise
        del fn, node
        g = None
        for e, ig in zip(inputs, input_grads):
            if e is None or ig is None:
                continue
            if type(e) is Node:
                grads[id(e)] = _accumulate(grads.get(id(e)), ig)
            else:  # a leaf
                _accumulate_leaf(e, ig, given)
        # Not held into the next node's backward: a gradient just summed into another is garbage
        input_grads = inputs = e = ig = box = None


def make_result(impl, inputs: tuple, backward) -> Tensor:
    """Wrap an op's output; record a Node for it if any input requires grad.

    On the hot path of every op: it fills the slots directly instead of going
    through Tensor.__init__'s checks (impl comes from the core, so it is valid).
    `backward` should capture only what the op's backward reads (never the
    input Tensors themselves when their data is not needed).
    """
    out = _new_tensor(Tensor)
    out._impl = impl
    out.grad = None
    if _state.grad_enabled:
        for t in inputs:
            if t is not None and t.requires_grad:
                node = _new_node(Node)  # Node(backward, edges) without the call overhead
                node.backward = backward
                if len(inputs) == 2:  # most ops: spelled out, it is twice as fast as the comprehension
                    a, b = inputs
                    node.inputs = (None if a is None or not a.requires_grad else (a._node or a),
                                   None if b is None or not b.requires_grad else (b._node or b))
                else:
                    node.inputs = tuple([None if u is None or not u.requires_grad else (u._node or u)
                                         for u in inputs])
                node.retained = None
                out._node = node
                out.requires_grad = True
                return out
    out._node = None
    out.requires_grad = False
    return out


_new_tensor = _new_node = object.__new__


# ---- constructors ---------------------------------------------------------------

_ACCEPTED = (np.float32, np.float64, np.int32, np.int64)


def tensor(data, dtype=None, device: str = "cpu", requires_grad: bool = False) -> Tensor:
    """Copy ``data`` (a numpy array, nested lists or a number) into a new Tensor.

    numpy arrays keep their dtype (float32, float64, int32, int64; others are a
    TypeError); Python floats become float32 and ints int64.
    """
    if isinstance(data, Tensor):
        data = data.numpy()
    if isinstance(data, (np.ndarray, np.generic)):
        arr = np.asarray(data)
    else:
        arr = np.asarray(data)
        if arr.dtype.kind == "f":
            arr = arr.astype(np.float32)
        elif arr.dtype.kind in "iu" and arr.dtype != np.int32:
            arr = arr.astype(np.int64)
    if dtype is not None:
        arr = arr.astype(np.dtype(dtype), copy=False)
    if arr.dtype not in _ACCEPTED:
        raise TypeError(f"unsupported dtype {arr.dtype}: expected float32, float64, int32 or int64 "
                        "(convert with .astype first)")
    return Tensor(_core.from_numpy(arr, device), requires_grad=requires_grad)


def _shape_list(shape) -> list:
    """A shape given as sizes or as one tuple/list of them, as a list of ints: TypeError for a size
    that is not an integer (int() would make 2.7 a 2)."""
    if len(shape) == 1 and isinstance(shape[0], (tuple, list)):
        shape = shape[0]
    for s in shape:
        if isinstance(s, bool) or not isinstance(s, (int, np.integer)):
            raise TypeError(f"sizes must be integers, got {s!r} in {tuple(shape)}")
    return [int(s) for s in shape]


def zeros(*shape, dtype=np.float32, device: str = "cpu", requires_grad: bool = False) -> Tensor:
    return Tensor(_core.zeros(_shape_list(shape), np.dtype(dtype), device), requires_grad)


def empty(*shape, dtype=np.float32, device: str = "cpu") -> Tensor:
    return Tensor(_core.empty(_shape_list(shape), np.dtype(dtype), device))


def ones(*shape, dtype=np.float32, device: str = "cpu", requires_grad: bool = False) -> Tensor:
    t = _core.empty(_shape_list(shape), np.dtype(dtype), device)
    _core.fill_(t, 1.0)
    return Tensor(t, requires_grad)


def randn(*shape, seed=None, std: float = 1.0, dtype=np.float32, device: str = "cpu",
          requires_grad: bool = False) -> Tensor:
    """Normal(0, std) samples from a numpy Generator seeded with ``seed``."""
    rng = np.random.default_rng(seed)
    arr = (rng.standard_normal(_shape_list(shape)) * std).astype(dtype)
    return tensor(arr, device=device, requires_grad=requires_grad)


# ---- gradient checkpointing ------------------------------------------------------------------


def checkpoint(fn, x: Tensor, modules=(), recompute=None) -> Tensor:
    """Run fn(x) without keeping its activations; recompute them during backward.

    The graph keeps only x. In backward, fn runs again on a detached copy of x
    with the graph on, and its own backward then accumulates into the
    parameters' .grad and yields x's gradient, exactly (bitwise) as without
    checkpointing. `modules`: the Dropout-like modules inside fn, whose call
    counters are rewound for the recomputation so that it draws the same masks.
    `recompute`: what runs in backward instead of fn, when something cheaper
    builds the same graph (e.g. one that skips ops whose output no backward
    reads, like the last projection of a block); it must run the same modules.
    """
    recompute = fn if recompute is None else recompute
    if not is_grad_enabled():
        return fn(x)
    counters_before = [m.calls for m in modules]
    with no_grad():
        out = fn(x)
    counters_after = [m.calls for m in modules]

    def backward(grad_box):
        for m, c in zip(modules, counters_before):
            m.calls = c
        inner_x = Tensor(x._impl, requires_grad=True)
        with enable_grad():
            inner_out = recompute(inner_x)
        for m, c in zip(modules, counters_after):
            m.calls = c
        inner_root = inner_out._node
        if inner_root is None:  # fn returned a leaf (x itself, say): its gradient is the incoming one
            if inner_out.requires_grad:
                _accumulate_leaf(inner_out, grad_box.pop(), set())
        else:
            del inner_out  # the graph is all backward needs, not the recomputed output
            _backward_from(inner_root, grad_box)  # the incoming gradient is freed once read
        return (None if inner_x.grad is None else inner_x.grad._impl,)

    backward.takes_gradient_box = True

    result = Tensor(out._impl)
    result.requires_grad = True
    result._node = Node(backward, (_edge(x),))
    return result
