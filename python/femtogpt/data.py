"""Training data: the bundled corpus, reading text files, caching token ids, and drawing
random (x, y) batches reproducibly and resumably.

The token ids of a corpus are cached as a ``.npy`` file (memory-mapped on load) next to
the data file, or in the per-user cache directory (``$FEMTOGPT_CACHE``, else
``~/.cache/femtogpt``) when that directory is not writable, e.g. the bundled corpus
inside site-packages. The cache key covers the file's content, size and mtime and the
tokenizer's full definition, so editing the file or changing tokenizer re-tokenizes.
"""

from __future__ import annotations

import codecs
import contextlib
import hashlib
import math
import os
import re
from fractions import Fraction
from importlib import resources
from pathlib import Path
from typing import Any, Iterator, Mapping

import numpy as np

from .checkpoint import atomic_path
from .tokenizer import tokenizer_fingerprint

__all__ = [
    "bundled_corpus_path",
    "read_text",
    "iter_text",
    "load_tokens",
    "token_cache_path",
    "user_cache_dir",
    "TokenDataset",
    "SPLITS",
]

SPLITS = ("train", "val")
BUNDLED_CORPUS = "shakespeare.txt"


def bundled_corpus_path() -> Path:
    """Path of the bundled Shakespeare corpus (package data, also in an installed wheel)."""
    res = resources.files("femtogpt").joinpath("data", BUNDLED_CORPUS)
    path = Path(str(res))
    if not path.is_file():
        raise FileNotFoundError(f"the bundled corpus {path} is missing: is femtogpt installed "
                                f"with its package data?")
    return path


# A corpus's text is never held in memory whole (as bytes, str and ids it took 18x its size): it
# is hashed READ_BYTES at a time, and read, tokenized and used for BPE training in pieces of about
# PIECE_BYTES (tokenizers' train_from_iterator buffers 256 of them). Its ids are held whole only
# when writing a token cache failed (see load_tokens).
READ_BYTES = 1 << 20
PIECE_BYTES = 1 << 16
# iter_text cuts pieces only at word boundaries (see there); a piece grows past PIECE_BYTES to
# reach one, and is cut anyway at this many characters (text with no ASCII whitespace at all).
MAX_PIECE_CHARS = 1 << 24
# A cut, searched for in the reversed text: ASCII whitespace with a non-space before it (after, reversed)
_CUT_REVERSED = re.compile(r"[ \t\r\n](?=\S)")


def _check_data_file(path: Path, regular: bool = False) -> None:
    if not path.exists():
        raise FileNotFoundError(f"data file {path} does not exist")
    if path.is_dir():
        raise IsADirectoryError(f"{path} is a directory; expected a UTF-8 text file")
    if regular and not path.is_file():
        raise ValueError(f"data file {path} is not a regular file (it is read twice: to hash it, "
                         f"then to tokenize it)")
    if path.is_file() and path.stat().st_size == 0:
        raise ValueError(f"data file {path} is empty")


def read_text(path: str | os.PathLike) -> str:
    """Read a UTF-8 text file (a leading BOM is dropped).

    FileNotFoundError naming the path if it does not exist; ValueError if it is empty
    or is not UTF-8 text."""
    return "".join(iter_text(path))


