"""Running test code in a fresh interpreter: for crashes (a crash is a negative return code, not a
dead test run), and for measurements that need a clean process (resident memory, FEMTOGPT_POOL=0)."""

import os
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
