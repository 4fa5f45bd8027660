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