def iter_text(path: str | os.PathLike, read_bytes: int | None = None) -> Iterator[str]:
    """read_text(path) in pieces ("".join of them is that text), with its errors, reading
    about read_bytes (default PIECE_BYTES) of the file at a time.

    A piece ends only just before an ASCII space, tab or line break that follows a non-space
    character (or after MAX_PIECE_CHARS without such a place). That is a word boundary for
    every tokenizer here: byte-level BPE splits text into words first (GPT-2's pattern, no
    prefix space), and a word never starts at a space or line break that follows a non-space.
    So the pieces give the whole text's vocabulary, BPE merges and ids."""
    path = Path(path)
    _check_data_file(path)
    step = PIECE_BYTES if read_bytes is None else max(1, int(read_bytes))
    decoder = codecs.getincrementaldecoder("utf-8")()
    carry, scanned = "", 0  # carry[:scanned] has been searched for a cut and has none
    offset, produced = 0, False  # offset: bytes of the file fed to the decoder so far
    with open(path, "rb") as f:
        raw = f.read(len(codecs.BOM_UTF8))
        if not raw:
            raise ValueError(f"data file {path} is empty")
        if raw == codecs.BOM_UTF8:
            offset, raw = len(raw), b""
        raw += f.read(step)
        while raw:
            after = f.read(step)  # read ahead: the last block is never cut, so a small file is one piece
            pending = len(decoder.getstate()[0])  # bytes of an unfinished character held back
            try:
                carry += decoder.decode(raw, final=not after)
            except UnicodeDecodeError as e:
                at = offset - pending + e.start
                raise ValueError(f"data file {path} is not UTF-8 text: byte 0x{e.object[e.start]:02x} at "
                                 f"offset {at} is invalid ({e.reason})") from None
            offset += len(raw)
            raw = after
            if not after:
                break
            cut = _last_cut(carry, scanned)
            if cut == 0 and len(carry) >= MAX_PIECE_CHARS:
                cut = len(carry)
            if cut:
                produced = True
                yield carry[:cut]
                carry = carry[cut:]
            scanned = len(carry)
    if carry:
        produced = True
        yield carry
    if not produced:
        raise ValueError(f"data file {path} is empty (only a byte-order mark)")


def _last_cut(text: str, start: int = 0) -> int:
    """The last index i >= start, i > 0, where a piece of text may end (see iter_text); 0: none.
    Searches text[start - 1:] only, so that a growing piece is not searched again from its start:
    reversed, the last cut is the first match, found in one pass in C."""
    lo = max(start, 1)
    tail = text[lo - 1:]
    m = _CUT_REVERSED.search(tail[::-1])
    return 0 if m is None else len(text) - 1 - m.start()


# ---------------------------------------------------------------------------- token cache

def user_cache_dir() -> Path:
    """``$FEMTOGPT_CACHE`` if set, else ``~/.cache/femtogpt`` ($XDG_CACHE_HOME honoured)."""
    env = os.environ.get("FEMTOGPT_CACHE")
    if env:
        return Path(env).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "femtogpt"


def _dir_is_writable(directory: Path) -> bool:
    # A separate function so tests can simulate a read-only directory (root ignores chmod).
    return os.access(directory, os.W_OK | os.X_OK)


def _cache_name(path: Path, tokenizer: Any) -> tuple[str, str]:
    """(file name, stale-file glob) of the token cache for ``path``'s content under ``tokenizer``."""
    st = path.stat()
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(READ_BYTES):
            h.update(block)
    h.update(f"|{st.st_size}|{st.st_mtime_ns}".encode())
    tok = tokenizer_fingerprint(tokenizer)
    kind = getattr(tokenizer, "kind", type(tokenizer).__name__)
    prefix = f"{path.name}.{kind}{tokenizer.vocab_size}-{tok[:12]}"
    return f"{prefix}.{h.hexdigest()[:16]}.tokens.npy", f"{prefix}.*.tokens.npy"


def token_cache_path(path: str | os.PathLike, tokenizer: Any) -> Path:
    """Where :func:`load_tokens` keeps (or would keep) ``path``'s token ids."""
    path = Path(path).resolve()
    name, _ = _cache_name(path, tokenizer)
    directory = path.parent if _dir_is_writable(path.parent) else user_cache_dir()
    return directory / name


def _token_dtype(vocab_size: int) -> np.dtype:
    return np.dtype(np.uint16 if vocab_size <= 1 << 16 else np.uint32)  # ids < vocab_size


def _open_cached(path: Path, dtype: np.dtype, vocab_size: int | None) -> np.ndarray | None:
    """The cache file's ids as a memmap, or None for a damaged one (to rebuild): unreadable, of
    another dtype or shape, or holding an id >= vocab_size (read READ_BYTES at a time; vocab_size
    None for a cache just written here, whose ids _encode_pieces has checked)."""
    try:
        arr = np.load(path, mmap_mode="r")
    except (OSError, ValueError):
        return None
    if arr.dtype != dtype or arr.ndim != 1:
        return None
    if vocab_size is None:
        return arr
    step = READ_BYTES // arr.itemsize
    for i in range(0, len(arr), step):
        if int(arr[i:i + step].max()) >= vocab_size:
            return None
    return arr


