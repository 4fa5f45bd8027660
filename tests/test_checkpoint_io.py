"""Checkpoint files: atomic writes, safetensors/JSON round trips and errors, HF GPT-2 names."""

import json
import os
import struct

import numpy as np
import pytest

import femtogpt.checkpoint as ckpt
from femtogpt.checkpoint import (
    CheckpointError,
    atomic_write_bytes,
    atomic_write_text,
    check_directory,
    dict_to_hf_gpt2_config,
    gpt2_param_shapes,
    hf_gpt2_config_to_dict,
    is_hf_gpt2_dir,
    load_json,
    load_json_object,
    load_safetensors,
    normalize_hf_state_dict,
    save_json,
    save_safetensors,
    validate_gpt2_state_dict,
)

# GPT-2 small's config.json as Hugging Face publishes it (abridged to the keys that matter).
GPT2_CONFIG = {
    "activation_function": "gelu_new", "architectures": ["GPT2LMHeadModel"],
    "attn_pdrop": 0.1, "bos_token_id": 50256, "embd_pdrop": 0.1, "eos_token_id": 50256,
    "layer_norm_epsilon": 1e-05, "model_type": "gpt2", "n_ctx": 1024, "n_embd": 768,
    "n_head": 12, "n_layer": 12, "n_positions": 1024, "resid_pdrop": 0.1, "vocab_size": 50257,
}


def leftovers(directory):
    return [p.name for p in directory.iterdir() if p.name.endswith(".tmp")]


# ---------------------------------------------------------------------------- atomic writes

def test_atomic_write_round_trip(tmp_path):
    p = tmp_path / "f.bin"
    atomic_write_bytes(p, b"\x00\x01hello")
    assert p.read_bytes() == b"\x00\x01hello"
    atomic_write_text(p, "héllo\n")
    assert p.read_text(encoding="utf-8") == "héllo\n"
    assert leftovers(tmp_path) == []
    assert p.stat().st_mode & 0o777 == 0o666 & ~ckpt._umask


def test_atomic_write_keeps_mode_of_existing_file(tmp_path):
    p = tmp_path / "f.txt"
    p.write_text("old")
    os.chmod(p, 0o640)
    atomic_write_text(p, "new")
    assert p.read_text() == "new" and p.stat().st_mode & 0o777 == 0o640


def test_atomic_write_failure_keeps_old_file(tmp_path, monkeypatch):
    p = tmp_path / "state.json"
    p.write_text("old contents")

    def failing_fsync(fd):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(ckpt.os, "fsync", failing_fsync)  # fails after the bytes are written
    with pytest.raises(OSError, match="No space"):
        atomic_write_text(p, "new contents that never land")
    assert p.read_text() == "old contents"
    assert leftovers(tmp_path) == []


def test_atomic_write_failure_midway_through_writer(tmp_path, monkeypatch):
    p = tmp_path / "model.safetensors"
    save_safetensors(p, {"w": np.arange(6, dtype=np.float32)})
    before = p.read_bytes()

    def half_then_fail(f, arrays, metadata):
        f.write(b"\x10\x00\x00\x00\x00\x00\x00\x00{partial")
        raise KeyboardInterrupt  # even an interrupt must not leave a half-written file

    monkeypatch.setattr(ckpt, "_write_safetensors", half_then_fail)
    with pytest.raises(KeyboardInterrupt):
        save_safetensors(p, {"w": np.zeros(1000, dtype=np.float32)})
    assert p.read_bytes() == before
    assert leftovers(tmp_path) == []


