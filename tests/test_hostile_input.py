"""Inputs that once crashed the interpreter, hung, or gave silently wrong results (found by a
fuzzing review). Each must now be a clear Python exception, or work.

Where the old behaviour was a crash, the case runs in a subprocess, so that a regression fails
this test instead of ending the test run."""

import subprocess

import numpy as np
import pytest

from child_process import UNDER_ASAN, run_python
from femtogpt import _core


def T(x):
    return _core.from_numpy(np.ascontiguousarray(x))


def assert_clean(proc: subprocess.CompletedProcess, expect: str) -> None:
    assert proc.returncode == 0, f"return code {proc.returncode}\nstdout: {proc.stdout}\nstderr: {proc.stderr[-2000:]}"
    assert expect in proc.stdout, proc.stdout


# ----------------------------------------------------------------------------- shapes that wrap

def test_view_whose_element_count_wraps_is_refused():
    # 0x5555555555555556 * 3 wraps to 2 in 64 bits: the view was accepted, and reading it crashed
    x = T(np.ones(2, np.float32))
    with pytest.raises(ValueError, match="more elements than any tensor"):
        x.view([0x5555555555555556, 3])
    assert x.view([2, 1]).shape == (2, 1)  # an honest view still works


def test_narrow0_whose_end_wraps_is_refused():
    x = T(np.ones(3, np.float32))
    with pytest.raises(ValueError, match="out of range for leading dimension 3"):
        x.narrow0(1, 2**63 - 1)  # start + len wrapped, so the range check passed
    with pytest.raises(ValueError, match="out of range"):
        x.narrow0(4, 0)
    assert np.asarray(x.narrow0(1, 2)).tolist() == [1.0, 1.0]
    assert x.narrow0(3, 0).shape == (0,)


def test_concat_whose_length_wraps_is_memory_error():
    with pytest.raises(MemoryError):
        _core.concat([_core.zeros([0, 2**59])] * 4, 1)  # the dim's sum passed 2^60 (and wrapped, at 2^62)


def test_fused_attention_n_head_whose_multiple_wraps_is_refused():
    # 3 * n_head wrapped to 2: the divisibility check passed with D = 0
    with pytest.raises(ValueError, match="divisible by n_head"):
        _core.attention_qkv_forward(T(np.zeros((1, 2, 12), np.float32)), 0x5555555555555556, 1.0)


# ----------------------------------------------------------------------------- allocation and threads

@pytest.mark.skipif(UNDER_ASAN, reason="the child's address-space limit leaves no room for ASan's shadow "
                                       "memory ('Failed to mmap')")
def test_copy_of_a_broadcast_array_too_large_to_make_is_memory_error():
    # numpy's contiguous copy failed and returned null, which was dereferenced. Under a limit on
    # the address space the copy fails on any machine (without it, one that overcommits memory
    # would make the copy and be killed filling it).
    proc = run_python("""
        import resource
        import numpy as np, femtogpt as fg
        resource.setrlimit(resource.RLIMIT_AS, (8 * 2**30, resource.getrlimit(resource.RLIMIT_AS)[1]))
        try:
            fg.tensor(np.broadcast_to(np.float32(1), (2**36,)))  # a 256 GiB contiguous copy
        except MemoryError as e:
            print("MemoryError", e)
    """)
    assert_clean(proc, "MemoryError")
    assert "GiB" in proc.stdout, proc.stdout  # numpy's own message, which gives the size it wanted


@pytest.mark.parametrize("n", [0, -1, 1025, 100_000, 2**40, 2**70, -2**70, np.int64(2**40)])
def test_thread_counts_past_the_limit_are_value_errors(n):
    before = _core.get_num_threads()
    with pytest.raises(ValueError, match=f"between 1 and 1024, got {int(n)}$"):
        _core.set_num_threads(n)  # 100000 made libgomp fail to create threads, ending the process
    assert _core.get_num_threads() == before  # 2**70 gave pybind11's "incompatible function arguments"


def test_a_thread_count_too_long_to_print_says_its_size():
    with pytest.raises(ValueError, match="between 1 and 1024, got an integer of 16610 bits"):
        _core.set_num_threads(10**5000)  # str() of it raises (Python's int_max_str_digits)


@pytest.mark.parametrize("n", [2.0, True, "2", None])
def test_thread_count_that_is_not_an_integer_is_type_error(n):
    with pytest.raises(TypeError, match=f"n must be an integer, got {type(n).__name__}"):
        _core.set_num_threads(n)


