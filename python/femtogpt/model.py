"""GPTConfig and GPT: the GPT-2 architecture, in the shape of nanoGPT's model.py."""

from __future__ import annotations

import dataclasses
import numbers
import operator
import os

import numpy as np

from . import functional as F
from .graph import Tensor, checkpoint, no_grad, tensor
from .nn import Block, Dropout, Embedding, LayerNorm, Module

ATTENTION_IMPLS = ("flash", "standard")
DEVICES = ("cpu",)

# Preset model shapes (and the batch size they train with), by name.
PRESETS = {
    "femto": dict(block_size=64, n_layer=4, n_head=4, n_embd=64, batch_size=32),
    "small": dict(block_size=256, n_layer=6, n_head=6, n_embd=384, batch_size=16),
}

# Weights stored (in, out) in GPT-2 checkpoints (its Conv1D), (out, in) in our Linear.
_HF_TRANSPOSED = ("attn.c_attn.weight", "attn.c_proj.weight", "mlp.c_fc.weight", "mlp.c_proj.weight")


@dataclasses.dataclass
class GPTConfig:
    vocab_size: int = 76
    block_size: int = 64
    n_layer: int = 4
    n_head: int = 4
    n_embd: int = 64
    dropout: float = 0.0
    bias: bool = True
    attention: str = "flash"
    device: str = "cpu"
    checkpoint_every: int = 0  # gradient checkpointing: keep the input of every k-th block only (0: off);
    # see GPT.forward for when the last of several segments keeps its activations
    recompute_attention: bool = False  # selective recomputation: blocks keep neither their attention output
    # nor their mid-block residual, and backward recomputes both (nn.Block.forward)

    def __post_init__(self):
        for name in ("vocab_size", "block_size", "n_layer", "n_head", "n_embd"):
            value = getattr(self, name)
            if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value <= 0:
                raise ValueError(f"GPTConfig.{name} must be a positive integer, got {value!r}")
        if self.n_embd % self.n_head != 0:
            raise ValueError(f"GPTConfig: n_embd ({self.n_embd}) must be divisible by n_head ({self.n_head})")
        if isinstance(self.dropout, bool) or not isinstance(self.dropout, numbers.Real) \
                or not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"GPTConfig.dropout must be a number in [0, 1), got {self.dropout!r}")
        if not isinstance(self.bias, (bool, np.bool_)):
            raise ValueError(f"GPTConfig.bias must be True or False, got {self.bias!r}")
        if not isinstance(self.attention, str) or self.attention not in ATTENTION_IMPLS:
            raise ValueError(f"GPTConfig.attention must be one of {ATTENTION_IMPLS}, got {self.attention!r}")
        if not isinstance(self.recompute_attention, (bool, np.bool_)):
            raise ValueError(f"GPTConfig.recompute_attention must be True or False, got {self.recompute_attention!r}")
        if not isinstance(self.checkpoint_every, (int, np.integer)) or isinstance(self.checkpoint_every, bool) \
                or self.checkpoint_every < 0:
            raise ValueError(f"GPTConfig.checkpoint_every must be an integer >= 0, got {self.checkpoint_every!r}")
        if not isinstance(self.device, str) or self.device not in DEVICES:
            raise ValueError(f"GPTConfig.device must be one of {DEVICES}, got {self.device!r}")
        # numpy scalars pass the checks above; stored as Python's own, config.json can hold them
        for name in ("vocab_size", "block_size", "n_layer", "n_head", "n_embd", "checkpoint_every"):
            setattr(self, name, int(getattr(self, name)))
        self.dropout = float(self.dropout)
        self.bias = bool(self.bias)
        self.recompute_attention = bool(self.recompute_attention)

    @classmethod
    def from_preset(cls, name: str, **overrides) -> "GPTConfig":
        if name not in PRESETS:
            raise ValueError(f"unknown preset {name!r}; choose from {sorted(PRESETS)}")
        shape = {k: v for k, v in PRESETS[name].items() if k != "batch_size"}
        shape.update(overrides)
        return cls(**shape)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "GPTConfig":
        fields = {f.name for f in dataclasses.fields(cls)}
        unknown = set(d) - fields
        if unknown:
            raise ValueError(f"unknown GPTConfig keys {sorted(unknown)}; expected some of {sorted(fields)}")
        return cls(**d)


