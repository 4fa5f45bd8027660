"""Tokenizers: characters, UTF-8 bytes, and byte-level BPE (through the `tokenizers` library).

All three share one small interface: ``vocab_size``, ``encode(str) -> np.ndarray[int64]``,
``decode(ids) -> str``, ``to_dict()`` and ``save(dir)``; :func:`load_tokenizer` and
:func:`tokenizer_from_dict` read them back, so a checkpoint directory carries its tokenizer
as ``tokenizer.json``. The char and byte tokenizers use a small format of our own
(``{"type": "char", "chars": "..."}``); the BPE tokenizer uses the `tokenizers` library's
own tokenizer.json, which is what Hugging Face ships, so either kind of file loads.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any, Iterable, Mapping

import numpy as np

from .checkpoint import atomic_write_text

__all__ = [
    "CharTokenizer",
    "ByteTokenizer",
    "BPETokenizer",
    "make_tokenizer",
    "load_tokenizer",
    "tokenizer_from_dict",
    "tokenizer_fingerprint",
    "TOKENIZER_KINDS",
    "DEFAULT_BPE_VOCAB_SIZE",
    "MAX_BPE_VOCAB_SIZE",
]

TOKENIZER_KINDS = ("char", "byte", "bpe")
DEFAULT_BPE_VOCAB_SIZE = 1024
# The largest BPE vocabulary train() asks for: the `tokenizers` library allocates for vocab_size up
# front (10**8 took 4.4 GB) and aborts the process when that fails. GPT-2 has 50,257 tokens.
MAX_BPE_VOCAB_SIZE = 1 << 20
TOKENIZER_FILE = "tokenizer.json"


def _as_ids(ids: Any, vocab_size: int) -> np.ndarray:
    """Validate a sequence of token ids: 1-D, integer, each in [0, vocab_size)."""
    arr = np.asarray(ids)
    if arr.size == 0:
        return np.zeros(0, dtype=np.int64)
    if arr.ndim > 1:
        raise ValueError(f"decode expects a 1-D sequence of token ids; got shape {arr.shape} "
                         f"(decode each row separately)")
    arr = arr.reshape(-1)
    if not (np.issubdtype(arr.dtype, np.integer) or arr.dtype == np.bool_):
        raise TypeError(f"token ids must be integers; got dtype {arr.dtype}")
    lo, hi = int(arr.min()), int(arr.max())
    if lo < 0 or hi >= vocab_size:
        bad = lo if lo < 0 else hi
        raise ValueError(f"token id {bad} is out of range for a vocabulary of {vocab_size} "
                         f"(ids must be in [0, {vocab_size - 1}])")
    return arr.astype(np.int64, copy=False)


class _TokenizerBase:
    kind = "?"

    def save(self, directory: str | os.PathLike) -> Path:
        """Write ``tokenizer.json`` into ``directory`` (created if needed); return its path."""
        d = Path(directory)
        d.mkdir(parents=True, exist_ok=True)
        path = d / TOKENIZER_FILE
        atomic_write_text(path, json.dumps(self.to_dict(), ensure_ascii=True) + "\n")
        return path

    def to_dict(self) -> dict:  # pragma: no cover - every subclass defines it
        raise NotImplementedError

    def __eq__(self, other: object) -> bool:
        return type(other) is type(self) and other.to_dict() == self.to_dict()

    def __hash__(self) -> int:
        return hash(tokenizer_fingerprint(self))


class CharTokenizer(_TokenizerBase):
    """One token per character; the vocabulary is the sorted distinct characters of the
    training corpus, so id order is stable for a given corpus."""

    kind = "char"

    def __init__(self, chars: str | Iterable[str]):
        chars = "".join(chars)
        if not chars:
            raise ValueError("a character vocabulary needs at least one character")
        if len(set(chars)) != len(chars):
            dups = sorted({c for c in chars if chars.count(c) > 1})
            raise ValueError(f"character vocabulary has duplicates: {', '.join(map(repr, dups))}")
        self.chars = chars
        self._cps = np.frombuffer(chars.encode("utf-32-le", "surrogatepass"), dtype="<u4").astype(np.int64)
        # Lookup table code point -> id; one extra slot (-1) catches every larger code point.
        top = int(self._cps.max()) + 1
        self._lut = np.full(top + 1, -1, dtype=np.int64)
        self._lut[self._cps] = np.arange(len(chars), dtype=np.int64)

    # encode(a + b) == concat(encode(a), encode(b)) for the pieces data.iter_text cuts; a subclass
    # whose encode adds tokens of its own (BOS/EOS) must say False
    encodes_pieces_alike = True

    @classmethod
    def from_text(cls, text: str | Iterable[str]) -> "CharTokenizer":
        """The vocabulary of ``text``: a str, or an iterable of pieces of it (data.iter_text)."""
        chars: set[str] = set()
        for piece in [text] if isinstance(text, str) else text:
            chars.update(piece)
        if not chars:
            raise ValueError("cannot build a character vocabulary from empty text")
        return cls(sorted(chars))

    @property
    def vocab_size(self) -> int:
        return len(self.chars)

    def encode(self, text: str) -> np.ndarray:
        if not isinstance(text, str):
            raise TypeError(f"encode expects str; got {type(text).__name__}")
        if not text:
            return np.zeros(0, dtype=np.int64)
        cps = np.frombuffer(text.encode("utf-32-le", "surrogatepass"), dtype="<u4")
        ids = self._lut[np.minimum(cps, len(self._lut) - 1)]
        if (ids < 0).any():
            unknown = sorted({text[i] for i in np.flatnonzero(ids < 0)})
            shown = ", ".join(repr(c) for c in unknown[:40])
            more = f" and {len(unknown) - 40} more" if len(unknown) > 40 else ""
            raise ValueError(
                f"text contains {len(unknown)} character(s) not in the vocabulary: {shown}{more}. "
                f"The character vocabulary ({self.vocab_size} characters) came from the training "
                f"corpus; use only characters that occur in it (or a byte/bpe tokenizer)")
        return ids

    def decode(self, ids: Any) -> str:
        ids = _as_ids(ids, self.vocab_size)
        return self._cps[ids].astype("<u4").tobytes().decode("utf-32-le", "surrogatepass")

    def to_dict(self) -> dict:
        return {"type": "char", "chars": self.chars}

    def __repr__(self) -> str:
        return f"CharTokenizer(vocab_size={self.vocab_size})"


class ByteTokenizer(_TokenizerBase):
    """One token per UTF-8 byte (vocab_size 256); encodes any text. Decoding replaces
    invalid UTF-8 (e.g. a sample cut mid-character) with U+FFFD."""

    kind = "byte"
    vocab_size = 256
    encodes_pieces_alike = True

    def encode(self, text: str) -> np.ndarray:
        if not isinstance(text, str):
            raise TypeError(f"encode expects str; got {type(text).__name__}")
        return np.frombuffer(text.encode("utf-8", "surrogatepass"), dtype=np.uint8).astype(np.int64)

    def decode(self, ids: Any) -> str:
        ids = _as_ids(ids, 256)
        return ids.astype(np.uint8).tobytes().decode("utf-8", errors="replace")

    def to_dict(self) -> dict:
        return {"type": "byte"}

    def __repr__(self) -> str:
        return "ByteTokenizer()"


def _tokenizers():
    try:
        import tokenizers
    except ImportError as e:
        raise ImportError(
            "the BPE tokenizer needs the `tokenizers` library, which is not installed: "
            "pip install femtogpt[bpe]  (or: pip install tokenizers)") from e
    return tokenizers


def check_bpe_vocab_size(vocab_size: Any) -> None:
    """TypeError/ValueError unless vocab_size is an int in [256, MAX_BPE_VOCAB_SIZE]."""
    if isinstance(vocab_size, bool) or not isinstance(vocab_size, (int, np.integer)):
        raise TypeError(f"vocab_size must be an int; got {vocab_size!r}")
    if vocab_size < 256:
        raise ValueError(f"a byte-level BPE vocabulary needs vocab_size >= 256 (the bytes); "
                         f"got {vocab_size}")
    if vocab_size > MAX_BPE_VOCAB_SIZE:
        raise ValueError(f"vocab_size {vocab_size} is too large: a BPE vocabulary may have at most "
                         f"{MAX_BPE_VOCAB_SIZE:,} (2**20) tokens (GPT-2 has 50,257)")


class BPETokenizer(_TokenizerBase):
    """Byte-level BPE (GPT-2 style) backed by a ``tokenizers.Tokenizer``. Any text encodes;
    ``decode(encode(s)) == s``."""

    kind = "bpe"

    def __init__(self, backend: Any):
        self.backend = backend

    @staticmethod
    def _byte_level(tok: Any) -> Any:
        tk = _tokenizers()
        tok.pre_tokenizer = tk.pre_tokenizers.ByteLevel(add_prefix_space=False)
        tok.decoder = tk.decoders.ByteLevel()
        return tok

    @property
    def encodes_pieces_alike(self) -> bool:
        """Whether data.iter_text's pieces (cut at word boundaries) encode to the same ids piece by
        piece: so for GPT-2's byte-level pre-tokenizer without a prefix space, no normalizer, and
        added tokens (if any) that are matched as they are and hold no whitespace, which is what
        train() and from_gpt2_files() make."""
        pre = self.backend.pre_tokenizer
        tk = _tokenizers()
        if self.backend.normalizer is not None or not isinstance(pre, tk.pre_tokenizers.ByteLevel) \
                or pre.add_prefix_space or not pre.use_regex:
            return False
        return all(not (t.lstrip or t.rstrip or t.single_word) and not any(c.isspace() for c in t.content)
                   for t in self.backend.get_added_tokens_decoder().values())

    @classmethod
    def train(cls, text: str | Iterable[str], vocab_size: int = DEFAULT_BPE_VOCAB_SIZE,
              min_frequency: int = 2) -> "BPETokenizer":
        """Train a byte-level BPE on ``text`` (a str, or an iterable of pieces of it cut as
        data.iter_text cuts them): the 256 byte tokens plus up to ``vocab_size - 256`` merges
        (fewer if the text runs out of repeated pairs). vocab_size is at most MAX_BPE_VOCAB_SIZE
        (2**20); a merge needs a pair seen at least ``min_frequency`` times."""
        tk = _tokenizers()
        check_bpe_vocab_size(vocab_size)
        if isinstance(min_frequency, bool) or not isinstance(min_frequency, (int, np.integer)):
            raise TypeError(f"min_frequency must be an int; got {min_frequency!r}")
        if not 0 <= min_frequency < 1 << 64:
            raise ValueError(f"min_frequency must be >= 0 (and below 2**64); got {min_frequency}")
        seen = []  # whether any piece had text

        def pieces():
            for piece in [text] if isinstance(text, str) else text:
                if piece:
                    seen.append(True)
                    yield piece

        tok = cls._byte_level(tk.Tokenizer(tk.models.BPE()))
        trainer = tk.trainers.BpeTrainer(
            vocab_size=int(vocab_size), min_frequency=int(min_frequency), show_progress=False,
            initial_alphabet=tk.pre_tokenizers.ByteLevel.alphabet(), special_tokens=[])
        tok.train_from_iterator(pieces(), trainer=trainer)
        if not seen:
            raise ValueError("cannot train a BPE tokenizer on empty text")
        return cls(tok)

    @classmethod
    def from_file(cls, path: str | os.PathLike) -> "BPETokenizer":
        """Load a `tokenizers` tokenizer.json (what ``save`` writes, or a Hugging Face one)."""
        tk = _tokenizers()
        try:
            return cls(tk.Tokenizer.from_file(str(path)))
        except Exception as e:  # the library raises a bare Exception for bad files
            raise ValueError(f"{path}: not a valid `tokenizers` tokenizer.json: {e}") from None

    @classmethod
    def from_gpt2_files(cls, vocab_path: str | os.PathLike,
                        merges_path: str | os.PathLike) -> "BPETokenizer":
        """Load GPT-2's ``vocab.json`` + ``merges.txt`` (byte-level BPE)."""
        tk = _tokenizers()
        for p in (vocab_path, merges_path):
            if not Path(p).is_file():
                raise FileNotFoundError(f"tokenizer file {p} does not exist")
        try:
            model = tk.models.BPE.from_file(str(vocab_path), str(merges_path))
        except Exception as e:
            raise ValueError(f"cannot read GPT-2 BPE files {vocab_path} and {merges_path}: {e}") from None
        tok = cls._byte_level(tk.Tokenizer(model))
        if tok.token_to_id("<|endoftext|>") is not None:
            tok.add_special_tokens(["<|endoftext|>"])
        return cls(tok)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "BPETokenizer":
        tk = _tokenizers()
        try:
            return cls(tk.Tokenizer.from_str(json.dumps(d)))
        except Exception as e:
            raise ValueError(f"not a valid `tokenizers` tokenizer.json: {e}") from None

    @property
    def vocab_size(self) -> int:
        return self.backend.get_vocab_size(with_added_tokens=True)

    def encode(self, text: str) -> np.ndarray:
        if not isinstance(text, str):
            raise TypeError(f"encode expects str; got {type(text).__name__}")
        if not text:
            return np.zeros(0, dtype=np.int64)
        return np.asarray(self.backend.encode(text, add_special_tokens=False).ids, dtype=np.int64)

    def decode(self, ids: Any) -> str:
        ids = _as_ids(ids, self.vocab_size)
        return self.backend.decode(ids.tolist(), skip_special_tokens=False)

    def to_dict(self) -> dict:
        return json.loads(self.backend.to_str())

    def __repr__(self) -> str:
        return f"BPETokenizer(vocab_size={self.vocab_size})"


