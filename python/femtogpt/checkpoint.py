"""Checkpoint files: atomic writes, safetensors and JSON with clear errors, and the
Hugging Face GPT-2 naming conventions.

A checkpoint directory holds ``model.safetensors`` (tensor names and layouts as Hugging
Face's GPT-2: ``wte.weight``, ``h.0.attn.c_attn.weight`` (C, 3C), ...), ``config.json``,
``tokenizer.json`` and the training state beside them. Every file is written atomically:
a temporary file in the same directory, flushed and fsynced, then renamed over the
target, so a crash mid-save leaves the previous checkpoint intact. A directory of several
files (a training run's) is saved under :func:`staged_writes`: every file is written in
full first and the renames come together at the end, so a save that fails or is killed
while it writes leaves the previous files all of one step, not a mix of two.
"""

from __future__ import annotations

import contextlib
import contextvars
import json
import os
import struct
import tempfile
import threading
from pathlib import Path
from typing import Any, Iterator, Mapping

import numpy as np

__all__ = [
    "CheckpointError",
    "atomic_write_bytes",
    "atomic_write_text",
    "atomic_path",
    "staged_writes",
    "remove_stale_temporaries",
    "save_safetensors",
    "load_safetensors",
    "save_json",
    "load_json",
    "load_json_object",
    "check_directory",
    "hf_gpt2_config_to_dict",
    "dict_to_hf_gpt2_config",
    "normalize_hf_state_dict",
    "gpt2_param_shapes",
    "validate_gpt2_state_dict",
    "is_hf_gpt2_dir",
]


class CheckpointError(ValueError):
    """A checkpoint file exists but cannot be used: truncated, corrupt or inconsistent."""


# ---------------------------------------------------------------------------- atomic writes

_umask_lock = threading.Lock()
_umask: int | None = None


def _default_file_mode() -> int:
    # mkstemp creates files 0600; give the final file the mode open() would have given it.
    global _umask
    with _umask_lock:
        if _umask is None:
            _umask = os.umask(0)
            os.umask(_umask)
    return 0o666 & ~_umask


def _fsync_dir(directory: Path) -> None:
    # Makes the rename itself durable; not every platform/filesystem allows it.
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


# Inside staged_writes: the (temporary, target) pairs whose renames wait for its end.
_staged: contextvars.ContextVar[list | None] = contextvars.ContextVar("femtogpt_staged_writes", default=None)


@contextlib.contextmanager
def staged_writes() -> Iterator[None]:
    """Files written atomically inside are renamed into place only when the block ends
    without an error, in the order they were written; on an error in the block every one of
    them is removed and no target is touched. (An error or a kill during the renames
    themselves, a few system calls, can still mix two saves; one while the files are
    written cannot. Writes from threads started inside are not staged.)"""
    pending: list[tuple[Path, Path]] = []
    token = _staged.set(pending)
    try:
        yield
    except BaseException:
        for tmp, _ in pending:
            with contextlib.suppress(OSError):
                tmp.unlink()
        raise
    finally:
        _staged.reset(token)
    for i, (tmp, path) in enumerate(pending):
        try:
            os.replace(tmp, path)
        except BaseException:
            for rest, _ in pending[i:]:
                with contextlib.suppress(OSError):
                    rest.unlink()
            raise
    for directory in dict.fromkeys(path.parent for _, path in pending):
        _fsync_dir(directory)


# atomic_path's temporary files: ".NAME.<random>.tmp" beside the target NAME
_TEMPORARY_SUFFIX = ".tmp"


def _temporary_prefix(path: Path) -> str:
    return f".{path.name}."


