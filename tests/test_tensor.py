"""Tensors: numpy conversion (zero-copy), constructors, attributes, bad input."""

import gc
import math
import subprocess
import sys

import numpy as np
import pytest

import femtogpt as fg


@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.int32, np.int64])
def test_round_trip_keeps_values_and_dtype(dtype, rng):
    a = (rng.standard_normal((3, 5, 7)) * 100).astype(dtype)
    t = fg.tensor(a)
    assert t.shape == (3, 5, 7)
    assert t.dtype == np.dtype(dtype)
    assert t.device == "cpu"
    assert t.nbytes == a.nbytes
    np.testing.assert_array_equal(t.numpy(), a)


def test_python_lists_become_float32_and_int64():
    assert fg.tensor([1.5, 2.0]).dtype == np.float32
    assert fg.tensor([[1, 2], [3, 4]]).dtype == np.int64
    assert fg.tensor(3.0).shape == ()


def test_numpy_view_is_zero_copy():
    t = fg.zeros(4, 3)
    view = t.numpy()
    view[2, 1] = 7.0
    assert t.numpy()[2, 1] == 7.0
    assert np.shares_memory(view, t.numpy())


def test_numpy_view_outlives_the_tensor_object():
    t = fg.tensor(np.arange(12, dtype=np.float32).reshape(3, 4))
    view = t.numpy()
    del t
    gc.collect()
    for _ in range(10):  # churn the pool: freed memory would be handed out again and overwritten
        junk = fg.zeros(3, 4)
        junk.numpy()[...] = -1
    np.testing.assert_array_equal(view, np.arange(12, dtype=np.float32).reshape(3, 4))


def test_non_contiguous_input_is_copied(rng):
    a = rng.standard_normal((6, 8)).astype(np.float32)[:, ::2].T
    assert not a.flags.c_contiguous
    np.testing.assert_array_equal(fg.tensor(a).numpy(), a)


@pytest.mark.parametrize("dtype", [np.float16, np.bool_, np.uint8, np.complex64])
def test_unsupported_dtypes_are_type_errors(dtype):
    with pytest.raises(TypeError, match="float32, float64, int32 or int64"):
        fg.tensor(np.zeros(3, dtype=dtype))


def test_constructors():
    assert fg.zeros(2, 3).numpy().sum() == 0
    assert fg.zeros((2, 3), dtype=np.float64).dtype == np.float64
    assert fg.empty(5).shape == (5,)
    a = fg.randn(4, 5, seed=3).numpy()
    b = fg.randn(4, 5, seed=3).numpy()
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, fg.randn(4, 5, seed=4).numpy())
    assert fg.zeros(0, 3).numel() == 0


def test_zero_sized_tensors():
    t = fg.tensor(np.zeros((0, 4), np.float32))
    assert t.shape == (0, 4) and t.numpy().shape == (0, 4)


def test_impossible_allocation_is_memory_error():
    with pytest.raises(MemoryError):
        fg.empty(1 << 40, 1 << 20)
    with pytest.raises(MemoryError):
        fg.empty(1 << 62)


def test_negative_dimension_is_value_error():
    with pytest.raises(ValueError, match="negative dimension"):
        fg.zeros(-1, 3)


def test_unknown_device():
    with pytest.raises(ValueError, match="unknown device 'gpu'"):
        fg.tensor([1.0], device="gpu")
    if not fg._core.opencl_compiled():
        with pytest.raises(ValueError, match="not available"):
            fg.tensor([1.0], device="opencl")


def test_threads(threads):
    fg.set_num_threads(1)
    assert fg.get_num_threads() == 1
    fg.set_num_threads(2)
    assert fg.get_num_threads() == 2
    with pytest.raises(ValueError):
        fg.set_num_threads(0)


def test_omp_num_threads_is_honoured():
    code = "import femtogpt as fg; print(fg.get_num_threads())"
    out = subprocess.run([sys.executable, "-c", code], env={**__import__("os").environ, "OMP_NUM_THREADS": "1"},
                         capture_output=True, text=True, check=True)
    if fg._core.openmp_enabled():
        assert out.stdout.strip() == "1"


def test_isa_names():
    assert fg.cpu_isa() in fg.available_isas()
    assert fg.available_isas()[0] == "generic"


def test_fma_peak_runs_on_every_isa_and_checks_its_arguments(each_isa, threads):
    """A rate for every kernel family and thread count (its value is the machine's: asv, not pytest,
    compares speeds), below what any core could do (a loop the compiler removed would read
    above it); bad arguments are ValueErrors naming the range, or TypeErrors for non-integers."""
    for n in (1, 2):
        rate = fg.fma_peak_gflops(n, seconds=0.01)
        assert math.isfinite(rate) and 0 < rate < 1000 * n  # 1,000 GFLOP/s a thread: 3x a 5 GHz AVX-512 core
    fg.set_num_threads(1)
    assert fg.fma_peak_gflops(seconds=0.01) > 0  # threads default to get_num_threads()
    assert fg.fma_peak_gflops(np.int32(1), 0.01) > 0
    for bad in (0, -1, 1025, 2**31, 2**40, -2**40):
        with pytest.raises(ValueError, match=f"threads must be between 1 and 1024, got {bad}"):
            fg.fma_peak_gflops(bad, 0.01)
    for bad in (True, 1.0, "2"):
        with pytest.raises(TypeError, match="threads must be an integer"):
            fg.fma_peak_gflops(bad, 0.01)
    for bad in (0.0, 1e-300, 9e-4, -1.0, 61.0, float("inf"), float("nan")):
        with pytest.raises(ValueError, match="seconds must be in \\[0.001, 60\\]"):
            fg.fma_peak_gflops(1, bad)


def test_unsupported_isa_env_is_a_clear_error():
    import os
    missing = [i for i in ("avx2", "avx512") if i not in fg.available_isas()]
    for name in missing + ["sse9"]:
        out = subprocess.run([sys.executable, "-c", "import femtogpt"], env={**os.environ, "FEMTOGPT_ISA": name},
                             capture_output=True, text=True)
        assert out.returncode != 0
        assert "ValueError" in out.stderr and "FEMTOGPT_ISA" in out.stderr


def test_forced_isa_env_is_used():
    import os
    for name in fg.available_isas():
        out = subprocess.run([sys.executable, "-c", "import femtogpt as fg; print(fg.cpu_isa())"],
                             env={**os.environ, "FEMTOGPT_ISA": name}, capture_output=True, text=True, check=True)
        assert out.stdout.strip() == name


def test_every_numpy_spelling_of_int64_is_accepted():
    for code in ("q", "l", "int64", "<i8"):
        a = np.arange(5).astype(code)
        t = fg.tensor(a)
        assert t.dtype == np.int64
        np.testing.assert_array_equal(fg.tensor(t.numpy()).numpy(), a)
    with pytest.raises(TypeError):
        fg.tensor(np.arange(3, dtype=">i8"))  # big-endian: not native
