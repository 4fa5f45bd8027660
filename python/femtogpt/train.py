"""Training: the loop, its checkpoints (with exact resume), and `femtogpt train`.

A run directory holds model.safetensors + config.json + the tokenizer (a
loadable model), and training_state.safetensors + train_config.json +
history.json (what resuming needs: AdamW moments, step, the data sampler's RNG
state, the dropout counters). Every file is written atomically.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import numbers
import os
import sys
import time
from pathlib import Path

import numpy as np

from . import checkpoint
from .graph import no_grad
from .model import GPT, PRESETS, GPTConfig
from .optim import AdamW, clip_grad_norm_, cosine_lr


# TrainConfig's annotations -> the values they take (numpy's scalars too)
_FIELD_TYPES = {"int": numbers.Integral, "float": numbers.Real, "str": str, "bool": (bool, np.bool_)}


@dataclasses.dataclass
class TrainConfig:
    data: str | None = None  # None: the bundled Shakespeare corpus
    preset: str = "femto"
    steps: int = 2000
    batch_size: int | None = None  # None: the preset's
    block_size: int | None = None
    lr: float = 1e-3
    min_lr: float = 1e-4
    warmup_steps: int = 100
    weight_decay: float = 0.1
    grad_clip: float = 1.0
    grad_accum: int = 1
    dropout: float = 0.0
    attention: str = "flash"
    checkpoint_every: int = 0  # gradient checkpointing: segments of k blocks (0: off)
    recompute_attention: bool = False  # blocks recompute their attention output in backward
    memory_report: bool = False
    tokenizer: str = "char"
    vocab_size: int | None = None  # bpe only
    eval_every: int = 250
    eval_iters: int = 20
    out: str = "out"
    seed: int = 0
    threads: int | None = None
    plot: bool = False
    sample_tokens: int = 200
    progress: bool = True

    def validate(self) -> None:
        for f in dataclasses.fields(self):  # the types first: train_config.json may hold anything
            value = getattr(self, f.name)
            kind, _, optional = f.type.partition(" | ")  # "int | None" -> "int", "None"
            if value is None and optional:
                continue
            if not isinstance(value, _FIELD_TYPES[kind]) or kind in ("int", "float") and isinstance(value, bool):
                raise TypeError(f"--{f.name.replace('_', '-')} must be {'an' if kind == 'int' else 'a'} {kind}"
                                f"{' or None' if optional else ''}, got {value!r}")
        for name in ("lr", "min_lr", "weight_decay", "grad_clip", "dropout"):
            if not math.isfinite(getattr(self, name)):  # nan passes every comparison below
                raise ValueError(f"--{name.replace('_', '-')} must be a finite number, got {getattr(self, name)}")
        if self.seed < 0:
            raise ValueError(f"--seed must be >= 0, got {self.seed}")
        if self.preset not in PRESETS:
            raise ValueError(f"unknown preset {self.preset!r}; choose from {sorted(PRESETS)}")
        for name in ("steps", "grad_accum", "eval_every", "eval_iters"):
            if getattr(self, name) < 1:
                raise ValueError(f"--{name.replace('_', '-')} must be >= 1, got {getattr(self, name)}")
        for name in ("batch_size", "block_size", "threads"):
            v = getattr(self, name)
            if v is not None and v < 1:
                raise ValueError(f"--{name.replace('_', '-')} must be >= 1, got {v}")
        if self.lr <= 0 or self.min_lr < 0 or self.min_lr > self.lr:
            raise ValueError(f"need 0 <= --min-lr <= --lr and --lr > 0, got lr={self.lr}, min_lr={self.min_lr}")
        if self.warmup_steps < 0 or self.weight_decay < 0 or self.grad_clip < 0:
            raise ValueError("--warmup-steps, --weight-decay and --grad-clip must be >= 0")
        if self.checkpoint_every < 0:
            raise ValueError(f"--checkpoint-every must be >= 0, got {self.checkpoint_every}")
        if self.sample_tokens < 0:
            raise ValueError(f"--sample-tokens must be >= 0 (0: no samples), got {self.sample_tokens}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"--dropout must be in [0, 1), got {self.dropout}")
        if self.attention not in ("flash", "standard"):
            raise ValueError(f"--attention must be flash or standard, got {self.attention!r}")
        if self.tokenizer not in ("char", "byte", "bpe"):
            raise ValueError(f"--tokenizer must be char, byte or bpe, got {self.tokenizer!r}")
        if self.vocab_size is not None:
            from .tokenizer import check_bpe_vocab_size

            if self.tokenizer != "bpe":
                vocab = "256 bytes" if self.tokenizer == "byte" else "set by the corpus"
                raise ValueError(f"--vocab-size applies only to --tokenizer bpe; the {self.tokenizer} "
                                 f"tokenizer's vocabulary is {vocab}")
            try:
                check_bpe_vocab_size(self.vocab_size)
            except (TypeError, ValueError) as e:
                raise type(e)(f"--vocab-size: {e}") from None


class Trainer:
    """Owns the model, optimizer and data of one run; `run()` trains to cfg.steps."""

    def __init__(self, cfg: TrainConfig, resume_state: dict | None = None, model: GPT | None = None,
                 tokenizer=None):
        from . import data as data_mod
        from . import tokenizer as tok_mod

        cfg.validate()
        self.cfg = cfg
        preset = PRESETS[cfg.preset]
        self.batch_size = cfg.batch_size or preset["batch_size"]
        if cfg.data:  # train_config.json keeps it absolute: --resume works from any directory
            cfg.data = os.path.abspath(cfg.data)
        path = cfg.data or data_mod.bundled_corpus_path()
        # load_tokens reads the file twice and needs a regular file: say so before the tokenizer reads
        # it once (a FIFO would be drained, /dev/zero never ends)
        data_mod._check_data_file(Path(path), regular=True)
        if tokenizer is None:
            # the corpus piece by piece, never whole (the byte tokenizer does not read it)
            tokenizer = tok_mod.make_tokenizer(cfg.tokenizer, data_mod.iter_text(path), vocab_size=cfg.vocab_size)
        self.tokenizer = tokenizer
        if model is not None and tokenizer.vocab_size > model.config.vocab_size:
            raise ValueError(f"the tokenizer has {tokenizer.vocab_size} tokens but the model's vocabulary only "
                             f"{model.config.vocab_size}: they do not belong together")
        ids = data_mod.load_tokens(path, tokenizer)
        block_size = model.config.block_size if model is not None else cfg.block_size or preset["block_size"]
        # the data must hold a block (TokenDataset says so) before a model is made for that block
        self.dataset = data_mod.TokenDataset(ids, block_size, self.batch_size, val_fraction=0.1, seed=cfg.seed)
        if model is None:
            model = GPT(GPTConfig.from_preset(cfg.preset, vocab_size=tokenizer.vocab_size, block_size=block_size,
                                              dropout=cfg.dropout, attention=cfg.attention,
                                              checkpoint_every=cfg.checkpoint_every,
                                              recompute_attention=cfg.recompute_attention), seed=cfg.seed)
        self.model = model
        # a model given (a resumed run's) decides what its config says: train_config.json agrees with it
        cfg.checkpoint_every = model.config.checkpoint_every
        cfg.recompute_attention = model.config.recompute_attention
        self.opt = AdamW(model.parameters(), lr=cfg.lr, betas=(0.9, 0.95), eps=1e-8, weight_decay=cfg.weight_decay)
        self.step = 0
        self.history = {"train": [], "val": []}  # [step, loss] pairs
        if resume_state is not None:
            self._load_state(resume_state)

    # ---- one step --------------------------------------------------------------------
    def train_step(self) -> float:
        """Forward, backward (with gradient accumulation), clip, AdamW; returns the mean loss."""
        cfg, model = self.cfg, self.model
        model.train()
        lr = cosine_lr(self.step, cfg.lr, cfg.min_lr, cfg.warmup_steps, cfg.steps)
        self.opt.lr = lr
        total = 0.0
        for _ in range(cfg.grad_accum):
            x, y = self.dataset.get_batch("train")
            loss = model(x, y)[1]  # the logits are not kept through backward
            if cfg.grad_accum > 1:
                loss = loss * (1.0 / cfg.grad_accum)
            loss.backward()
            total += loss.item()
        if cfg.grad_clip > 0:
            clip_grad_norm_(model.parameters(), cfg.grad_clip)
        self.opt.step()
        self.opt.zero_grad()
        self.step += 1
        return total

    @no_grad()
    def evaluate(self) -> float:
        """Mean loss over eval_iters validation batches."""
        self.model.eval()
        losses = []
        for _ in range(self.cfg.eval_iters):
            x, y = self.dataset.get_batch("val")
            _, loss = self.model(x, y)
            losses.append(loss.item())
        self.model.train()
        return float(np.mean(losses))

    def run(self, on_eval=None, stop_at: int | None = None) -> dict:
        """Train to cfg.steps (or stop early at step `stop_at`, the schedule unchanged)."""
        cfg = self.cfg
        end = cfg.steps if stop_at is None else min(stop_at, cfg.steps)
        if cfg.out:  # a run directory that cannot be made fails now, not when the first save comes
            _make_run_directory(cfg.out)
        bar = _progress(cfg.steps, self.step, cfg.progress)
        tokens_per_step = self.batch_size * self.model.config.block_size * cfg.grad_accum
        t0, tokens = time.perf_counter(), 0
        start_step = self.step
        loss = float("nan")
        try:
            while self.step < end:
                if cfg.memory_report and self.step == start_step + 1:
                    fg_stats_reset()
                loss = self.train_step()
                tokens += tokens_per_step
                if cfg.memory_report and self.step == start_step + 2:
                    report = self.memory_report()
                    (bar.write if bar is not None else print)(format_memory_report(report))
                self.history["train"].append([self.step, loss])
                if self.step % cfg.eval_every == 0 or self.step == end:
                    val = self.evaluate()
                    self.history["val"].append([self.step, val])
                    if on_eval:
                        on_eval(self.step, loss, val)
                    if cfg.out:
                        self.save(cfg.out)
                if bar is not None:
                    rate = tokens / max(time.perf_counter() - t0, 1e-9)
                    val = self.history["val"][-1][1] if self.history["val"] else float("nan")
                    bar.set_postfix(loss=f"{loss:.3f}", val=f"{val:.3f}", tok_s=f"{rate:,.0f}", refresh=False)
                    bar.update(1)
        finally:
            if bar is not None:
                bar.close()
        elapsed = time.perf_counter() - t0
        return {"train_loss": loss, "val_loss": self.history["val"][-1][1] if self.history["val"] else None,
                "tokens_per_second": tokens / max(elapsed, 1e-9), "steps": self.step}

    def memory_report(self) -> dict:
        """Bytes of parameters, AdamW state and activations (peak of the last step less the
        persistent tensors and gradients), with the pool's figures."""
        import femtogpt as fg

        stats = fg.memory_stats()
        params = sum(p.nbytes for p in self.model.parameters())
        optim = 2 * params
        grads = params
        return {
            "parameters": params,
            "optimizer_state": optim,
            "gradients": grads,
            "activations_peak": max(0, stats["peak_bytes"] - params - optim - grads),
            "pool_current": stats["current_bytes"],
            "pool_peak": stats["peak_bytes"],
            "pool_reserved": stats["reserved_bytes"],
            "os_allocations": stats["os_allocations"],
            "pool_hits": stats["pool_hits"],
            "process_peak_rss": process_peak_rss(),
        }

    # ---- checkpoints --------------------------------------------------------------
    def _dropout_counters(self) -> dict:
        from .nn import Dropout

        return {str(i): m.calls for i, m in enumerate(self.model.modules()) if isinstance(m, Dropout)}

    def save(self, out: str) -> None:
        """Write the run directory: every file in full, then all renamed into place together
        (checkpoint.staged_writes), the training state last. A save that fails or is killed
        while it writes leaves the previous checkpoint whole, weights and state of one step."""
        os.makedirs(out, exist_ok=True)
        for name in _RUN_FILES:  # what a killed save left
            checkpoint.remove_stale_temporaries(os.path.join(out, name))
        with checkpoint.staged_writes():
            self.model.save(out, tokenizer=self.tokenizer)
            checkpoint.save_json(os.path.join(out, "train_config.json"), dataclasses.asdict(self.cfg))
            checkpoint.save_json(os.path.join(out, "history.json"), self.history)
            meta = {
                "step": str(self.step),
                "data": json.dumps(self.dataset.state_dict()),
                "dropout_calls": json.dumps(self._dropout_counters()),
            }
            state = self.opt.state_dict(copy=False)  # views: written at once, no second copy of the moments
            checkpoint.save_safetensors(os.path.join(out, "training_state.safetensors"), state, meta)

    def _load_state(self, state: dict) -> None:
        from . import data as data_mod
        from .nn import Dropout

        tensors, meta = state["tensors"], state["meta"]
        try:
            step = int(meta["step"])
            if step < 0:
                raise ValueError(f"step {step} is negative")
            calls = json.loads(meta["dropout_calls"])
            if not isinstance(calls, dict):
                raise ValueError(f"dropout_calls is a {type(calls).__name__}, not an object")
            dropouts = [(m, int(calls.get(str(i), 0))) for i, m in enumerate(self.model.modules())
                        if isinstance(m, Dropout)]
            self.opt.load_state_dict(tensors)
            self.dataset.load_state_dict(json.loads(meta["data"]))
        except data_mod.DatasetMismatch as e:  # the state file is fine: the data is not the run's
            raise ValueError(f"the data ({self.cfg.data or 'the bundled corpus'}) is not what this run was saved "
                             f"with ({e.differences}): has the file changed?") from None
        except (KeyError, ValueError, TypeError, RecursionError) as e:
            raise checkpoint.CheckpointError(f"training_state.safetensors is incomplete or corrupt: {e}") from e
        self.step = step
        for m, c in dropouts:
            m.calls = c
        history = state.get("history", self.history)
        # entries past the saved step (a directory mixed by a save interrupted before staged saves) are dropped
        self.history = {split: [e for e in history[split] if e[0] <= step] for split in ("train", "val")}

    @classmethod
    def resume(cls, run_dir: str, **overrides) -> "Trainer":
        """Continue the run in run_dir; overrides (e.g. steps=4000) replace its saved TrainConfig values."""
        from . import tokenizer as tok_mod

        checkpoint.check_directory(run_dir, "--resume: run directory")
        path = os.path.join(run_dir, "train_config.json")
        saved = checkpoint.load_json_object(path)
        fields = {f.name for f in dataclasses.fields(TrainConfig)}
        cfg = TrainConfig(**{k: v for k, v in saved.items() if k in fields})
        try:
            cfg.validate()
        except (TypeError, ValueError) as e:
            raise checkpoint.CheckpointError(f"{path}: {e}") from None
        for k, v in overrides.items():
            setattr(cfg, k, v)
        # the memory options may change on resume (results are bitwise the same); the rest is the run's
        model = GPT.load(run_dir, **{k: v for k, v in overrides.items()
                                     if k in ("checkpoint_every", "recompute_attention")})
        tokenizer = tok_mod.load_tokenizer(run_dir)
        tensors, meta = checkpoint.load_safetensors(os.path.join(run_dir, "training_state.safetensors"))
        history = _check_history(checkpoint.load_json_object(os.path.join(run_dir, "history.json")),
                                 os.path.join(run_dir, "history.json"))
        return cls(cfg, resume_state={"tensors": tensors, "meta": meta, "history": history}, model=model,
                   tokenizer=tokenizer)


