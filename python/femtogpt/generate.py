"""Sampling from a GPT with a KV cache, and `femtogpt generate`.

``generate(model, idx, max_new_tokens, ...)`` and ``stream(...)`` run the model through
``_core.InferenceEngine``: the prompt is processed once (prefill), then every new token
costs one position's work, and drawing it (temperature, top-k, top-p, a seeded
counter-based generator) happens in the same C++ call. ``generate`` is one call into the
core for all its tokens; ``stream`` is one call per token.

Prompts: ``idx`` is a (B, T0) array (or femtogpt Tensor) of token ids, a single 1-D
prompt, or a list of 1-D prompts of different lengths; each row keeps its own length and
positions (no padding is ever attended to), so a batch gives exactly what each prompt
gives alone (with the same per-row seed: pass ``seed`` as a list).

Window policy: when a row's context holds ``block_size`` tokens, the oldest ``slide`` are
dropped and the cache is recomputed for the rest (learned absolute position embeddings
change every cached key and value when positions shift). ``slide=1`` reproduces
nanoGPT's ``idx[:, -block_size:]`` crop exactly, at the cost of a full forward per token
once the window is full; the default, ``block_size // 2``, recomputes once every
``block_size // 2`` tokens (as llama.cpp's context shift drops half the context), so a
context is between half and all of ``block_size`` tokens long.

``cache=False`` runs the uncached path instead: a full forward over each row's context
for every token (the reference; it follows the same window policy and draws with the
same generator, so it produces the same tokens).
"""

from __future__ import annotations

import numbers
import os
import sys

import numpy as np

from . import _core
from .graph import Tensor, no_grad


# ---- arguments ----------------------------------------------------------------------

def _check_sampling(max_new_tokens, temperature, top_k, top_p) -> tuple[int, float, int, float]:
    """Validate the sampling arguments; returns them as the core takes them (top_k 0 and top_p 1 mean off)."""
    if isinstance(max_new_tokens, bool) or not isinstance(max_new_tokens, numbers.Integral):
        raise TypeError(f"max_new_tokens must be an integer, got {max_new_tokens!r}")
    if not 0 <= max_new_tokens < 2**63:
        raise ValueError(f"max_new_tokens must be >= 0 and fit in 64 bits, got {max_new_tokens}")
    if isinstance(temperature, bool) or not isinstance(temperature, numbers.Real):
        raise TypeError(f"temperature must be a number, got {temperature!r}")
    if not np.isfinite(temperature) or temperature < 0:
        raise ValueError(f"temperature must be a finite number >= 0 (0 is greedy), got {temperature}")
    if top_k is not None:
        if isinstance(top_k, bool) or not isinstance(top_k, numbers.Integral):
            raise TypeError(f"top_k must be an integer or None, got {top_k!r}")
        if top_k < 1:
            raise ValueError(f"top_k must be >= 1 (or None for no limit), got {top_k}")
    if top_p is not None:
        if isinstance(top_p, bool) or not isinstance(top_p, numbers.Real):
            raise TypeError(f"top_p must be a number or None, got {top_p!r}")
        if not 0.0 < top_p <= 1.0:
            raise ValueError(f"top_p must be in (0, 1] (or None for no nucleus), got {top_p}")
    # a top_k past any vocabulary is no limit: capped so that the core's integer takes it
    return int(max_new_tokens), float(temperature), 0 if top_k is None else min(int(top_k), 2**31 - 1), \
        1.0 if top_p is None else float(top_p)


