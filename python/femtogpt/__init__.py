"""femtogpt: train and sample small GPT language models from scratch, fast, on the CPU."""

from . import _core

__version__ = _core.__version__
