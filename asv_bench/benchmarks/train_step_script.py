"""Run N training steps of a preset in this process and print JSON: tokens/s (median step), the GFLOP/s
of the model's products and the FMA peak beside it, and peak RSS.

Used by bench_train.py in a subprocess, so that FEMTOGPT_POOL and the process's
peak resident memory are measured cleanly.
"""

import json
import statistics
import sys
import time

import numpy as np

import femtogpt as fg
from femtogpt import GPT, AdamW, GPTConfig
from femtogpt.model import PRESETS

if __package__:  # imported by asv's discovery, as benchmarks.<this module>
    from ._util import peak_rss_bytes
else:  # run as a script: its directory is sys.path[0]
    from _util import peak_rss_bytes


def main(preset: str, threads: int, checkpoint_every: int, steps: int, block_size: int | None = None,
         batch: int | None = None, n_layer: int | None = None, n_embd: int | None = None, n_head=None,
         recompute_attention: bool = False, peak: bool = False) -> dict:
    fg.set_num_threads(threads)
    over = {"vocab_size": 76, "checkpoint_every": checkpoint_every, "recompute_attention": recompute_attention}
    for k, v in (("block_size", block_size), ("n_layer", n_layer), ("n_embd", n_embd), ("n_head", n_head)):
        if v:
            over[k] = v
    cfg = GPTConfig.from_preset(preset, **over)
    B = batch or PRESETS[preset]["batch_size"]  # noqa: N806
    model = GPT(cfg, seed=0)
    opt = AdamW(model.parameters(), lr=1e-3)
    rng = np.random.default_rng(0)
    x = rng.integers(0, 76, (B, cfg.block_size))
    y = rng.integers(0, 76, (B, cfg.block_size))
    params = sum(p.nbytes for p in model.parameters())
    times = []
    for i in range(steps + 2):
        if i == 2:
            fg.reset_peak_memory_stats()
        t0 = time.perf_counter()
        model(x, y)[1].backward()  # the logits go with the step, as in femtogpt.train.Trainer.train_step
        opt.step()
        opt.zero_grad()
        if i >= 2:
            times.append(time.perf_counter() - t0)
    stats = fg.memory_stats()
    step = statistics.median(times)
    out = {}
    # the arithmetic rate of the model's products and, when asked, this CPU's multiply-add peak measured
    # just after the steps on as many threads: their ratio is the step's efficiency (nanoGPT's MFU).
    # Builds before 36377bc have neither: the keys are then left out (asv over history, old installs).
    if hasattr(model, "flops_per_token"):
        out["flops_per_token"] = model.flops_per_token()
        out["gflops"] = out["flops_per_token"] * B * cfg.block_size / step / 1e9
    if peak and hasattr(fg, "fma_peak_gflops"):
        out["peak_gflops"] = fg.fma_peak_gflops(threads, 0.5)
    return {
        **out,
        "tokens_per_second": B * cfg.block_size / step,
        "step_seconds": step,
        # peak of the pool less parameters, AdamW moments (2x) and gradients (1x)
        "activation_bytes": stats["peak_bytes"] - 4 * params,
        "peak_rss_bytes": peak_rss_bytes(),
        "os_allocations": stats["os_allocations"],
    }


# What each memory feature changes in the config (overhead mode's "feature").
FEATURES = {"checkpoint": {"checkpoint_every": 1}, "recompute_attention": {"recompute_attention": True}}


def checkpoint_overhead(threads: int, steps: int, batch: int, feature: str = "checkpoint", **over) -> dict:
    """Step time with a memory feature (checkpoint_every=1, or recompute_attention) over without, from two
    models stepped alternately in one process, so that a noisy machine slows both alike; medians of
    `steps` steps after one warm-up."""
    fg.set_num_threads(threads)
    runs = []
    for on in (False, True):
        cfg = GPTConfig.from_preset("small", vocab_size=76, **(FEATURES[feature] if on else {}), **over)
        model = GPT(cfg, seed=0)
        runs.append((model, AdamW(model.parameters(), lr=1e-3), []))
    rng = np.random.default_rng(0)
    T = runs[0][0].config.block_size  # noqa: N806
    x, y = rng.integers(0, 76, (batch, T)), rng.integers(0, 76, (batch, T))
    for i in range(steps + 1):
        for model, opt, times in runs:
            t0 = time.perf_counter()
            model(x, y)[1].backward()
            opt.step()
            opt.zero_grad()
            if i:
                times.append(time.perf_counter() - t0)
    plain, ckpt = (statistics.median(r[2]) for r in runs)
    return {"plain_seconds": plain, "checkpointed_seconds": ckpt, "ratio": ckpt / plain}


if __name__ == "__main__":
    args = json.loads(sys.argv[1])
    mode = args.pop("mode", "train")
    print(json.dumps(main(**args) if mode == "train" else checkpoint_overhead(**args)))
