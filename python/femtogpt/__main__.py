"""`python -m femtogpt ...`: the same command as `femtogpt ...` (for environments whose scripts are not on PATH)."""

import sys

from .cli import main

sys.exit(main())