def test_staged_writes_rename_together_or_not_at_all(tmp_path):
    save_json(tmp_path / "a.json", {"v": 1})
    save_json(tmp_path / "b.json", {"v": 1})
    with pytest.raises(RuntimeError, match="interrupted"):
        with ckpt.staged_writes():
            save_json(tmp_path / "a.json", {"v": 2})
            assert load_json(tmp_path / "a.json") == {"v": 1}  # written in full, not yet renamed
            raise RuntimeError("interrupted before b.json")
    assert load_json(tmp_path / "a.json") == {"v": 1} and sorted(os.listdir(tmp_path)) == ["a.json", "b.json"]
    with ckpt.staged_writes():
        save_json(tmp_path / "a.json", {"v": 3})
        save_safetensors(tmp_path / "c.safetensors", {"w": np.arange(3, dtype=np.float32)})
        assert not (tmp_path / "c.safetensors").exists()
    assert load_json(tmp_path / "a.json") == {"v": 3} and load_safetensors(tmp_path / "c.safetensors")[0]["w"][2] == 2
    assert sorted(os.listdir(tmp_path)) == ["a.json", "b.json", "c.safetensors"]
    save_json(tmp_path / "b.json", {"v": 4})  # outside: renamed at once again
    assert load_json(tmp_path / "b.json") == {"v": 4}


def test_json_and_safetensors_that_are_not_regular_files(tmp_path):
    """A FIFO would block the read and /dev/zero never end it: both are refused before reading."""
    from child_process import deadline

    fifo = tmp_path / "config.json"
    os.mkfifo(fifo)
    with deadline(20), pytest.raises(ckpt.CheckpointError, match="not a regular file"):
        load_json(fifo)  # the old code blocked in open() for ever
    zero = tmp_path / "model.safetensors"
    zero.symlink_to("/dev/zero")
    with deadline(20), pytest.raises(ckpt.CheckpointError, match="not a regular file"):
        load_safetensors(zero)
    (tmp_path / "d.json").mkdir()
    with pytest.raises(ckpt.CheckpointError, match="is a directory"):
        load_json(tmp_path / "d.json")