def test_thread_count_takes_numpy_integers():
    before = _core.get_num_threads()
    try:
        _core.set_num_threads(np.int32(1))
        assert _core.get_num_threads() == 1
    finally:
        _core.set_num_threads(before)


def test_device_index_too_long_is_value_error():
    with pytest.raises(ValueError, match="unknown device"):
        _core.zeros([1], device="opencl:99999999999999")  # was std::stoi's out_of_range, an IndexError


# ----------------------------------------------------------------------------- empty work that hung

@pytest.mark.parametrize("impl", ["standard", "flash"])
def test_attention_over_no_queries_returns_at_once_whatever_b_times_h(impl):
    proc = run_python(f"""
        from femtogpt import _core
        q = _core.zeros([1, 2**40, 0, 4])  # no elements, but the standard path looped over 2^40 heads
        out, saved = _core.attention_forward(q, q, q, False, 1.0, "{impl}")
        dq, dk, dv = _core.attention_backward(out, q, q, q, out, saved, False, 1.0, "{impl}")
        qkv = _core.zeros([1, 0, 3 * 2**40])
        _core.attention_qkv_forward(qkv, 2**40, 1.0, "{impl}")
        if "{impl}" == "standard":  # queries, but no key and no feature: nothing to write (flash
            q = _core.zeros([2**20, 2**20, 3, 0])  # would save a log-sum-exp per query: MemoryError)
            k = _core.zeros([2**20, 2**20, 0, 0])
            _core.attention_forward(q, k, k, False, 1.0, "standard")
        print("done", out.shape, dq.shape)
    """, timeout=30)
    assert_clean(proc, "done")


# ----------------------------------------------------------------------------- aliasing

def test_matmul_out_sharing_memory_with_an_operand_is_refused():
    a_np = np.random.default_rng(0).random((8, 8)).astype(np.float32)
    a, b = T(a_np), T(a_np)
    for out in (a, b, a.view([64]).narrow0(0, 64).view([8, 8])):
        with pytest.raises(ValueError, match="out shares memory with a, b or bias"):
            _core.matmul(a, b, out=out)  # was accepted, and gave garbage: C is written while A is read
    bias = T(np.zeros(8, np.float32))
    with pytest.raises(ValueError, match="out shares memory"):
        _core.matmul(T(a_np[:1]), b, out=bias.view([1, 8]), bias=bias)
    with pytest.raises(ValueError, match="a_row_sums shares memory"):
        _core.matmul(a, b, trans_a=True, a_row_sums=a.view([64]).narrow0(0, 8))
    out = _core.matmul(a, b, out=T(np.zeros((8, 8), np.float32)))  # separate memory: fine
    np.testing.assert_allclose(np.asarray(out), a_np @ a_np, rtol=1e-5)


def test_optimizer_tensors_sharing_memory_are_refused():
    def fresh():
        return T(np.zeros(4, np.float32))

    p, g, m, v = fresh(), fresh(), fresh(), fresh()
    for kw in ({"grads": [m]}, {"grads": [v]}, {"grads": [p]}, {"exp_avg": [v]}):
        lists = {"params": [p], "grads": [g], "exp_avg": [m], "exp_avg_sq": [v], **kw}
        with pytest.raises(ValueError, match="share memory"):
            _core.adamw_step(lists["params"], lists["grads"], lists["exp_avg"], lists["exp_avg_sq"], 1e-3, 0.9,
                             0.95, 1e-8, [0.0], 1)
    g2 = T(np.zeros(8, np.float32))  # gradients are only read: two may share memory
    p2, m2, v2 = fresh(), fresh(), fresh()
    _core.adamw_step([p, p2], [g2.narrow0(0, 4), g2.narrow0(2, 4)], [m, m2], [v, v2], 1e-3, 0.9, 0.95, 1e-8,
                     [0.0, 0.0], 1)
    whole = T(np.ones(10, np.float32))
    with pytest.raises(ValueError, match="share memory"):  # overlapping views: scaled twice before
        _core.scale_all_([whole.narrow0(0, 6), whole.narrow0(4, 6)], 2.0)
    _core.scale_all_([whole.narrow0(0, 5), whole.narrow0(5, 5)], 2.0)  # adjacent views do not overlap
    assert np.asarray(whole).tolist() == [2.0] * 10


# ----------------------------------------------------------------------------- threads racing