def remove_stale_temporaries(path: str | os.PathLike) -> None:
    """Remove the temporary files that writes of ``path`` killed midway left beside it."""
    path = Path(path)
    for stale in path.parent.glob(f"{_temporary_prefix(path)}*{_TEMPORARY_SUFFIX}"):
        with contextlib.suppress(OSError):
            stale.unlink()


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path in ``path``'s directory; on success fsync it and rename it
    to ``path``. On any error the temporary file is removed and ``path`` is untouched.

    For writers that want a file name rather than bytes (``safetensors.numpy.save_file``,
    ``np.lib.format.open_memmap``)."""
    path = Path(path)
    directory = path.parent
    if not directory.is_dir():
        raise FileNotFoundError(f"cannot write {path}: directory {directory} does not exist")
    fd, tmp_name = tempfile.mkstemp(dir=directory, prefix=_temporary_prefix(path), suffix=_TEMPORARY_SUFFIX)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
        mode = os.stat(path).st_mode & 0o7777 if path.exists() else _default_file_mode()
        os.chmod(tmp, mode)
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        pending = _staged.get()
        if pending is not None:  # staged_writes renames it, with the others
            pending.append((tmp, path))
            return
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise
    _fsync_dir(directory)


def atomic_write_bytes(path: str | os.PathLike, data: bytes | bytearray | memoryview) -> None:
    """Write ``data`` to ``path`` atomically (temp file in the same directory, flush,
    fsync, ``os.replace``). Readers see the old file or the new one, never a mix."""
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            f.write(data)


def atomic_write_text(path: str | os.PathLike, text: str, encoding: str = "utf-8") -> None:
    """Write ``text`` to ``path`` atomically (see :func:`atomic_write_bytes`)."""
    atomic_write_bytes(path, text.encode(encoding))


# ---------------------------------------------------------------------------- safetensors

# numpy dtypes safetensors stores, with their header names (bfloat16 has no numpy dtype and is
# not written here).
_SAFETENSORS_NAMES = {
    np.dtype(np.float64): "F64", np.dtype(np.float32): "F32", np.dtype(np.float16): "F16",
    np.dtype(np.int64): "I64", np.dtype(np.int32): "I32", np.dtype(np.int16): "I16", np.dtype(np.int8): "I8",
    np.dtype(np.uint64): "U64", np.dtype(np.uint32): "U32", np.dtype(np.uint16): "U16", np.dtype(np.uint8): "U8",
    np.dtype(np.bool_): "BOOL",
}
_HEADER_DTYPE_SIZES = {
    "F64": 8, "F32": 4, "F16": 2, "BF16": 2, "I64": 8, "I32": 4, "I16": 2, "I8": 1,
    "U64": 8, "U32": 4, "U16": 2, "U8": 1, "BOOL": 1, "F8_E4M3": 1, "F8_E5M2": 1,
}


def _import_safetensors_numpy():
    try:
        import safetensors.numpy as stnp
    except ImportError as e:  # a declared dependency, but say how to fix a broken install
        raise ImportError("femtogpt checkpoints need the `safetensors` package: "
                          "pip install safetensors") from e
    return stnp


def save_safetensors(path: str | os.PathLike, tensors: Mapping[str, Any],
                     metadata: Mapping[str, str] | None = None) -> None:
    """Write ``tensors`` (name -> array) to a safetensors file, atomically.

    Arrays are stored bit-exactly in their own dtype, in C order and little-endian; an array that
    is neither (a transposed view, say) is converted piece by piece as it is written (see
    _write_array), never copied whole. ``metadata`` is a str -> str mapping kept in the file's header."""
    arrays: dict[str, np.ndarray] = {}
    for name, value in tensors.items():
        if not isinstance(name, str):
            raise TypeError(f"tensor names must be str; got {name!r} ({type(name).__name__})")
        arr = np.asarray(value)
        if arr.dtype.newbyteorder("=") not in _SAFETENSORS_NAMES:
            raise TypeError(f"tensor {name!r} has dtype {arr.dtype}, which safetensors cannot "
                            f"store; use a float, int, uint or bool dtype")
        arrays[name] = arr
    meta = None
    if metadata is not None:
        meta = {}
        for k, v in metadata.items():
            if not isinstance(k, str) or not isinstance(v, str):
                raise TypeError(f"safetensors metadata must map str to str; got {k!r}: "
                                f"{type(v).__name__} (json.dumps it first)")
            meta[k] = v
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        _write_safetensors(f, arrays, meta)