_RUN_FILES = ("model.safetensors", "config.json", "tokenizer.json", "train_config.json", "history.json",
              "training_state.safetensors")


def _make_run_directory(out: str) -> None:
    """Create the run directory ``out`` (and its parents), or ValueError saying why it cannot be one."""
    if os.path.exists(out) and not os.path.isdir(out):
        raise ValueError(f"--out {out!r} exists and is not a directory: give a run directory")
    try:
        os.makedirs(out, exist_ok=True)
    except OSError as e:
        raise ValueError(f"--out {out!r}: cannot create the run directory: {e.strerror or e}") from None


def _check_history(history: dict, path: str) -> dict:
    """history.json's {"train": [[step, loss], ...], "val": [...]}, or CheckpointError naming the file."""
    for split in ("train", "val"):
        entries = history.get(split)
        if not isinstance(entries, list) or not all(
                isinstance(e, list) and len(e) == 2 and isinstance(e[0], int) and not isinstance(e[0], bool)
                and isinstance(e[1], (int, float)) and not isinstance(e[1], bool) for e in entries):
            raise checkpoint.CheckpointError(f"{path}: {split!r} must be a list of [step, loss] pairs")
    return history


def fg_stats_reset() -> None:
    import femtogpt as fg

    fg.reset_peak_memory_stats()


