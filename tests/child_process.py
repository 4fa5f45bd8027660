"""Running test code in a fresh interpreter: for crashes (a crash is a negative return code, not a
dead test run), and for measurements that need a clean process (resident memory, FEMTOGPT_POOL=0)."""

import contextlib
import os
import signal
import subprocess
import sys
import textwrap

# Running under AddressSanitizer (the README's sanitizer recipe preloads its runtime): a few tests
# measure what ASan changes (resident memory with its quarantine, address-space limits that leave
# no room for its shadow memory) and skip there.
UNDER_ASAN = "libasan" in os.environ.get("LD_PRELOAD", "")


def run_python(code: str, timeout: float = 60, env: dict | None = None) -> subprocess.CompletedProcess:
    """Runs code (dedented) in a fresh interpreter with this process's sys.path, and env added."""
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True,
                          timeout=timeout, env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path), **(env or {})})


@contextlib.contextmanager
def deadline(seconds: int):
    """TimeoutError inside the block once it has run ``seconds``: for a test whose failure mode is
    a hang (a read of a FIFO, a loop without end), so that it fails instead of stalling the run.
    SIGALRM, so the main thread only, as pytest runs tests."""
    def on_alarm(signum, frame):
        raise TimeoutError(f"still running after {seconds} s")

    previous = signal.signal(signal.SIGALRM, on_alarm)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)