def _write_safetensors(f, arrays: dict[str, np.ndarray], metadata: dict[str, str] | None) -> None:
    """The safetensors layout: an 8-byte little-endian header length, the JSON header (name ->
    dtype, shape, byte offsets; padded with spaces to a multiple of 8), then each tensor's bytes,
    in header order, C order and little-endian. Written tensor by tensor from the arrays themselves:
    safetensors.numpy.save_file first copies every array into bytes, which doubled a checkpoint's
    memory for a moment (the small preset's training state is 86 MB of AdamW moments). An array
    not already in the file's layout is converted in chunks of about _CHUNK_BYTES."""
    header: dict[str, Any] = {}
    offset = 0
    for name, arr in arrays.items():
        header[name] = {"dtype": _SAFETENSORS_NAMES[arr.dtype.newbyteorder("=")], "shape": list(arr.shape),
                        "data_offsets": [offset, offset + arr.nbytes]}
        offset += arr.nbytes
    if metadata is not None:
        header["__metadata__"] = metadata
    text = json.dumps(header, separators=(",", ":")).encode("utf-8")
    text += b" " * (-len(text) % 8)
    f.write(struct.pack("<Q", len(text)))
    f.write(text)
    for arr in arrays.values():
        _write_array(f, arr)


_CHUNK_BYTES = 1 << 16