def process_peak_rss() -> int | None:
    """The process's peak resident memory in bytes so far (None where the OS does not say).

    On Linux, VmHWM from /proc/self/status: the peak of this program alone. getrusage's
    ru_maxrss is the fallback (macOS, BSD), but Linux carries it across exec: a process started
    from a larger one reports the parent's peak until it exceeds it."""
    try:
        with open("/proc/self/status", encoding="ascii", errors="replace") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024  # kB
    except (OSError, ValueError, IndexError):
        pass
    try:
        import resource
    except ImportError:  # not on Windows
        return None
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak if sys.platform == "darwin" else peak * 1024  # bytes on macOS, KiB on Linux


def format_memory_report(r: dict) -> str:
    mib = 1024 * 1024
    rss = r.get("process_peak_rss")
    return ("memory: parameters {:.1f} MiB, optimizer state {:.1f} MiB, gradients {:.1f} MiB, activations (peak) "
            "{:.1f} MiB; pool current {:.1f} MiB, peak {:.1f} MiB, reserved {:.1f} MiB; {} OS allocations, {} pool hits"
            "{}").format(r["parameters"] / mib, r["optimizer_state"] / mib, r["gradients"] / mib,
                         r["activations_peak"] / mib, r["pool_current"] / mib, r["pool_peak"] / mib,
                         r["pool_reserved"] / mib, r["os_allocations"], r["pool_hits"],
                         "" if rss is None else "; process peak RSS {:.1f} MiB".format(rss / mib))


