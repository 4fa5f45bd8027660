import numpy as np
import pytest

import femtogpt as fg


@pytest.fixture
def rng():
    return np.random.default_rng(1234)


@pytest.fixture
def threads():
    """Restore the thread count after a test that changes it."""
    before = fg.get_num_threads()
    yield
    fg.set_num_threads(before)


@pytest.fixture
def isa():
    """Restore the kernel family after a test that forces one."""
    before = fg.cpu_isa()
    yield
    fg._core.set_cpu_isa(before)


@pytest.fixture(params=fg._core.available_isas())
def each_isa(request):
    """Runs the test once per kernel family this CPU has (generic, avx2, avx512), restoring the active one after."""
    before = fg._core.cpu_isa()
    fg._core.set_cpu_isa(request.param)
    yield request.param
    fg._core.set_cpu_isa(before)


@pytest.fixture
def restore_isa_and_threads():
    """Restore the kernel family and the thread count after a test that sets either."""
    isa, nt = fg._core.cpu_isa(), fg._core.get_num_threads()
    yield
    fg._core.set_cpu_isa(isa)
    fg._core.set_num_threads(nt)