def test_atomic_write_missing_directory(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        atomic_write_text(tmp_path / "nope" / "f.txt", "x")


# ---------------------------------------------------------------------------- safetensors

def test_safetensors_round_trip_bit_exact(tmp_path):
    rng = np.random.default_rng(0)
    special = np.array([np.nan, -np.inf, np.inf, -0.0, 1e-45, 3.4e38], dtype=np.float32)
    tensors = {
        "wte.weight": rng.standard_normal((13, 7)).astype(np.float32),
        "h.0.attn.c_attn.weight": rng.standard_normal((7, 21)),  # float64
        "special": special,
        "step": np.array(12345, dtype=np.int64),  # 0-d
        "ids": rng.integers(0, 2**16, size=11).astype(np.uint16),
        "mask": np.array([True, False, True]),
        "empty": np.zeros((0, 3), dtype=np.float32),
        "strided": rng.standard_normal((6, 8)).astype(np.float32)[:, ::2],  # not contiguous
    }
    meta = {"format": "femtogpt", "config": json.dumps({"n_layer": 1})}
    p = tmp_path / "model.safetensors"
    save_safetensors(p, tensors, meta)
    loaded, meta2 = load_safetensors(p)
    assert meta2 == meta
    assert set(loaded) == set(tensors)
    for k, v in tensors.items():
        assert loaded[k].dtype == v.dtype and loaded[k].shape == v.shape, k
        assert np.ascontiguousarray(v).tobytes() == loaded[k].tobytes(), k
    assert leftovers(tmp_path) == []
    _, no_meta = load_safetensors(save_then(tmp_path / "b.safetensors", {"a": np.ones(2)}))
    assert no_meta == {}


def save_then(path, tensors, meta=None):
    save_safetensors(path, tensors, meta)
    return path


def test_save_safetensors_rejects_bad_input(tmp_path):
    p = tmp_path / "x.safetensors"
    with pytest.raises(TypeError, match="metadata"):
        save_safetensors(p, {"a": np.ones(2)}, {"step": 3})
    with pytest.raises(TypeError, match="dtype"):
        save_safetensors(p, {"a": np.array(["x"], dtype=object)})
    with pytest.raises(TypeError, match="names"):
        save_safetensors(p, {1: np.ones(2)})
    assert not p.exists() and leftovers(tmp_path) == []


def test_load_safetensors_missing(tmp_path):
    with pytest.raises(FileNotFoundError, match="model.safetensors"):
        load_safetensors(tmp_path / "model.safetensors")
    with pytest.raises(IsADirectoryError):
        load_safetensors(tmp_path)


@pytest.fixture
def good_file(tmp_path):
    p = tmp_path / "good.safetensors"
    save_safetensors(p, {"a": np.arange(100, dtype=np.float32), "b": np.ones((4, 4))},
                     {"k": "v"})
    return p


@pytest.mark.parametrize("cut", [0, 5, 8, 20, -1, -100])
def test_truncated_safetensors(tmp_path, good_file, cut):
    raw = good_file.read_bytes()
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(raw[:cut] if cut >= 0 else raw[:len(raw) + cut])
    with pytest.raises(CheckpointError, match="bad.safetensors.*(truncated|too short)"):
        load_safetensors(bad)


def test_corrupt_safetensors(tmp_path, good_file):
    raw = good_file.read_bytes()
    (header_len,) = struct.unpack("<Q", raw[:8])
    bad = tmp_path / "bad.safetensors"

    bad.write_bytes(raw[:8] + b"#" + raw[9:])  # header is no longer JSON
    with pytest.raises(CheckpointError, match="bad.safetensors: corrupt safetensors header"):
        load_safetensors(bad)

    bad.write_bytes(struct.pack("<Q", 10**12) + raw[8:])  # absurd header length
    with pytest.raises(CheckpointError, match="bad.safetensors: truncated"):
        load_safetensors(bad)

    header = json.loads(raw[8:8 + header_len])
    header["a"]["shape"] = [101]  # offsets no longer match the shape
    hb = json.dumps(header).encode()
    bad.write_bytes(struct.pack("<Q", len(hb)) + hb + raw[8 + header_len:])
    with pytest.raises(CheckpointError, match="'a'.*needs 404 bytes"):
        load_safetensors(bad)

    header = json.loads(raw[8:8 + header_len])
    header["a"]["dtype"] = "Q99"
    hb = json.dumps(header).encode()
    bad.write_bytes(struct.pack("<Q", len(hb)) + hb + raw[8 + header_len:])
    with pytest.raises(CheckpointError, match="bad.safetensors"):
        load_safetensors(bad)

    bad.write_bytes(b"PK\x03\x04 this is a zip file, not safetensors" * 4)
    with pytest.raises(CheckpointError, match="bad.safetensors"):
        load_safetensors(bad)
    assert issubclass(CheckpointError, ValueError)


def _with_header(raw: bytes, edit) -> bytes:
    """The safetensors file raw with its JSON header changed by edit(header) (the data unchanged)."""
    (header_len,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8:8 + header_len])
    edit(header)
    hb = json.dumps(header).encode()
    return struct.pack("<Q", len(hb)) + hb + raw[8 + header_len:]


@pytest.mark.parametrize("edit", [
    lambda h: h["a"].update(data_offsets=[str(v) for v in h["a"]["data_offsets"]]),
    lambda h: h["a"].update(data_offsets=[True, 400]),
    lambda h: h["a"].update(shape=["100"]),
    lambda h: h["a"].update(shape=[-100]),
    lambda h: h.update(a=[1, 2]),
], ids=["str-offsets", "bool-offset", "str-shape", "negative-shape", "list-entry"])
def test_safetensors_header_entries_of_the_wrong_types(tmp_path, good_file, edit):
    """data_offsets ["0", "400"] raised a TypeError from a comparison of str and int."""
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(_with_header(good_file.read_bytes(), edit))
    with pytest.raises(CheckpointError, match="bad.safetensors: corrupt safetensors header: entry 'a'"):
        load_safetensors(bad)