class GPT(Module):
    def __init__(self, config: GPTConfig, seed: int = 0):
        if not isinstance(config, GPTConfig):
            raise TypeError(f"GPT needs a GPTConfig, got {type(config).__name__}")
        if isinstance(seed, bool) or not isinstance(seed, numbers.Integral) or seed < 0:
            raise ValueError(f"GPT: seed must be an integer >= 0, got {seed!r}")
        self.config = config
        rng = np.random.default_rng(seed)
        c = config
        self.wte = Embedding(c.vocab_size, c.n_embd, rng)
        self.wpe = Embedding(c.block_size, c.n_embd, rng)
        self.h = [Block(c.n_embd, c.n_head, c.bias, c.dropout, c.attention, rng, c.n_layer, seed=seed * 1000 + i,
                        recompute_attention=c.recompute_attention)
                  for i in range(c.n_layer)]
        self.h[-1].first_in_backward = True
        self.ln_f = LayerNorm(c.n_embd, c.bias)
        self._emb_dropout_seed = seed * 1000 + 999
        self.drop = Dropout(c.dropout, self._emb_dropout_seed)
        self._positions = {}

    # ---- the forward pass ---------------------------------------------------------
    def _check_idx(self, idx, name: str) -> Tensor:
        if isinstance(idx, Tensor):
            arr = idx.numpy() if idx.device == "cpu" else None
            t = idx
        else:
            arr = np.asarray(idx)
            if arr.dtype.kind not in "iu":
                raise TypeError(f"{name} must hold integer token ids, got dtype {arr.dtype}")
            t = None
        if arr is not None:
            if arr.dtype.kind not in "iu":
                raise TypeError(f"{name} must hold integer token ids, got dtype {arr.dtype}")
            if arr.ndim != 2:
                raise ValueError(f"{name} must be 2-D (batch, time), got shape {arr.shape}")
            if arr.size and (arr.min() < 0 or arr.max() >= self.config.vocab_size):
                bad = arr[(arr < 0) | (arr >= self.config.vocab_size)].ravel()[0]
                raise ValueError(f"{name} holds token id {int(bad)} outside the vocabulary [0, "
                                 f"{self.config.vocab_size})")
            if t is None:
                t = tensor(np.ascontiguousarray(arr, dtype=np.int64))
        return t

    def _pos(self, T: int) -> Tensor:  # noqa: N803
        pos = self._positions.get(T)
        if pos is None:
            pos = self._positions[T] = tensor(np.arange(T, dtype=np.int64))
        return pos

    def forward(self, idx, targets=None):
        """idx (B, T) token ids -> logits (B, T, V), and the mean cross-entropy loss when targets (B, T) are given."""
        idx = self._check_idx(idx, "idx")
        B, T = idx.shape  # noqa: N806
        if T > self.config.block_size:
            raise ValueError(f"sequence of length {T} is longer than block_size {self.config.block_size}")
        if T == 0:
            raise ValueError("idx has no tokens (T = 0)")
        x, x_again = self._embed(idx, T)  # (B, T, C)
        k = self.config.checkpoint_every
        if k and self.training:
            # With several segments and a head no bigger than a block's MLP (vocab_size <= 4 n_embd), the
            # last segment keeps its activations: backward reaches it first and would recompute it at once,
            # and the step's peak is in its backward either way. A larger head (logits and their gradient)
            # peaks before that, where keeping the segment would add to the peak.
            keep_last = len(self.h) > k and self.config.vocab_size <= 4 * self.config.n_embd
            for start in range(0, len(self.h), k):
                if keep_last and start + k >= len(self.h):
                    x = self._segment(start, k)(x)
                else:
                    x = checkpoint(self._segment(start, k), x, self._segment_dropouts[start],
                                   recompute=self._segment(start, k, output=False))
        else:
            # the first block recomputes its input in backward rather than keep it: one (B, T, C)
            # activation less at the step's peak, for two embedding lookups
            for i, block in enumerate(self.h):
                x = block(x, x_again=x_again if i == 0 else None)
        del x_again
        logits = self.ln_f.fused_linear(x, self.wte.weight)  # (B, T, V): lm_head(ln_f(x)), tied to wte
        if targets is None:
            return logits, None
        targets = self._check_idx(targets, "targets")
        if targets.shape != (B, T):
            raise ValueError(f"targets have shape {targets.shape}, expected {(B, T)} like idx")
        loss = F.cross_entropy(logits.view(B * T, self.config.vocab_size), Tensor(targets._impl.view([B * T])))
        return logits, loss

    def _embed(self, idx: Tensor, T: int):  # noqa: N803
        """The blocks' input, dropout(wte(idx) + wpe(positions)) (B, T, C), and a function that gives
        its data back bitwise in backward (the same kernels on the same ids, weights and dropout seed).
        The weight tensors and the dropout probability are taken now, so that changing the modules
        between forward and backward changes nothing; the weights' values are read again in backward,
        as every linear layer's backward reads its weight."""
        pos, wte, wpe, p = self._pos(T), self.wte.weight, self.wpe.weight, self.drop.p
        seed = self.drop.next_seed()

        def embed() -> Tensor:
            x = F.embedding(idx, wte) + F.embedding(pos, wpe)  # (B, T, C) + (T, C)
            return x if seed is None else F.dropout(x, p, True, seed=seed)

        def again():
            with no_grad():
                return embed()._impl

        return embed(), again

    def _segment(self, start: int, k: int, output: bool = True):
        """Blocks start..start+k-1 as one function. output=False is for recomputing them in backward:
        the graph is the same, but the last block skips computing its output, which no backward reads."""
        blocks = self.h[start:start + k]

        def run(x):
            for i, block in enumerate(blocks):
                x = block(x, output=output or i < len(blocks) - 1)
            return x

        return run

    @property
    def _segment_dropouts(self) -> dict:
        k = self.config.checkpoint_every
        return {s: [m for b in self.h[s:s + k] for m in b.modules() if isinstance(m, Dropout)]
                for s in range(0, len(self.h), k)}

    def num_parameters(self, exclude_embeddings: bool = False) -> int:
        n = sum(p.numel() for p in self.parameters())
        if exclude_embeddings:
            n -= self.wpe.weight.numel()
        return n

    def flops_per_token(self, seq_len: int | None = None) -> int:
        """Floating-point operations of one training step (forward and backward) per token, in the
        model's matrix products, at sequence length ``seq_len`` (default block_size).

        Every weight of a linear layer and of the tied lm_head costs 6 (2 in forward, 4 in backward:
        PaLM's and nanoGPT's 6N). Causal attention: position t attends to t + 1 keys, (T + 1) / 2 on
        average, and Q K^T and P V each cost 2 C per (query, key), so 2 C (T + 1) a token in forward
        and three times that in all. Not counted: biases, LayerNorm, GELU, softmax, AdamW, and what
        is computed twice (flash attention's backward, ``checkpoint_every``, ``recompute_attention``).
        Times tokens/s, it gives the arithmetic rate a step sustains, to set against the machine's
        peak (``fma_peak_gflops``; nanoGPT's estimate_mfu counts attention as non-causal, 12 L C T)."""
        c = self.config
        if seq_len is None:
            T = c.block_size  # noqa: N806
        elif isinstance(seq_len, bool) or not hasattr(seq_len, "__index__"):
            raise TypeError(f"seq_len must be an integer, got {type(seq_len).__name__}")
        else:
            T = operator.index(seq_len)  # noqa: N806
        if not 1 <= T <= c.block_size:
            raise ValueError(f"seq_len must be in [1, block_size={c.block_size}], got {seq_len}")
        C, L = c.n_embd, c.n_layer  # noqa: N806
        weights = L * 12 * C * C + c.vocab_size * C  # per block: qkv 3C^2, proj C^2, fc 4C^2, proj 4C^2
        return 6 * weights + 6 * L * C * (T + 1)

    # ---- checkpoints (Hugging Face GPT-2 names and layouts) ------------------------------
    def state_dict(self) -> dict:
        """name -> numpy array (a copy), in GPT-2's layout: Conv1D weights are (in, out)."""
        return {name: np.array(arr, order="C") for name, arr in self._state_views().items()}

    def _state_views(self) -> dict:
        """state_dict's arrays as views of the parameters (the four Conv1D weights transposed views):
        what save() writes, so that a checkpoint copies no weight whole."""
        return {name: p.numpy().T if name.endswith(_HF_TRANSPOSED) else p.numpy()
                for name, p in self.named_parameters()}

    def load_state_dict(self, state: dict, source: str = "state dict") -> None:
        params = dict(self.named_parameters())
        missing = sorted(set(params) - set(state))
        unexpected = sorted(set(state) - set(params))
        if missing or unexpected:
            raise ValueError(f"{source} does not match the model's config: missing {missing[:5]}"
                             f"{'...' if len(missing) > 5 else ''}, unexpected {unexpected[:5]}"
                             f"{'...' if len(unexpected) > 5 else ''}")
        arrays = {}  # every tensor checked before any parameter changes
        for name, p in params.items():
            arr = np.asarray(state[name])
            if arr.dtype.kind != "f":  # ints would load as integer-valued floats, complex lose a part
                raise TypeError(f"{source}: tensor '{name}' has dtype {arr.dtype}; expected a floating point "
                                f"dtype (float16, float32 or float64)")
            if name.endswith(_HF_TRANSPOSED):
                arr = arr.T
            if arr.shape != p.shape:
                raise ValueError(f"{source}: tensor '{name}' has shape {arr.shape}, the config needs {p.shape}")
            arrays[name] = arr
        for name, p in params.items():
            p.numpy()[...] = arrays[name].astype(p.dtype, copy=False)

    def save(self, path, tokenizer=None) -> None:
        """Write model.safetensors and config.json (and the tokenizer) into the directory `path`, atomically."""
        from . import checkpoint

        os.makedirs(path, exist_ok=True)
        checkpoint.save_safetensors(os.path.join(path, "model.safetensors"), self._state_views(),
                                    {"format": "femtogpt"})
        checkpoint.save_json(os.path.join(path, "config.json"), self.config.to_dict())
        if tokenizer is not None:
            tokenizer.save(path)

    @classmethod
    def load(cls, path, **overrides) -> "GPT":
        """Load a femtogpt checkpoint directory or a Hugging Face GPT-2 directory."""
        from . import checkpoint

        checkpoint.check_directory(path, "checkpoint directory")
        cfg_json = checkpoint.load_json_object(os.path.join(path, "config.json"))
        if checkpoint.is_hf_gpt2_dir(path):
            cfg = checkpoint.hf_gpt2_config_to_dict(cfg_json)
        else:
            cfg = cfg_json
            # the shape: a default would go unnoticed where the tensors cannot tell (n_head: any divisor fits)
            missing = [k for k in ("vocab_size", "block_size", "n_layer", "n_head", "n_embd") if k not in cfg]
            if missing:
                raise checkpoint.CheckpointError(f"{path}/config.json lacks {', '.join(missing)}: a checkpoint's "
                                                 f"config must give the model's whole shape")
        try:
            config = GPTConfig.from_dict(cfg)
        except (TypeError, ValueError) as e:
            raise checkpoint.CheckpointError(f"{path}/config.json is not a valid GPTConfig: {e}") from e
        config = dataclasses.replace(config, **overrides)  # the caller's values: its errors are not the file's
        where = f"{path}/model.safetensors"
        tensors, _ = checkpoint.load_safetensors(where)
        if checkpoint.is_hf_gpt2_dir(path):
            tensors = checkpoint.normalize_hf_state_dict(tensors)
        # the tensors' names and shapes against the config before the model is made: a config that
        # is wrong (n_layer 20000 for one layer, a vocabulary of 10**12) would allocate it first
        checkpoint.validate_gpt2_state_dict(tensors, config.to_dict(), where=where)
        model = cls(config)
        try:
            model.load_state_dict(tensors, source=where)
        except (TypeError, ValueError) as e:
            raise checkpoint.CheckpointError(str(e)) from e
        return model

    # ---- sampling -----------------------------------------------------------------
    def generate(self, idx, max_new_tokens: int, temperature: float = 1.0, top_k: int | None = None,
                 top_p: float | None = None, seed=None, *, slide: int | None = None, cache: bool = True):
        """Continue each row of idx (B, T0) by max_new_tokens sampled tokens -> (B, T0 + new) int64,
        with a KV cache. idx may also be one 1-D prompt or a list of prompts of different lengths;
        see femtogpt.generate for the arguments and the window policy (slide)."""
        from .generate import generate

        return generate(self, idx, max_new_tokens, temperature=temperature, top_k=top_k, top_p=top_p, seed=seed,
                        slide=slide, cache=cache)

    def stream(self, idx, max_new_tokens: int, temperature: float = 1.0, top_k: int | None = None,
               top_p: float | None = None, seed=None, *, slide: int | None = None, cache: bool = True):
        """Yield the tokens generate() would produce as they are produced: (B,) int64 per step
        (an int for a single 1-D prompt)."""
        from .generate import stream

        return stream(self, idx, max_new_tokens, temperature=temperature, top_k=top_k, top_p=top_p, seed=seed,
                      slide=slide, cache=cache)