def _prompts(idx, vocab_size: int) -> tuple[list[np.ndarray], str]:
    """idx -> (list of 1-D int64 prompts, form): form is "2d" (a (B, T) array), "1d" (one
    prompt) or "list" (prompts of any lengths)."""
    if isinstance(idx, Tensor):
        idx = idx.numpy()
    if isinstance(idx, (list, tuple)) and len(idx) and not all(isinstance(x, numbers.Integral) for x in idx):
        rows, form = [np.asarray(x) for x in idx], "list"
    else:
        arr = np.asarray(idx)
        if arr.ndim == 1:
            rows, form = [arr], "1d"
        elif arr.ndim == 2:
            rows, form = list(arr), "2d"
        else:
            raise ValueError(f"idx must be (batch, time) token ids, one 1-D prompt or a list of prompts; "
                             f"got shape {arr.shape}")
        if arr.size == 0 and arr.ndim == 2 and arr.shape[0] == 0:
            raise ValueError(f"idx has no prompts (shape {arr.shape})")
    out = []
    for i, r in enumerate(rows):
        if r.ndim != 1:
            raise ValueError(f"prompt {i} must be a 1-D sequence of token ids, got shape {r.shape}")
        if r.size == 0:
            raise ValueError(f"prompt {i} is empty: every prompt needs at least one token")
        if r.dtype.kind not in "iu":
            raise TypeError(f"prompt {i} must hold integer token ids, got dtype {r.dtype}")
        if r.min() < 0 or r.max() >= vocab_size:
            bad = r[(r < 0) | (r >= vocab_size)][0]
            raise ValueError(f"prompt {i} holds token id {int(bad)} outside the vocabulary [0, {vocab_size})")
        out.append(np.ascontiguousarray(r, dtype=np.int64))
    if not out:
        raise ValueError("idx has no prompts")
    return out, form


def _rng_state(seed, batch: int) -> np.ndarray:
    """(B,) int64 generator states: an int seed gives row b the b-th state of that seed; a
    sequence of B seeds gives row b the first state of seed[b] (what that prompt gets alone)."""
    if seed is None:
        seed = int(np.random.SeedSequence().entropy % (1 << 63))
    if isinstance(seed, (list, tuple, np.ndarray)):
        seeds = list(seed)
        if len(seeds) != batch:
            raise ValueError(f"seed has {len(seeds)} entries for {batch} prompts; give one per prompt (or one int)")
        for s in seeds:
            if isinstance(s, bool) or not isinstance(s, numbers.Integral):
                raise TypeError(f"seeds must be integers, got {s!r}")
        return np.array([np.asarray(_core.rng_state(int(s), 1)).view(np.int64)[0] for s in seeds], dtype=np.int64)
    if isinstance(seed, bool) or not isinstance(seed, numbers.Integral):
        raise TypeError(f"seed must be an integer, a list of integers or None, got {seed!r}")
    # .view: the core's int64 buffers read back as numpy's 'q', which from_numpy does not take
    return np.asarray(_core.rng_state(int(seed), batch)).view(np.int64).copy()


