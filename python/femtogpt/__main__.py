"""`python -m femtogpt ...`: the same command as `femtogpt ...` (for environments whose scripts are not on PATH)."""

import sys

from .cli import main

if __name__ == "__main__":  # importing the module (pydoc, tools that import every module) runs nothing
    sys.exit(main())