def test_deeply_nested_json_is_a_checkpoint_error(tmp_path, good_file):
    """json raised RecursionError (a traceback from the CLI) for a header or file nested too deeply."""
    deep = "[" * 100_000 + "]" * 100_000
    bad = tmp_path / "bad.safetensors"
    hb = deep.encode()
    bad.write_bytes(struct.pack("<Q", len(hb)) + hb)
    with pytest.raises(CheckpointError, match="bad.safetensors: corrupt safetensors header .*nested too deeply"):
        load_safetensors(bad)
    p = tmp_path / "config.json"
    p.write_text(deep)
    with pytest.raises(CheckpointError, match="config.json: .*nested too deeply"):
        load_json(p)
    assert not is_hf_gpt2_dir(tmp_path)


@pytest.mark.parametrize("text", ["[]", "5", "null", '"config"'])
def test_json_files_that_must_hold_an_object(tmp_path, text):
    p = tmp_path / "config.json"
    p.write_text(text)
    with pytest.raises(CheckpointError, match="config.json: expected a JSON object, got"):
        load_json_object(p)
    p.write_text('{"a": 1}')
    assert load_json_object(p) == {"a": 1}


def test_check_directory(tmp_path):
    (tmp_path / "file").write_text("x")
    check_directory(tmp_path, "run directory")
    with pytest.raises(FileNotFoundError, match="run directory '.*nothing' does not exist"):
        check_directory(tmp_path / "nothing", "run directory")
    with pytest.raises(NotADirectoryError, match="run directory '.*file' is a file, not a directory"):
        check_directory(tmp_path / "file", "run directory")


# ---------------------------------------------------------------------------- JSON

def test_json_round_trip_and_errors(tmp_path):
    p = tmp_path / "state.json"
    obj = {"step": 3, "lr": 1e-3, "rng": {"state": 2**127 + 5}, "name": "héllo", "list": [1, 2]}
    save_json(p, obj)
    assert load_json(p) == obj
    assert p.read_text().endswith("\n")
    with pytest.raises(TypeError, match="state.json"):
        save_json(p, {"a": np.ones(2)})
    assert load_json(p) == obj  # untouched by the failed save
    with pytest.raises(FileNotFoundError, match="missing.json"):
        load_json(tmp_path / "missing.json")
    p.write_text('{"step": 3,')
    with pytest.raises(CheckpointError, match="state.json: not valid JSON.*line 1"):
        load_json(p)
    p.write_text("")
    with pytest.raises(CheckpointError, match="empty"):
        load_json(p)


# ---------------------------------------------------------------------------- Hugging Face GPT-2

def test_hf_config_mapping(tmp_path):
    want = dict(vocab_size=50257, block_size=1024, n_layer=12, n_head=12, n_embd=768, bias=True)
    assert hf_gpt2_config_to_dict(GPT2_CONFIG) == want
    assert hf_gpt2_config_to_dict(json.dumps(GPT2_CONFIG)) == want
    save_json(tmp_path / "config.json", GPT2_CONFIG)
    assert hf_gpt2_config_to_dict(tmp_path) == want
    assert hf_gpt2_config_to_dict(tmp_path / "config.json") == want
    old = {k: v for k, v in GPT2_CONFIG.items() if k != "n_positions"}
    assert hf_gpt2_config_to_dict(old)["block_size"] == 1024  # n_ctx fallback
    assert hf_gpt2_config_to_dict(dict_to_hf_gpt2_config(want)) == want


@pytest.mark.parametrize("key", ["vocab_size", "n_embd", "n_layer", "n_head"])
def test_hf_config_missing_key(key):
    cfg = {k: v for k, v in GPT2_CONFIG.items() if k != key}
    with pytest.raises(CheckpointError, match=f"missing key '{key}'"):
        hf_gpt2_config_to_dict(cfg)


