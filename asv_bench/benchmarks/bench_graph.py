"""The cost of the Python graph itself: time per differentiable op call on trivial tensors,
where the kernels cost next to nothing and bookkeeping is all. Target: <= 5 microseconds per op.
The raw _core call (no graph) is timed in the same file as the floor."""

import numpy as np

import femtogpt as fg
import femtogpt.functional as F

N_OPS = 100


class GraphOverhead:
    def setup(self):
        self.a = fg.tensor(np.ones(4, np.float32), requires_grad=True)
        self.b = fg.tensor(np.ones(4, np.float32), requires_grad=True)

    def time_forward_100_adds(self):
        x = self.a
        for _ in range(N_OPS):
            x = F.add(x, self.b)

    def time_forward_backward_100_adds(self):
        x = self.a
        for _ in range(N_OPS):
            x = F.add(x, self.b)
        x.sum().backward()

    def time_forward_100_adds_no_grad(self):
        with fg.no_grad():
            x = self.a
            for _ in range(N_OPS):
                x = F.add(x, self.b)

    def time_raw_core_100_adds(self):
        x, b = self.a._impl, self.b._impl
        for _ in range(N_OPS):
            x = fg._core.add(x, b)