def _default_slide(block_size: int, slide) -> int:
    if slide is None:
        return max(1, block_size // 2)
    if isinstance(slide, bool) or not isinstance(slide, numbers.Integral) or not 1 <= slide <= block_size:
        raise ValueError(f"slide must be an integer in [1, block_size={block_size}], got {slide!r}")
    return int(slide)


def _engine_ok(model) -> bool:
    return all(p.dtype == np.float32 and p.device == "cpu" for p in model.parameters())


def _make_engine(model, batch: int, slide: int):
    params = {name: p._impl for name, p in model.named_parameters()}
    return _core.InferenceEngine(params, model.config.n_head, batch, slide, model.h[0].ln_1.eps)


def _prefill(engine, prompts: list[np.ndarray]) -> None:
    lengths = np.array([len(p) for p in prompts], dtype=np.int64)
    tokens = np.zeros((len(prompts), int(lengths.max())), dtype=np.int64)
    for b, p in enumerate(prompts):
        tokens[b, :len(p)] = p
    engine.prefill(_core.from_numpy(tokens), _core.from_numpy(lengths))


def _assemble(prompts, new: np.ndarray, form: str):
    if form == "2d":
        return np.concatenate([np.stack(prompts), new], axis=1)
    rows = [np.concatenate([p, new[b]]) for b, p in enumerate(prompts)]
    return rows[0] if form == "1d" else rows


# ---- the uncached reference path ----------------------------------------------------

def _uncached_tokens(model, prompts, n, temperature, top_k, top_p, state, slide):
    """Yields (B,) tokens: a full forward over each row's context per token, same window policy."""
    bs = model.config.block_size
    ctx = [list(p[-bs:]) for p in prompts]
    was_training = model.training
    model.eval()
    try:
        for _ in range(n):
            logits = np.empty((len(ctx), model.config.vocab_size), dtype=np.float32)
            with no_grad():
                if len({len(c) for c in ctx}) == 1:
                    logits[:] = model(np.array(ctx))[0].numpy()[:, -1]
                else:
                    for b, c in enumerate(ctx):
                        logits[b] = model(np.array([c]))[0].numpy()[0, -1]
            tok = np.asarray(_core.sample_tokens(_core.from_numpy(logits), temperature, top_k, top_p, state))
            for b, c in enumerate(ctx):
                if len(c) == bs:
                    del c[:slide]
                c.append(int(tok[b]))
            yield tok.copy()
    finally:
        model.train(was_training)


# ---- public API ---------------------------------------------------------------------

def _setup(model, idx, max_new_tokens, temperature, top_k, top_p, seed, slide):
    n, temperature, top_k, top_p = _check_sampling(max_new_tokens, temperature, top_k, top_p)
    prompts, form = _prompts(idx, model.config.vocab_size)
    slide = _default_slide(model.config.block_size, slide)
    state = _core.from_numpy(_rng_state(seed, len(prompts)))
    return n, temperature, top_k, top_p, prompts, form, slide, state


def generate(model, idx, max_new_tokens: int, temperature: float = 1.0, top_k: int | None = None,
             top_p: float | None = None, seed=None, *, slide: int | None = None, cache: bool = True):
    """Continue each prompt by max_new_tokens sampled tokens.

    idx: (B, T0) token ids -> (B, T0 + max_new_tokens) int64; one 1-D prompt -> 1-D; a list
    of prompts of any lengths -> a list of 1-D arrays. temperature 0 is greedy argmax; top_k
    keeps the k most likely tokens; top_p keeps the smallest set whose probability reaches
    top_p; seed (an int, one int per prompt, or None for a fresh one) makes it reproducible.
    """
    n, temperature, top_k, top_p, prompts, form, slide, state = _setup(
        model, idx, max_new_tokens, temperature, top_k, top_p, seed, slide)
    if n == 0:
        return _assemble(prompts, np.zeros((len(prompts), 0), dtype=np.int64), form)
    if cache and _engine_ok(model):
        engine = _make_engine(model, len(prompts), slide)
        _prefill(engine, prompts)
        new = np.asarray(engine.generate(n, temperature, top_k, top_p, state))
    else:
        steps = list(_uncached_tokens(model, prompts, n, temperature, top_k, top_p, state, slide))
        new = np.stack(steps, axis=1)
    return _assemble(prompts, new, form)


def stream(model, idx, max_new_tokens: int, temperature: float = 1.0, top_k: int | None = None,
           top_p: float | None = None, seed=None, *, slide: int | None = None, cache: bool = True):
    """Like generate, but yields the new tokens as they are produced: per step a (B,) int64
    array, or an int when idx is a single 1-D prompt. The same arguments give the same tokens."""
    n, temperature, top_k, top_p, prompts, form, slide, state = _setup(
        model, idx, max_new_tokens, temperature, top_k, top_p, seed, slide)
    return _stream(model, prompts, form, n, temperature, top_k, top_p, state, slide, cache)


def _stream(model, prompts, form, n, temperature, top_k, top_p, state, slide, cache):
    if n == 0:
        return
    if cache and _engine_ok(model):
        engine = _make_engine(model, len(prompts), slide)
        _prefill(engine, prompts)
        steps = (np.asarray(engine.generate(1, temperature, top_k, top_p, state))[:, 0] for _ in range(n))
    else:
        steps = _uncached_tokens(model, prompts, n, temperature, top_k, top_p, state, slide)
    for tok in steps:
        yield int(tok[0]) if form == "1d" else tok


# ---- the command --------------------------------------------------------------------

def add_arguments(p) -> None:
    p.add_argument("--checkpoint", default="out",
                   help="a run directory or a Hugging Face GPT-2 directory (default out/)")
    p.add_argument("--prompt", default="\n", help="the text to continue (default: a newline)")
    p.add_argument("--prompt-file", help="continue each non-empty line of this file instead of --prompt")
    p.add_argument("--max-new-tokens", type=int, default=300, help="tokens to generate a sample (default 300)")
    p.add_argument("--temperature", type=float, default=0.8, help="0 is greedy (default 0.8)")
    p.add_argument("--top-k", type=int, default=None, help="sample from the k likeliest tokens only (default: all)")
    p.add_argument("--top-p", type=float, default=None,
                   help="sample from the likeliest tokens whose probabilities sum to p (default: all)")
    p.add_argument("--num-samples", type=int, default=1, help="samples per prompt (seed, seed+1, ...; default 1)")
    p.add_argument("--seed", type=int, default=None, help="makes the samples reproducible (default: a fresh one)")
    p.add_argument("--slide", type=int, default=None,
                   help="tokens dropped when the context fills the block (default block_size/2; 1 = exact crop)")


class _TextStream:
    """Writes decoded text as tokens arrive; holds back an incomplete UTF-8 character."""

    def __init__(self, tok, out):
        self.tok, self.out, self.ids, self.shown = tok, out, [], 0

    def add(self, token: int) -> None:
        self.ids.append(token)
        text = self.tok.decode(np.asarray(self.ids, dtype=np.int64))
        if text.endswith("\ufffd"):
            return
        self.out.write(text[self.shown:])
        self.out.flush()
        self.shown = len(text)

    def finish(self) -> None:
        text = self.tok.decode(np.asarray(self.ids, dtype=np.int64)) if self.ids else ""
        self.out.write(text[self.shown:])
        self.out.flush()


def _read_prompts(args) -> list[str]:
    if args.prompt_file:
        if not os.path.exists(args.prompt_file):
            raise FileNotFoundError(f"prompt file {args.prompt_file} does not exist")
        if not os.path.isfile(args.prompt_file):
            kind = "a directory" if os.path.isdir(args.prompt_file) else "not a regular file"
            raise ValueError(f"prompt file {args.prompt_file} is {kind}; expected a UTF-8 text file")
        try:
            with open(args.prompt_file, encoding="utf-8") as f:
                prompts = [line.rstrip("\n") for line in f if line.strip()]
        except UnicodeDecodeError as e:
            raise ValueError(f"prompt file {args.prompt_file} is not UTF-8 text: byte 0x{e.object[e.start]:02x} "
                             f"is invalid ({e.reason})") from None
        if not prompts:
            raise ValueError(f"prompt file {args.prompt_file} has no non-empty lines")
        return prompts
    return [args.prompt]


def main_from_args(args) -> int:
    from .model import GPT
    from .tokenizer import load_tokenizer

    if args.num_samples < 1:
        raise ValueError(f"--num-samples must be >= 1, got {args.num_samples}")
    _check_sampling(args.max_new_tokens, args.temperature, args.top_k, args.top_p)
    model = GPT.load(args.checkpoint)
    tok = load_tokenizer(args.checkpoint)
    if tok.vocab_size > model.config.vocab_size:
        raise ValueError(f"the checkpoint's tokenizer has {tok.vocab_size} tokens but its model a vocabulary of "
                         f"{model.config.vocab_size}: tokenizer and model do not match")
    try:
        _default_slide(model.config.block_size, args.slide)  # before any output
    except ValueError as e:
        raise ValueError(f"--slide: {e}") from None
    encoded = []
    for prompt in _read_prompts(args):
        ids = tok.encode(prompt)
        if len(ids) == 0:
            raise ValueError("the prompt is empty: give at least one character (--prompt)")
        if ids.max() >= model.config.vocab_size:
            raise ValueError(f"the tokenizer's id {int(ids.max())} is outside the model's vocabulary of "
                             f"{model.config.vocab_size}: tokenizer and checkpoint do not match")
        encoded.append((prompt, ids))
    out = sys.stdout
    for prompt, ids in encoded:
        for i in range(args.num_samples):
            seed = None if args.seed is None else args.seed + i
            out.write(prompt)
            shown = _TextStream(tok, out)
            for t in stream(model, ids, args.max_new_tokens, args.temperature, args.top_k, args.top_p, seed,
                            slide=args.slide):
                shown.add(t)
            shown.finish()
            out.write("\n---\n")
            out.flush()
    return 0
