"""Generation speed: tokens per second with the KV cache, against the uncached path.

The models are GPTConfig.from_preset(name, vocab_size=76) ("femto": 4 layers, width 64,
block 64; "small": 6 layers, width 384, block 256) with their random initial weights;
batch 1 and 8, a prompt of 16 tokens, 256 new tokens, temperature 1 with top-k 40 and a
fixed seed. Tokens/s counts new tokens of all rows over the whole call (prefill included).

The reference, measured in the same run, is the uncached path (`cache=False`): a full
forward over the context for every token, as nanoGPT samples. It is timed over 32 new
tokens (256 would take minutes for "small"), which flatters it: its cost per token grows
with the context, up to block_size.

The window policy is the default (slide = block_size // 2): "femto" (block 64) slides 7
times in 256 tokens, "small" (block 256) once.

Run directly (`python bench_generate.py`) for a table of medians.
"""

import numpy as np

try:
    from femtogpt import GPT, GPTConfig
except ImportError:  # pragma: no cover
    GPT = GPTConfig = None

try:
    from ._util import median_seconds
except ImportError:  # run as a script
    from _util import median_seconds

PRESETS = ["femto", "small"]
BATCHES = [1, 8]
PROMPT, NEW, NEW_UNCACHED = 16, 256, 32

_models = {}


def _model(preset):
    if preset not in _models:
        _models[preset] = GPT(GPTConfig.from_preset(preset, vocab_size=76), seed=0).eval()
    return _models[preset]


def _prompt(batch):
    return np.random.default_rng(0).integers(0, 76, (batch, PROMPT))


def _run(preset, batch, new, cache):
    model, idx = _model(preset), _prompt(batch)
    return lambda: model.generate(idx, new, temperature=1.0, top_k=40, seed=1, cache=cache)


class Generate:
    params = (PRESETS, BATCHES)
    param_names = ["preset", "batch"]
    timeout = 600

    def setup(self, preset, batch):
        self.cached = _run(preset, batch, NEW, True)
        self.uncached = _run(preset, batch, NEW_UNCACHED, False)
        self.cached()  # warm the pool

    def time_cached(self, preset, batch):
        self.cached()

    def time_uncached(self, preset, batch):
        self.uncached()

    def track_tokens_per_second(self, preset, batch):
        return batch * NEW / median_seconds(self.cached, repeat=5)

    track_tokens_per_second.unit = "tokens/s"

    def track_uncached_tokens_per_second(self, preset, batch):
        return batch * NEW_UNCACHED / median_seconds(self.uncached, repeat=3)

    track_uncached_tokens_per_second.unit = "tokens/s"


if __name__ == "__main__":
    import os
    import sys

    sys.path.insert(0, os.path.dirname(__file__))
    print(f"{'preset':>6} {'batch':>5} {'cached tok/s':>13} {'uncached tok/s':>15}")
    for preset in PRESETS:
        for batch in BATCHES:
            b = Generate()
            b.setup(preset, batch)
            print(f"{preset:>6} {batch:>5} {b.track_tokens_per_second(preset, batch):13.0f} "
                  f"{b.track_uncached_tokens_per_second(preset, batch):15.1f}", flush=True)