def _progress(total: int, initial: int, enabled: bool):
    if not enabled:
        return None
    from tqdm import tqdm

    return tqdm(total=total, initial=initial, unit="step", dynamic_ncols=True)


def write_plot(history: dict, path: str) -> None:
    try:
        import matplotlib
    except ImportError:
        raise ImportError("--plot needs matplotlib: pip install 'femtogpt[plot]' (or pip install matplotlib)") \
            from None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    if history["train"]:
        s, v = zip(*history["train"])
        ax.plot(s, v, label="train", alpha=0.6)
    if history["val"]:
        s, v = zip(*history["val"])
        ax.plot(s, v, "o-", label="validation")
    ax.set_xlabel("step")
    ax.set_ylabel("cross-entropy loss")
    ax.legend()
    ax.grid(alpha=0.3)
    fig.tight_layout()
    tmp = path + ".tmp.png"
    fig.savefig(tmp, dpi=100)
    plt.close(fig)
    os.replace(tmp, path)


# ---- the command -------------------------------------------------------------------------


def add_arguments(p) -> None:
    from .tokenizer import DEFAULT_BPE_VOCAB_SIZE

    d = TrainConfig()

    def per_preset(key: str) -> str:  # "femto 32, small 16"
        return ", ".join(f"{name} {shape[key]}" for name, shape in PRESETS.items())

    p.add_argument("--data", help="a UTF-8 text file (default: the bundled Shakespeare corpus)")
    p.add_argument("--preset", default=None, help=f"model shape: {', '.join(PRESETS)} (default {d.preset})")
    p.add_argument("--steps", type=int, default=None, help=f"optimizer steps in all (default {d.steps})")
    p.add_argument("--batch-size", type=int, help=f"sequences a step (default the preset's: {per_preset('batch_size')})")
    p.add_argument("--block-size", type=int,
                   help=f"context length in tokens (default the preset's: {per_preset('block_size')})")
    p.add_argument("--lr", type=float, default=None, help=f"peak learning rate, after warmup (default {d.lr:g})")
    p.add_argument("--min-lr", type=float, default=None,
                   help=f"learning rate at the end of the cosine decay (default {d.min_lr:g})")
    p.add_argument("--warmup-steps", type=int, default=None,
                   help=f"steps of linear warmup (default {d.warmup_steps})")
    p.add_argument("--weight-decay", type=float, default=None,
                   help=f"AdamW's decoupled weight decay, on 2-D weights only (default {d.weight_decay:g})")
    p.add_argument("--grad-clip", type=float, default=None,
                   help=f"global gradient norm to clip to; 0 turns clipping off (default {d.grad_clip:g})")
    p.add_argument("--grad-accum", type=int, default=None,
                   help=f"batches whose gradients are averaged into each step (default {d.grad_accum})")
    p.add_argument("--dropout", type=float, default=None, help=f"dropout probability (default {d.dropout:g})")
    p.add_argument("--attention", default=None, help=f"flash or standard (default {d.attention})")
    p.add_argument("--checkpoint-every", type=int, default=None,
                   help="gradient checkpointing: keep only every k-th block's input, recompute the rest "
                        f"(0: off; default {d.checkpoint_every}, or the resumed run's)")
    p.add_argument("--recompute-attention", action=argparse.BooleanOptionalAction, default=None,
                   help="blocks keep neither their attention output nor the residual after it; backward "
                        "recomputes both (with flash attention about a sixth less activation memory, for a "
                        "few %% of step time; default off, or the resumed run's)")
    p.add_argument("--memory-report", action="store_true",
                   help="print parameter, optimizer, activation and pool memory after the first steps")
    p.add_argument("--tokenizer", default=None, help=f"char, byte or bpe (default {d.tokenizer})")
    p.add_argument("--vocab-size", type=int,
                   help=f"BPE vocabulary size (bpe only; default {DEFAULT_BPE_VOCAB_SIZE})")
    p.add_argument("--eval-every", type=int, default=None,
                   help=f"steps between validation losses (default {d.eval_every})")
    p.add_argument("--eval-iters", type=int, default=None,
                   help=f"batches averaged into each validation loss (default {d.eval_iters})")
    p.add_argument("--out", default=None,
                   help="run directory for checkpoints (default out/; with --resume, the resumed directory)")
    p.add_argument("--resume", metavar="DIR",
                   help="continue the run saved in DIR with its own settings: --steps, --out, --eval-every, "
                        "--eval-iters, --sample-tokens, --checkpoint-every, --recompute-attention, --plot, "
                        "--memory-report and --threads may be given; the model, optimizer and data flags may not")
    p.add_argument("--seed", type=int, default=None,
                   help=f"seed of the weights, the batches and dropout (default {d.seed})")
    p.add_argument("--threads", type=int, help="threads (default: OMP_NUM_THREADS, else every CPU OpenMP sees)")
    p.add_argument("--plot", action="store_true", help="write loss.png into the run directory")
    p.add_argument("--sample-tokens", type=int, default=None,
                   help=f"tokens to sample before and after training (0: none; default {d.sample_tokens})")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")


