"""Sampling from a GPT, and `femtogpt generate`."""

from __future__ import annotations

import numpy as np

from .graph import no_grad


def _check_sampling(max_new_tokens, temperature, top_k, top_p) -> None:
    if max_new_tokens < 0:
        raise ValueError(f"max_new_tokens must be >= 0, got {max_new_tokens}")
    if temperature < 0:
        raise ValueError(f"temperature must be >= 0 (0 is greedy), got {temperature}")
    if top_k is not None and top_k < 1:
        raise ValueError(f"top_k must be >= 1 (or None for no limit), got {top_k}")
    if top_p is not None and not 0.0 < top_p <= 1.0:
        raise ValueError(f"top_p must be in (0, 1], got {top_p}")


def sample_next(logits: np.ndarray, temperature: float, top_k, top_p, rng: np.random.Generator) -> np.ndarray:
    """logits (B, V) -> next token ids (B,): greedy at temperature 0, else top-k / top-p sampling."""
    if temperature == 0:
        return logits.argmax(axis=-1).astype(np.int64)
    z = logits.astype(np.float64) / temperature
    if top_k is not None and top_k < z.shape[-1]:
        kth = np.partition(z, -top_k, axis=-1)[:, -top_k][:, None]
        z = np.where(z < kth, -np.inf, z)
    p = np.exp(z - z.max(axis=-1, keepdims=True))
    p /= p.sum(axis=-1, keepdims=True)
    if top_p is not None and top_p < 1.0:
        order = np.argsort(-p, axis=-1, kind="stable")
        sorted_p = np.take_along_axis(p, order, axis=-1)
        keep_sorted = np.cumsum(sorted_p, axis=-1) - sorted_p < top_p  # keep until the mass reaches top_p
        keep = np.zeros_like(keep_sorted)
        np.put_along_axis(keep, order, keep_sorted, axis=-1)
        p = np.where(keep, p, 0.0)
        p /= p.sum(axis=-1, keepdims=True)
    u = rng.random((p.shape[0], 1))
    return np.minimum((np.cumsum(p, axis=-1) < u).sum(axis=-1), p.shape[-1] - 1).astype(np.int64)


@no_grad()
def generate(model, idx, max_new_tokens: int, temperature: float = 1.0, top_k=None, top_p=None, seed=None):
    _check_sampling(max_new_tokens, temperature, top_k, top_p)
    idx = np.asarray(idx, dtype=np.int64)
    if idx.ndim != 2 or idx.shape[1] == 0:
        raise ValueError(f"idx must be (batch, time) with at least one token, got shape {idx.shape}")
    was_training = model.training
    model.eval()
    rng = np.random.default_rng(seed)
    bs = model.config.block_size
    try:
        for _ in range(max_new_tokens):
            ctx = idx[:, -bs:]
            logits, _ = model(ctx)
            nxt = sample_next(logits.numpy()[:, -1, :], temperature, top_k, top_p, rng)
            idx = np.concatenate([idx, nxt[:, None]], axis=1)
    finally:
        model.train(was_training)
    return idx


def add_arguments(p) -> None:
    p.add_argument("--checkpoint", default="out", help="a run directory or a Hugging Face GPT-2 directory")
    p.add_argument("--prompt", default="\n")
    p.add_argument("--prompt-file")
    p.add_argument("--max-new-tokens", type=int, default=300)
    p.add_argument("--temperature", type=float, default=0.8)
    p.add_argument("--top-k", type=int, default=None)
    p.add_argument("--top-p", type=float, default=None)
    p.add_argument("--num-samples", type=int, default=1)
    p.add_argument("--seed", type=int, default=None)


def main_from_args(args) -> int:
    from .model import GPT
    from .tokenizer import load_tokenizer

    model = GPT.load(args.checkpoint)
    tok = load_tokenizer(args.checkpoint)
    if args.prompt_file:
        with open(args.prompt_file, encoding="utf-8") as f:
            prompts = [line.rstrip("\n") for line in f if line.strip()]
    else:
        prompts = [args.prompt]
    for prompt in prompts:
        ids = tok.encode(prompt)
        if len(ids) == 0:
            raise ValueError("the prompt encodes to no tokens; give at least one character")
        for i in range(args.num_samples):
            seed = None if args.seed is None else args.seed + i
            out = generate(model, ids[None, :], args.max_new_tokens, args.temperature, args.top_k, args.top_p, seed)
            print(tok.decode(out[0]))
            print("---")
    return 0