Tokenizer = CharTokenizer | ByteTokenizer | BPETokenizer


def make_tokenizer(kind: str, text: str | Iterable[str] | None = None, vocab_size: int | None = None) -> Tokenizer:
    """Build a tokenizer of ``kind`` ("char", "byte" or "bpe") for the corpus ``text`` (a str, or
    its pieces from data.iter_text, so that a large corpus is never read whole).

    char: the corpus's distinct characters; byte: fixed 256 (text unused); bpe: trained
    on ``text`` with ``vocab_size`` (default DEFAULT_BPE_VOCAB_SIZE)."""
    if kind not in TOKENIZER_KINDS:
        raise ValueError(f"unknown tokenizer kind {kind!r}; choose one of: {', '.join(TOKENIZER_KINDS)}")
    if kind != "bpe" and vocab_size is not None:
        if kind == "byte" and vocab_size == 256:
            return ByteTokenizer()
        raise ValueError(f"vocab_size applies only to the bpe tokenizer; the {kind} tokenizer's "
                         f"vocabulary is {'256 bytes' if kind == 'byte' else 'set by the corpus'}")
    if kind == "byte":
        return ByteTokenizer()
    if text is None:
        raise ValueError(f"the {kind} tokenizer is built from the training text; pass text=")
    if kind == "char":
        return CharTokenizer.from_text(text)
    return BPETokenizer.train(text, DEFAULT_BPE_VOCAB_SIZE if vocab_size is None else vocab_size)