# The flags that make a run what it is: a resumed run keeps its own (train_config.json), and --resume
# refuses them rather than ignore them.
_RUN_FLAGS = ("data", "preset", "batch_size", "block_size", "lr", "min_lr", "warmup_steps", "weight_decay", "grad_clip",
              "grad_accum", "dropout", "attention", "tokenizer", "vocab_size", "seed")
# The flags a resumed run takes (besides --out, --threads, --plot, --memory-report): how long to train,
# what backward keeps (not what it computes), how often and how long to evaluate, the samples. None
# changes the training losses.
_RESUME_FLAGS = ("steps", "checkpoint_every", "recompute_attention", "eval_every", "eval_iters", "sample_tokens")


def _sample(trainer: Trainer, n: int, seed: int) -> str:
    tok = trainer.tokenizer
    try:
        prompt = tok.encode("\n")
    except ValueError:
        prompt = np.zeros(1, np.int64)
    if len(prompt) == 0:
        prompt = np.zeros(1, np.int64)
    out = trainer.model.generate(prompt[None, :], n, temperature=0.8, top_k=40, seed=seed)
    return tok.decode(out[0])


def main_from_args(args) -> int:
    import femtogpt as fg

    if args.threads is not None:
        fg.set_num_threads(args.threads)
    if args.resume:
        fixed = [f"--{name.replace('_', '-')}" for name in _RUN_FLAGS if getattr(args, name) is not None]
        if fixed:
            raise ValueError(f"--resume continues the run with the settings it was saved with; "
                             f"{', '.join(fixed)} cannot change it (train a new run with --out for that)")
        overrides = {name: getattr(args, name) for name in _RESUME_FLAGS if getattr(args, name) is not None}
        overrides["out"] = args.resume if args.out is None else args.out
        overrides["progress"] = not args.no_progress
        for name in ("plot", "memory_report"):
            if getattr(args, name):
                overrides[name] = True
        trainer = Trainer.resume(args.resume, **overrides)
        if trainer.step >= trainer.cfg.steps:
            raise ValueError(f"--resume: the run in {args.resume} is at step {trainer.step} already, and --steps "
                             f"is {trainer.cfg.steps}: nothing to train (give a larger --steps)")
        print(f"resuming {args.resume} at step {trainer.step} of {trainer.cfg.steps}")
    else:
        given = {name: getattr(args, name) for name in (*_RUN_FLAGS, *_RESUME_FLAGS)
                 if getattr(args, name) is not None}  # the rest: TrainConfig's defaults
        cfg = TrainConfig(**given, memory_report=args.memory_report,
                          out=TrainConfig.out if args.out is None else args.out, threads=args.threads,
                          plot=args.plot, progress=not args.no_progress)
        trainer = Trainer(cfg)
    cfg = trainer.cfg
    if cfg.plot:  # before training (a resumed run may have --plot from its first start)
        try:
            import matplotlib  # noqa: F401
        except ImportError:
            raise ImportError("--plot needs matplotlib: pip install 'femtogpt[plot]' (or pip install matplotlib)") \
                from None
    m = trainer.model
    print(f"model: {cfg.preset} preset, {m.num_parameters():,} parameters, block {m.config.block_size}, "
          f"{m.config.n_layer} layers, {m.config.n_head} heads, width {m.config.n_embd}, "
          f"{cfg.attention} attention; batch {trainer.batch_size}; {fg.get_num_threads()} threads, "
          f"{fg.cpu_isa()} kernels")
    if cfg.sample_tokens:
        print("--- sample before training ---")
        print(_sample(trainer, cfg.sample_tokens, cfg.seed))
        # the generation engine leaves its packed weights (the model's size) cached for the next
        # engine: not to be held through training (small preset: 41 MiB of the run's peak)
        fg.empty_cache()
    result = trainer.run()
    print(f"step {result['steps']}: train loss {result['train_loss']:.4f}, val loss {result['val_loss']:.4f}, "
          f"{result['tokens_per_second']:,.0f} tokens/s "
          f"({result['tokens_per_second'] * m.flops_per_token() / 1e9:,.1f} GFLOP/s in the model's products)")
    if cfg.sample_tokens:
        print("--- sample after training ---")
        print(_sample(trainer, cfg.sample_tokens, cfg.seed))
    if cfg.plot:
        path = os.path.join(cfg.out, "loss.png")
        write_plot(trainer.history, path)
        print(f"loss plot: {path}")
    print(f"checkpoint: {cfg.out}/" if cfg.out else "no checkpoint written (--out is empty)")
    return 0