def test_indices_written_by_another_thread_during_the_call_never_crash():
    """embedding_forward checked the ids, released the GIL, then read them again: a thread writing
    through a numpy view in between made it read out of bounds. Now the kernel reads the copy it
    checked; the call succeeds or raises IndexError."""
    proc = run_python("""
        import threading, time
        import numpy as np
        from femtogpt import _core
        idx = _core.from_numpy(np.zeros(2_000_000, np.int64)); view = np.asarray(idx)
        w = _core.from_numpy(np.ones((4, 1), np.float32))
        go = threading.Event()
        def flip():
            while True:
                go.wait(); go.clear(); time.sleep(0.0005); view[:1000] = 10**12
        threading.Thread(target=flip, daemon=True).start()
        for _ in range(40):
            view[:1000] = 0; go.set()
            for call in (lambda: _core.embedding_forward(idx, w),
                         lambda: _core.cross_entropy_forward(_core.zeros([2_000_000, 4]), idx)):
                try:
                    call()
                except IndexError:
                    pass
        print("survived")
    """, timeout=120)
    assert_clean(proc, "survived")


def test_inference_engine_shared_by_threads_serves_one_call_at_a_time():
    """Its methods release the GIL and share the engine's caches and scratch: three threads
    corrupted the heap (FEMTOGPT_POOL=0 made it crash every time). Each call now holds the engine."""
    proc = run_python("""
        import threading
        import numpy as np
        import femtogpt as fg
        from femtogpt import _core
        model = fg.GPT(fg.GPTConfig(vocab_size=11, block_size=64, n_layer=2, n_head=2, n_embd=32), seed=0)
        params = {n: p._impl for n, p in model.named_parameters()}
        engine = _core.InferenceEngine(params, 2, 2)
        errors = []
        def work(t):  # prompts of changing lengths, some past the block: the workspace grows and shrinks
            try:
                for i in range(150):
                    n = 1 + (i * 37 + t * 101) % 100
                    tokens = _core.from_numpy(np.ones((2, n), np.int64))
                    engine.prefill(tokens, _core.from_numpy(np.array([n, max(1, n // 2)])))
                    engine.generate(3, 0.0)
            except Exception as e:
                errors.append(e)
        threads = [threading.Thread(target=work, args=(t,)) for t in range(3)]
        [t.start() for t in threads]; [t.join() for t in threads]
        print("errors", errors)
    """, env={"FEMTOGPT_POOL": "0"}, timeout=120)
    assert_clean(proc, "errors []")


def test_core_tensor_cannot_be_made_by_new_without_a_tensor_inside():
    # pybind11's __new__ gave an object with no Tensor constructed in it: .shape read garbage and
    # np.asarray of it segfaulted
    with pytest.raises(TypeError, match="cannot be created directly"):
        _core.Tensor.__new__(_core.Tensor)
    assert np.asarray(_core.from_numpy(np.arange(3, dtype=np.float32))).tolist() == [0.0, 1.0, 2.0]


def test_inference_engine_cannot_be_made_by_new_without_an_engine_inside():
    # its __new__ gave an object with no engine constructed inside: .batch read garbage and
    # .lengths() aborted in pthread_mutex_lock; the engine is now made whole by __new__ itself
    with pytest.raises(TypeError, match="__new__"):
        _core.InferenceEngine.__new__(_core.InferenceEngine)


@pytest.mark.parametrize("cls", [_core.Tensor, _core.InferenceEngine])
def test_no_empty_object_through_the_base_class_or_a_subclass(cls):
    """pybind11_object.__new__(cls), by the base class, made the same empty object while only a
    Python-level __new__ was set (a reviewer's repro: np.asarray of it crashed, an engine's
    .lengths() hung); the C slot refuses it now. Subclasses, which could skip the factory, are
    refused too."""
    with pytest.raises(TypeError, match="is not safe"):
        cls.__mro__[1].__new__(cls)
    with pytest.raises(TypeError, match="not an acceptable base type"):
        type("Sub", (cls,), {})


def test_inference_engine_is_made_by_the_usual_call_with_keywords():
    import femtogpt as fg

    model = fg.GPT(fg.GPTConfig(vocab_size=11, block_size=16, n_layer=1, n_head=2, n_embd=16), seed=0)
    params = {n: p._impl for n, p in model.named_parameters()}
    engine = _core.InferenceEngine(params=params, n_head=2, batch=3, slide=2)
    assert (engine.batch, engine.slide, engine.block_size, engine.vocab_size) == (3, 2, 16, 11)
    with pytest.raises(TypeError, match="No constructor"):
        engine.__init__()  # pybind11's own, which refuses; the engine stays whole
    assert engine.batch == 3