def _write_array(f, arr: np.ndarray) -> None:
    """arr's bytes in C order, little-endian: as they are when they already are, else converted
    about _CHUNK_BYTES at a time (runs of rows, or one row at a time, recursively, when a row is
    bigger than that)."""
    little = arr.dtype.newbyteorder("<")
    if arr.flags.c_contiguous and arr.dtype == little:
        f.write(arr.reshape(-1).view(np.uint8).data)
    elif arr.ndim == 0 or arr.nbytes <= _CHUNK_BYTES:
        f.write(np.ascontiguousarray(arr, dtype=little).reshape(-1).view(np.uint8).data)
    else:
        row_bytes = arr[0].nbytes
        if row_bytes > _CHUNK_BYTES and arr.ndim > 1:
            for row in arr:
                _write_array(f, row)
            return
        step = max(1, _CHUNK_BYTES // max(1, row_bytes))
        for i in range(0, len(arr), step):
            f.write(np.ascontiguousarray(arr[i:i + step], dtype=little).reshape(-1).view(np.uint8).data)


def _check_safetensors_layout(path: Path) -> dict:
    """Read and validate the header of a safetensors file; return the parsed header.

    Gives the CheckpointError a precise reason (truncated, bad JSON, offsets outside the
    file) instead of the library's terse one."""
    size = path.stat().st_size
    with open(path, "rb") as f:
        head = f.read(8)
        if len(head) < 8:
            raise CheckpointError(f"{path}: not a safetensors file: it is {size} bytes, too short "
                                  f"for the 8-byte header length (truncated or empty?)")
        (header_len,) = struct.unpack("<Q", head)
        if header_len > size - 8:
            raise CheckpointError(f"{path}: truncated or not a safetensors file: the header "
                                  f"claims {header_len} bytes but only {size - 8} follow")
        raw = f.read(header_len)
    try:
        header = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise CheckpointError(f"{path}: corrupt safetensors header (not valid UTF-8 JSON: "
                              f"{e})") from None
    except RecursionError:
        raise CheckpointError(f"{path}: corrupt safetensors header (JSON nested too deeply)") from None
    if not isinstance(header, dict):
        raise CheckpointError(f"{path}: corrupt safetensors header (a JSON "
                              f"{type(header).__name__}, expected an object)")
    data_size = size - 8 - header_len
    for name, info in header.items():
        if name == "__metadata__":
            continue
        try:
            begin, end = info["data_offsets"]
            shape = info["shape"]
            if not all(_is_count(v) for v in (begin, end, *shape)) or begin > end:
                raise ValueError("offsets and sizes must be integers >= 0")
            nbytes = int(np.prod(shape, dtype=np.int64)) * _HEADER_DTYPE_SIZES[info["dtype"]]
        except (KeyError, TypeError, ValueError):
            raise CheckpointError(f"{path}: corrupt safetensors header: entry {name!r} is "
                                  f"{_abbrev_repr(info)}") from None
        if end > data_size:
            raise CheckpointError(f"{path}: truncated: tensor {name!r} ends at byte {end} of "
                                  f"the data section, which has only {data_size} bytes")
        if end - begin != nbytes:
            raise CheckpointError(f"{path}: corrupt safetensors header: tensor {name!r} of "
                                  f"{info['dtype']} {info['shape']} needs {nbytes} bytes but "
                                  f"its offsets span {end - begin}")
    return header


def _is_count(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and v >= 0


def _abbrev_repr(v: Any, limit: int = 200) -> str:
    text = repr(v)
    return text if len(text) <= limit else text[:limit] + "..."


def load_safetensors(path: str | os.PathLike) -> tuple[dict[str, np.ndarray], dict[str, str]]:
    """Read a safetensors file: ``(tensors, metadata)``; ``metadata`` is ``{}`` if absent.

    Raises FileNotFoundError naming a missing file and CheckpointError (a ValueError)
    naming the file and the problem when it is truncated or corrupt."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"checkpoint file {path} does not exist")
    if path.is_dir():
        raise IsADirectoryError(f"{path} is a directory; expected a .safetensors file")
    if not path.is_file():  # a FIFO or a device (/dev/zero): no size to check, reads that block or never end
        raise CheckpointError(f"{path} is not a regular file; expected a .safetensors file")
    _import_safetensors_numpy()
    from safetensors import SafetensorError, safe_open

    header = _check_safetensors_layout(path)
    if header.get("__metadata__") is not None and not isinstance(header["__metadata__"], dict):
        raise CheckpointError(f"{path}: corrupt safetensors header: __metadata__ is "
                              f"{header['__metadata__']!r}")
    try:
        with safe_open(path, framework="np") as f:
            metadata = dict(f.metadata() or {})
            tensors = {name: f.get_tensor(name) for name in f.keys()}
    except (SafetensorError, ValueError, TypeError, OSError) as e:
        raise CheckpointError(f"{path}: cannot read safetensors file: {e}") from None
    return tensors, metadata


# ---------------------------------------------------------------------------- JSON

def save_json(path: str | os.PathLike, obj: Any, indent: int = 2) -> None:
    """Write ``obj`` as JSON to ``path``, atomically. Raises TypeError (before touching
    the file) if ``obj`` is not JSON-serializable."""
    try:
        text = json.dumps(obj, indent=indent)
    except (TypeError, ValueError) as e:
        raise TypeError(f"cannot write {path} as JSON: {e}") from None
    atomic_write_text(path, text + "\n")


def check_directory(path: str | os.PathLike, what: str) -> None:
    """FileNotFoundError or NotADirectoryError (both OSErrors) unless ``path`` is a directory,
    naming it as ``what`` and saying what it is instead."""
    if not os.path.exists(path):
        raise FileNotFoundError(f"{what} {str(path)!r} does not exist")
    if not os.path.isdir(path):
        kind = "a file" if os.path.isfile(path) else "not a regular file or directory"
        raise NotADirectoryError(f"{what} {str(path)!r} is {kind}, not a directory")


def load_json(path: str | os.PathLike) -> Any:
    """Read a JSON file; FileNotFoundError naming a missing file, CheckpointError for
    one that is not valid JSON."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"JSON file {path} does not exist")
    if not path.is_file():  # a FIFO would block the read, /dev/zero never end it
        kind = "a directory" if path.is_dir() else "not a regular file"
        raise CheckpointError(f"{path} is {kind}: expected a JSON file")
    try:
        raw = path.read_bytes()
        return json.loads(raw.decode("utf-8"))
    except UnicodeDecodeError as e:
        raise CheckpointError(f"{path}: not a UTF-8 JSON file ({e})") from None
    except json.JSONDecodeError as e:
        raise CheckpointError(f"{path}: not valid JSON: {e.msg} at line {e.lineno} column "
                              f"{e.colno}" + (" (file is empty)" if not raw.strip() else "")
                              ) from None
    except RecursionError:
        raise CheckpointError(f"{path}: not a usable JSON file: nested too deeply") from None


def load_json_object(path: str | os.PathLike) -> dict:
    """load_json for a file that must hold a JSON object (config.json, train_config.json, ...):
    CheckpointError naming the file for a list, a number or null."""
    d = load_json(path)
    if not isinstance(d, dict):
        raise CheckpointError(f"{path}: expected a JSON object, got {type(d).__name__}")
    return d


# ---------------------------------------------------------------------------- Hugging Face GPT-2

def _config_json(cfg_json: Any) -> tuple[dict, str]:
    """Accept a dict, a JSON string, a config.json path or a directory holding one."""
    if isinstance(cfg_json, Mapping):
        return dict(cfg_json), "config"
    if isinstance(cfg_json, str) and cfg_json.lstrip().startswith("{"):
        try:
            return json.loads(cfg_json), "config"
        except (json.JSONDecodeError, RecursionError) as e:
            raise CheckpointError(f"config is not valid JSON: {e}") from None
    if isinstance(cfg_json, (str, os.PathLike)):
        p = Path(cfg_json)
        if p.is_dir():
            p = p / "config.json"
        return load_json_object(p), str(p)
    raise TypeError(f"expected a config dict, JSON string or path; got {type(cfg_json).__name__}")


def hf_gpt2_config_to_dict(cfg_json: Any) -> dict:
    """Map a Hugging Face GPT-2 ``config.json`` (dict, JSON text, file or directory) to
    femtogpt's config: ``dict(vocab_size, block_size, n_layer, n_head, n_embd, bias=True)``.

    block_size comes from ``n_positions`` (or the older ``n_ctx``). A missing key raises
    CheckpointError naming it."""
    cfg, where = _config_json(cfg_json)

    def get(key: str, *alternatives: str) -> int:
        for k in (key, *alternatives):
            if k in cfg:
                v = cfg[k]
                if isinstance(v, bool) or not isinstance(v, int) or v <= 0:
                    raise CheckpointError(f"{where}: {k} must be a positive integer; got {v!r}")
                return v
        also = "".join(f" or {a!r}" for a in alternatives)
        raise CheckpointError(f"{where}: missing key {key!r}{also} (is this a GPT-2 config.json?)")

    out = dict(
        vocab_size=get("vocab_size"),
        block_size=get("n_positions", "n_ctx"),
        n_layer=get("n_layer"),
        n_head=get("n_head"),
        n_embd=get("n_embd"),
        bias=True,
    )
    if out["n_embd"] % out["n_head"]:
        raise CheckpointError(f"{where}: n_embd={out['n_embd']} is not divisible by "
                              f"n_head={out['n_head']}")
    return out


def dict_to_hf_gpt2_config(cfg: Mapping[str, Any]) -> dict:
    """The inverse of :func:`hf_gpt2_config_to_dict`: a config.json dict that Hugging Face
    ``transformers`` loads as ``GPT2LMHeadModel`` (GELU tanh approximation, LayerNorm
    epsilon 1e-5, tied embeddings)."""
    return {
        "architectures": ["GPT2LMHeadModel"],
        "model_type": "gpt2",
        "activation_function": "gelu_new",
        "layer_norm_epsilon": 1e-5,
        "vocab_size": int(cfg["vocab_size"]),
        "n_positions": int(cfg["block_size"]),
        "n_ctx": int(cfg["block_size"]),
        "n_layer": int(cfg["n_layer"]),
        "n_head": int(cfg["n_head"]),
        "n_embd": int(cfg["n_embd"]),
        "tie_word_embeddings": True,
    }


def normalize_hf_state_dict(tensors: Mapping[str, Any]) -> dict:
    """Hugging Face GPT-2 tensor names -> femtogpt's: strip a leading ``transformer.``,
    drop the attention mask buffers (``attn.bias``, ``attn.masked_bias``) and the tied
    ``lm_head.weight``. Layouts are unchanged (Conv1D: c_attn.weight is (C, 3C))."""
    out: dict = {}
    for name, value in tensors.items():
        short = name[len("transformer."):] if name.startswith("transformer.") else name
        if short.endswith((".attn.bias", ".attn.masked_bias")) or short == "lm_head.weight":
            continue
        if short in out:
            raise CheckpointError(f"tensor {short!r} appears twice (with and without the "
                                  f"'transformer.' prefix)")
        out[short] = value
    if "lm_head.weight" in tensors and "wte.weight" in out:
        lm, wte = np.asarray(tensors["lm_head.weight"]), np.asarray(out["wte.weight"])
        if lm.shape != wte.shape or not np.array_equal(lm, wte):
            raise CheckpointError("lm_head.weight differs from wte.weight: femtogpt ties the "
                                  "output projection to the token embedding")
    return out


def gpt2_param_shapes(vocab_size: int, block_size: int, n_layer: int, n_embd: int,
                      bias: bool = True, **_ignored: Any) -> dict[str, tuple[int, ...]]:
    """Name -> shape of every GPT-2 parameter in the Hugging Face convention (Conv1D
    weights stored (in, out)). Takes a config dict as keywords (n_head etc. ignored)."""
    C = n_embd
    shapes: dict[str, tuple[int, ...]] = {"wte.weight": (vocab_size, C), "wpe.weight": (block_size, C)}
    for i in range(n_layer):
        p = f"h.{i}."
        layer = {
            "ln_1.weight": (C,), "ln_1.bias": (C,),
            "attn.c_attn.weight": (C, 3 * C), "attn.c_attn.bias": (3 * C,),
            "attn.c_proj.weight": (C, C), "attn.c_proj.bias": (C,),
            "ln_2.weight": (C,), "ln_2.bias": (C,),
            "mlp.c_fc.weight": (C, 4 * C), "mlp.c_fc.bias": (4 * C,),
            "mlp.c_proj.weight": (4 * C, C), "mlp.c_proj.bias": (C,),
        }
        for k, s in layer.items():
            if bias or not k.endswith(".bias"):
                shapes[p + k] = s
    shapes["ln_f.weight"] = (C,)
    if bias:
        shapes["ln_f.bias"] = (C,)
    return shapes


def validate_gpt2_state_dict(tensors: Mapping[str, Any], config: Mapping[str, Any],
                             where: str = "checkpoint") -> None:
    """Raise CheckpointError listing missing, unexpected and mis-shaped tensors of a
    (normalized) GPT-2 state dict against ``config`` (femtogpt's config dict)."""
    layers = {name.split(".")[1] for name in tensors if name.startswith("h.")}
    if config["n_layer"] > len(layers):  # say so without listing (or making) a huge config's names
        raise CheckpointError(f"{where} does not match the config {dict(config)}: it holds "
                              f"{len(layers)} layers, the config has n_layer={config['n_layer']}")
    expected = gpt2_param_shapes(**config)
    missing = [k for k in expected if k not in tensors]
    unexpected = [k for k in tensors if k not in expected]
    wrong = [f"{k}: {tuple(np.shape(tensors[k]))} (expected {expected[k]})"
             for k in expected if k in tensors and tuple(np.shape(tensors[k])) != expected[k]]
    problems = []
    if missing:
        problems.append(f"missing {_abbrev(missing)}")
    if unexpected:
        problems.append(f"unexpected {_abbrev(unexpected)}")
    if wrong:
        problems.append(f"wrong shapes {_abbrev(wrong)}")
    if problems:
        raise CheckpointError(f"{where} does not match the config {dict(config)}: "
                              + "; ".join(problems))


def _abbrev(items: list[str], limit: int = 8) -> str:
    shown = ", ".join(items[:limit])
    return shown + (f", ... ({len(items)} in all)" if len(items) > limit else "")


def is_hf_gpt2_dir(path: str | os.PathLike) -> bool:
    """True if ``path`` is a directory in Hugging Face's GPT-2 layout: a config.json with
    model_type "gpt2" (or a GPT2* architecture) and a model.safetensors. Never raises."""
    try:
        p = Path(path)
        if not (p.is_dir() and (p / "model.safetensors").is_file()):
            return False
        cfg = json.loads((p / "config.json").read_text(encoding="utf-8"))
        if not isinstance(cfg, dict):
            return False
        archs = cfg.get("architectures") or []
        return cfg.get("model_type") == "gpt2" or any(
            isinstance(a, str) and a.startswith("GPT2") for a in archs)
    except (OSError, ValueError, TypeError, RecursionError):
        return False