def test_hf_config_bad_values():
    cfg = {k: v for k, v in GPT2_CONFIG.items() if k not in ("n_positions", "n_ctx")}
    with pytest.raises(CheckpointError, match="'n_positions' or 'n_ctx'"):
        hf_gpt2_config_to_dict(cfg)
    with pytest.raises(CheckpointError, match="n_head"):
        hf_gpt2_config_to_dict(dict(GPT2_CONFIG, n_head=7))
    with pytest.raises(CheckpointError, match="n_layer must be a positive integer"):
        hf_gpt2_config_to_dict(dict(GPT2_CONFIG, n_layer="12"))


def hf_tensors(V=11, T=5, L=2, C=8, prefix="transformer.", with_buffers=True):
    """A tiny model in Hugging Face GPT2LMHeadModel naming."""
    rng = np.random.default_rng(0)
    shapes = gpt2_param_shapes(V, T, L, C)
    out = {prefix + k: rng.standard_normal(s).astype(np.float32) for k, s in shapes.items()}
    if with_buffers:
        for i in range(L):
            out[f"{prefix}h.{i}.attn.bias"] = np.tril(np.ones((1, 1, T, T), dtype=np.float32))
            out[f"{prefix}h.{i}.attn.masked_bias"] = np.array(-1e4, dtype=np.float32)
        out["lm_head.weight"] = out[prefix + "wte.weight"].copy()
    return out


def test_normalize_hf_state_dict():
    raw = hf_tensors()
    sd = normalize_hf_state_dict(raw)
    cfg = dict(vocab_size=11, block_size=5, n_layer=2, n_head=2, n_embd=8, bias=True)
    validate_gpt2_state_dict(sd, cfg)
    assert "wte.weight" in sd and "h.1.mlp.c_proj.weight" in sd and "ln_f.bias" in sd
    assert sd["h.0.attn.c_attn.weight"].shape == (8, 24)
    assert sd["h.0.mlp.c_fc.weight"].shape == (8, 32)
    assert sd["h.0.mlp.c_proj.weight"].shape == (32, 8)
    assert sd["h.0.attn.c_attn.bias"].shape == (24,)  # kept: not the mask buffer
    assert not any(k.endswith((".attn.bias", ".attn.masked_bias")) for k in sd)
    assert "lm_head.weight" not in sd and not any(k.startswith("transformer.") for k in sd)
    assert sd["wpe.weight"] is raw["transformer.wpe.weight"]  # no copies
    # Names without the prefix (as in HF's GPT2Model files) pass through unchanged.
    assert set(normalize_hf_state_dict(hf_tensors(prefix="", with_buffers=False))) == set(sd)


def test_normalize_hf_state_dict_errors():
    raw = hf_tensors()
    raw["lm_head.weight"] = raw["lm_head.weight"] + 1
    with pytest.raises(CheckpointError, match="lm_head.weight differs"):
        normalize_hf_state_dict(raw)
    raw = hf_tensors()
    raw["wte.weight"] = raw["transformer.wte.weight"]
    with pytest.raises(CheckpointError, match="twice"):
        normalize_hf_state_dict(raw)


def test_validate_gpt2_state_dict_names_problems():
    cfg = dict(vocab_size=11, block_size=5, n_layer=2, n_head=2, n_embd=8, bias=True)
    sd = normalize_hf_state_dict(hf_tensors())
    del sd["h.1.ln_2.weight"]
    sd["extra.weight"] = np.ones(3)
    sd["wpe.weight"] = np.ones((6, 8))
    with pytest.raises(CheckpointError) as e:
        validate_gpt2_state_dict(sd, cfg)
    msg = str(e.value)
    assert "missing h.1.ln_2.weight" in msg and "unexpected extra.weight" in msg
    assert "wpe.weight: (6, 8) (expected (5, 8))" in msg
    no_bias = gpt2_param_shapes(11, 5, 2, 8, bias=False)
    assert not any(k.endswith(".bias") for k in no_bias) and len(no_bias) == 2 + 2 * 6 + 1