def _encode_pieces(path: Path, tokenizer: Any, dtype: np.dtype) -> Iterator[np.ndarray]:
    """The token ids of ``path``, a piece of text at a time (see iter_text), as ``dtype``; the
    whole text at once for a tokenizer that does not say it encodes pieces alike
    (``encodes_pieces_alike``: ours do, but a BPE loaded from a tokenizer.json with another
    pre-tokenizer or a normalizer may not)."""
    pieces = iter_text(path)
    if not getattr(tokenizer, "encodes_pieces_alike", False):
        pieces = ["".join(pieces)]
    for piece in pieces:
        ids = tokenizer.encode(piece)
        if ids.size and int(ids.max()) >= tokenizer.vocab_size:  # a broken custom tokenizer
            raise ValueError(f"tokenizer produced id {int(ids.max())} >= its vocab_size "
                             f"{tokenizer.vocab_size}")
        yield ids.astype(dtype, copy=False)


def _npy_header(dtype: np.dtype, n: int, length: int | None = None) -> bytes:
    """The .npy (format 1.0) header of a 1-D array of n elements of dtype, padded with spaces to
    ``length`` bytes, or to the next multiple of 64 (the format's alignment); length must be a
    multiple of 64 at least that long."""
    text = f"{{'descr': {np.lib.format.dtype_to_descr(dtype)!r}, 'fortran_order': False, 'shape': ({n},), }}"
    magic = np.lib.format.magic(1, 0)
    unpadded = len(magic) + 2 + len(text) + 1  # magic, header length (uint16), text, newline
    length = length if length is not None else -(-unpadded // 64) * 64
    if length < unpadded or length % 64:
        raise ValueError(f"_npy_header: {length} bytes cannot hold a {unpadded}-byte header aligned to 64")
    text += " " * (length - unpadded) + "\n"
    return magic + len(text).to_bytes(2, "little") + text.encode("latin1")


def _write_cache(target: Path, path: Path, tokenizer: Any, dtype: np.dtype) -> None:
    """Tokenize ``path`` piece by piece into the .npy file ``target``, atomically. The ids are
    written in place after room for the header, which the count (known only at the end) then
    fills: the cache takes its own size on disk while it is written, not twice that."""
    header_bytes = len(_npy_header(dtype, 2**63 - 1))  # room for any count
    with atomic_path(target) as tmp, open(tmp, "wb") as out:
        out.seek(header_bytes)
        n = 0
        for ids in _encode_pieces(path, tokenizer, dtype):
            out.write(ids.tobytes())
            n += ids.size
        out.seek(0)
        out.write(_npy_header(dtype, n, header_bytes))


def _write_ids(target: Path, ids: np.ndarray) -> None:
    """The ids already in memory as the .npy file ``target``, atomically (no copy of them)."""
    with atomic_path(target) as tmp, open(tmp, "wb") as out:
        out.write(_npy_header(ids.dtype, ids.size))
        ids.tofile(out)


def _encode_all(path: Path, tokenizer: Any, dtype: np.dtype) -> np.ndarray:
    """All of ``path``'s ids in memory, read-only like the cache's memmap."""
    ids = np.concatenate(list(_encode_pieces(path, tokenizer, dtype)))
    ids.flags.writeable = False
    return ids


def load_tokens(path: str | os.PathLike, tokenizer: Any, *,
                cache_dir: str | os.PathLike | None = None) -> np.ndarray:
    """Token ids of the text file ``path`` under ``tokenizer``, as a read-only 1-D memmap
    (uint16 when the vocabulary fits, else uint32).

    Tokenizes once and caches the result in the first place that takes it: ``cache_dir`` if
    given, beside the file if its directory is writable, else :func:`user_cache_dir`. The
    cache is written atomically, a piece at a time, and stale caches of the same file and
    tokenizer are removed. When a write fails partway (disk full, quota), the ids are
    tokenized once more, into memory, and the next places get those written; when no place
    takes them, they come back as a read-only in-memory array."""
    path = Path(path)
    _check_data_file(path, regular=True)
    path = path.resolve()
    name, stale_glob = _cache_name(path, tokenizer)
    dtype = _token_dtype(tokenizer.vocab_size)

    candidates = [Path(cache_dir)] if cache_dir is not None else []
    if _dir_is_writable(path.parent):
        candidates.append(path.parent)
    candidates.append(user_cache_dir())
    for d in dict.fromkeys(candidates):  # hit in any of them counts
        cached = _open_cached(d / name, dtype, tokenizer.vocab_size) if (d / name).is_file() else None
        if cached is not None:
            return cached

    in_memory = None  # the ids, once a write has failed: the next place gets them without tokenizing again
    for d in candidates:
        try:
            d.mkdir(parents=True, exist_ok=True)
        except OSError:  # read-only file system, a file in the way, ...: try the next place
            continue
        if not _dir_is_writable(d):
            continue
        try:
            if in_memory is None:
                _write_cache(d / name, path, tokenizer, dtype)
            else:
                _write_ids(d / name, in_memory)
        except OSError:  # disk full, quota, ...: the next place, with the ids in memory (encoded below,
            pass         # outside the except: an error reading the data is not chained to this one)
        else:
            for old in d.glob(stale_glob):
                if old.name != name:
                    with contextlib.suppress(OSError):
                        old.unlink()
            cached = _open_cached(d / name, dtype, None)
            if cached is not None:
                return cached
            continue
        if in_memory is None:
            in_memory = _encode_all(path, tokenizer, dtype)
    # Nowhere to cache: work from memory.
    return in_memory if in_memory is not None else _encode_all(path, tokenizer, dtype)


# ---------------------------------------------------------------------------- batches

class DatasetMismatch(ValueError):
    """A saved TokenDataset state that belongs to other data (another length, block or batch size);
    ``differences`` says which, as "n_tokens: saved 3000, now 2000"."""

    def __init__(self, differences: str):
        super().__init__(f"dataset state does not match this dataset ({differences}); pass strict=False to "
                         f"restore the random streams anyway")
        self.differences = differences


class TokenDataset:
    """Random (x, y) batches from a token id array, as nanoGPT's ``get_batch``.

    The last ``val_fraction`` of the ids is the validation split. Each split draws from
    its own seeded numpy Generator, so evaluating does not change the training batches;
    :meth:`state_dict` / :meth:`load_state_dict` capture the generators so a resumed run
    draws exactly the batches the uninterrupted run would have."""

    def __init__(self, ids: Any, block_size: int, batch_size: int,
                 val_fraction: float = 0.1, seed: int = 0):
        ids = np.asarray(ids)
        if ids.ndim != 1:
            raise ValueError(f"token ids must be a 1-D array; got shape {ids.shape}")
        if not np.issubdtype(ids.dtype, np.integer):
            raise TypeError(f"token ids must be integers; got dtype {ids.dtype}")
        for name, v in (("block_size", block_size), ("batch_size", batch_size)):
            if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 1:
                raise ValueError(f"{name} must be a positive integer; got {v!r}")
        if not 0.0 <= float(val_fraction) < 1.0:
            raise ValueError(f"val_fraction must be in [0, 1); got {val_fraction!r}")
        self.block_size = int(block_size)
        self.batch_size = int(batch_size)
        self.val_fraction = float(val_fraction)
        self.seed = int(seed)
        n = len(ids)
        n_val = int(n * self.val_fraction)
        self.data = {"train": ids[: n - n_val], "val": ids[n - n_val:]}
        need = self.block_size + 1
        if len(self.data["train"]) < need or (self.val_fraction > 0 and n_val < need):
            raise ValueError(
                f"data has {n} tokens; need at least {self._min_tokens()} for block_size "
                f"{self.block_size} with val_fraction {self.val_fraction} (each split needs "
                f"block_size + 1 = {need}; the train split has {n - n_val}, the val split "
                f"{n_val}). Use more text or a smaller block_size")
        self.n_tokens = n
        self._reset_rngs()

    def _min_tokens(self) -> int:
        """The fewest tokens that give both splits block_size + 1, with n_val = int(n * val_fraction)
        as __init__ computes it: bisection below a bound from exact arithmetic, so that any fraction
        answers at once (1e-300 needs about 9e300 tokens; stepping towards that never ended)."""
        need, f = self.block_size + 1, self.val_fraction
        if f == 0:
            return need

        def ok(m: int) -> bool:
            try:
                v = int(m * f)
            except OverflowError:  # m is beyond the floats: the exact product
                v = math.floor(m * Fraction(f))
            return m - v >= need and v >= need

        # floor(m f) >= need from m >= need / f, and m - floor(m f) >= need from m >= need / (1 - f)
        hi = max(math.ceil(need / Fraction(f)), math.ceil(need / (1 - Fraction(f)))) + 2
        while not ok(hi):  # float rounding could want a token or two more
            hi *= 2
        lo = need  # too few: its val split would leave the train split nothing
        while hi - lo > 1:
            mid = (lo + hi) // 2
            lo, hi = (lo, mid) if ok(mid) else (mid, hi)
        return hi

    def _reset_rngs(self) -> None:
        # One independent stream per split, both determined by the seed.
        self.rng = {s: np.random.Generator(np.random.PCG64(np.random.SeedSequence([self.seed, i])))
                    for i, s in enumerate(SPLITS)}
        self.batches_drawn = {s: 0 for s in SPLITS}

    def _split(self, split: str) -> np.ndarray:
        if split not in SPLITS:
            raise ValueError(f"unknown split {split!r}; choose 'train' or 'val'")
        data = self.data[split]
        if len(data) == 0:
            raise ValueError("there is no validation split (val_fraction is 0)")
        return data

    def get_batch(self, split: str = "train") -> tuple[np.ndarray, np.ndarray]:
        """``(x, y)``, both int64 (batch_size, block_size); y is x shifted by one token."""
        data = self._split(split)
        B, T = self.batch_size, self.block_size
        start = self.rng[split].integers(0, len(data) - T, size=B)
        idx = start[:, None] + np.arange(T + 1)  # (B, T+1)
        chunk = np.asarray(data[idx], dtype=np.int64)
        self.batches_drawn[split] += 1
        return chunk[:, :-1].copy(), chunk[:, 1:].copy()

    def __len__(self) -> int:
        return self.n_tokens

    def state_dict(self) -> dict:
        """JSON-serializable state: the generators' states and how many batches each
        split has drawn (plus the settings, to catch resuming on different data)."""
        return {
            "seed": self.seed,
            "n_tokens": self.n_tokens,
            "block_size": self.block_size,
            "batch_size": self.batch_size,
            "val_fraction": self.val_fraction,
            "batches_drawn": dict(self.batches_drawn),
            "rng": {s: self.rng[s].bit_generator.state for s in SPLITS},
        }

    def load_state_dict(self, state: Mapping[str, Any], strict: bool = True) -> None:
        """Restore :meth:`state_dict` output. With ``strict`` (the default) a state saved
        for a different number of tokens, block_size, batch_size or val_fraction raises
        ValueError, since the batches could not match the interrupted run's."""
        try:
            rng_states = state["rng"]
            drawn = state["batches_drawn"]
            if strict:
                mismatched = [f"{k}: saved {state[k]!r}, now {getattr(self, k)!r}"
                              for k in ("n_tokens", "block_size", "batch_size", "val_fraction")
                              if state[k] != getattr(self, k)]
                if mismatched:
                    raise DatasetMismatch("; ".join(mismatched))
            rngs = {}
            for s in SPLITS:
                g = np.random.Generator(np.random.PCG64())
                g.bit_generator.state = dict(rng_states[s])
                rngs[s] = g
            counts = {s: int(drawn[s]) for s in SPLITS}
        except (KeyError, TypeError) as e:
            raise ValueError(f"not a TokenDataset state dict (problem with {e})") from None
        self.rng, self.batches_drawn = rngs, counts