def tokenizer_from_dict(d: Mapping[str, Any]) -> Tokenizer:
    """Rebuild a tokenizer from ``to_dict()`` output or any `tokenizers` tokenizer.json."""
    if not isinstance(d, Mapping):
        raise ValueError(f"a tokenizer description must be a JSON object; got {type(d).__name__}")
    if isinstance(d.get("model"), Mapping):  # the `tokenizers` library's format
        return BPETokenizer.from_dict(d)
    kind = d.get("type")
    if kind == "char":
        chars = d.get("chars")
        if not isinstance(chars, str):
            raise ValueError("char tokenizer description needs a 'chars' string")
        return CharTokenizer(chars)
    if kind == "byte":
        return ByteTokenizer()
    raise ValueError(f"unrecognized tokenizer description (keys: {sorted(d)[:10]}): expected "
                     f"femtogpt's {{\"type\": \"char\"|\"byte\", ...}} or a `tokenizers` "
                     f"tokenizer.json with a 'model'")


def load_tokenizer(path: str | os.PathLike) -> Tokenizer:
    """Load a tokenizer from a directory (its ``tokenizer.json``, else GPT-2's
    ``vocab.json`` + ``merges.txt``) or from a tokenizer.json file."""
    p = Path(path)
    if p.is_dir():
        if (p / TOKENIZER_FILE).is_file():
            p = p / TOKENIZER_FILE
        elif (p / "vocab.json").is_file() and (p / "merges.txt").is_file():
            return BPETokenizer.from_gpt2_files(p / "vocab.json", p / "merges.txt")
        else:
            raise FileNotFoundError(f"no tokenizer in {p}: expected {TOKENIZER_FILE} or GPT-2's "
                                    f"vocab.json + merges.txt")
    elif not p.exists():
        raise FileNotFoundError(f"tokenizer file {p} does not exist")
    elif not p.is_file():  # a FIFO or a device: a read that blocks or never ends
        raise ValueError(f"tokenizer file {p} is not a regular file")
    try:
        d = json.loads(p.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ValueError(f"{p}: not a valid tokenizer JSON file: {e}") from None
    except RecursionError:
        raise ValueError(f"{p}: not a valid tokenizer JSON file: nested too deeply") from None
    try:
        return tokenizer_from_dict(d)
    except ValueError as e:
        raise ValueError(f"{p}: {e}") from None


def tokenizer_fingerprint(tok: Tokenizer) -> str:
    """A short stable hash of a tokenizer's full definition (kind and vocabulary)."""
    blob = json.dumps(tok.to_dict(), sort_keys=True, ensure_ascii=True).encode()
    return hashlib.sha256(blob).hexdigest()[:16]