def test_is_hf_gpt2_dir(tmp_path):
    assert not is_hf_gpt2_dir(tmp_path)
    assert not is_hf_gpt2_dir(tmp_path / "missing")
    save_safetensors(tmp_path / "model.safetensors", hf_tensors())
    assert not is_hf_gpt2_dir(tmp_path)  # no config.json
    (tmp_path / "config.json").write_text("{broken")
    assert not is_hf_gpt2_dir(tmp_path)
    save_json(tmp_path / "config.json", {"model_type": "llama"})
    assert not is_hf_gpt2_dir(tmp_path)
    save_json(tmp_path / "config.json", GPT2_CONFIG)
    assert is_hf_gpt2_dir(tmp_path)
    assert is_hf_gpt2_dir(str(tmp_path))
    # End to end: the files in that directory become femtogpt names and config.
    tensors, _ = load_safetensors(tmp_path / "model.safetensors")
    sd = normalize_hf_state_dict(tensors)
    validate_gpt2_state_dict(sd, dict(hf_gpt2_config_to_dict(
        dict(GPT2_CONFIG, vocab_size=11, n_positions=5, n_layer=2, n_head=2, n_embd=8))))


@pytest.mark.parametrize("chunk_bytes", [1 << 16, 8])  # 8: every strided or big-endian row its own chunk
def test_our_safetensors_writer_is_read_back_by_the_safetensors_library(tmp_path, monkeypatch, chunk_bytes):
    """save_safetensors writes the format itself (tensor by tensor, no whole-file copy; arrays not in
    the file's layout converted a few rows at a time): the reference reader gets every dtype, 0-d,
    empty, big-endian, strided and transposed arrays, and the metadata back exactly."""
    monkeypatch.setattr(ckpt, "_CHUNK_BYTES", chunk_bytes)
    from safetensors import safe_open
    from safetensors.numpy import load_file

    rng = np.random.default_rng(0)
    tensors = {f"t_{np.dtype(dt).name}": (rng.standard_normal((3, 5)) * 100).astype(dt)
               for dt in (np.float64, np.float32, np.float16, np.int64, np.int32, np.int16, np.int8,
                          np.uint64, np.uint32, np.uint16, np.uint8)}
    tensors["mask"] = rng.random(7) > 0.5
    tensors["scalar"] = np.array(42, dtype=np.int64)
    tensors["empty"] = np.zeros((0, 4), dtype=np.float32)
    tensors["big_endian"] = np.arange(6, dtype=">f4").reshape(2, 3)
    tensors["strided"] = np.arange(20, dtype=np.float32).reshape(4, 5)[:, ::2]
    tensors["transposed"] = rng.standard_normal((7, 3)).astype(np.float32).T
    tensors["big_endian_scalar"] = np.array(3.5, dtype=">f8")
    tensors["big_endian_strided"] = np.arange(24, dtype=">i4").reshape(4, 6)[::2, 1::2]
    # rows wider than a chunk: one row at a time, each in chunks of its (strided) elements
    tensors["wide_rows_fortran"] = np.asfortranarray(rng.standard_normal((2, 20000)))
    tensors["wide_rows_big_endian_3d"] = np.arange(2 * 3 * 9000, dtype=">f4").reshape(2, 3, 9000)
    p = tmp_path / "t.safetensors"
    save_safetensors(p, tensors, metadata={"note": "hello"})
    back = load_file(str(p))
    assert set(back) == set(tensors)
    for name, arr in tensors.items():
        assert back[name].dtype == arr.dtype.newbyteorder("=") and back[name].shape == arr.shape, name
        np.testing.assert_array_equal(back[name], arr)
    with safe_open(str(p), framework="numpy") as f:
        assert f.metadata() == {"note": "hello"}
