"""Data: corpus access, text reading, token caching, and reproducible/resumable batches."""

import json
import os
import shutil
from fractions import Fraction

import numpy as np
import pytest

import femtogpt.data as fdata
from femtogpt.data import (
    TokenDataset,
    bundled_corpus_path,
    load_tokens,
    read_text,
    token_cache_path,
    user_cache_dir,
)
from femtogpt.tokenizer import ByteTokenizer, CharTokenizer


class CountingTokenizer(CharTokenizer):
    """A char tokenizer that counts encode calls (to see whether the cache was used)."""

    calls = 0

    def encode(self, text):
        type(self).calls += 1
        return super().encode(text)


@pytest.fixture
def counting():
    CountingTokenizer.calls = 0
    return CountingTokenizer.from_text("abcdefghijklmnopqrstuvwxyz \n")


@pytest.fixture(autouse=True)
def private_cache(tmp_path, monkeypatch):
    # Never touch the real ~/.cache/femtogpt from tests.
    monkeypatch.setenv("FEMTOGPT_CACHE", str(tmp_path / "user-cache"))


def write(path, text):
    path.write_text(text, encoding="utf-8")
    return path


# ---------------------------------------------------------------------------- corpus / text

def test_bundled_corpus():
    path = bundled_corpus_path()
    assert path.is_file() and path.name == "shakespeare.txt"
    text = read_text(path)
    assert len(text) == 1_151_343 and len(set(text)) == 76
    assert text.startswith("HAMLET")


def test_read_text_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="missing.txt"):
        read_text(tmp_path / "missing.txt")
    (tmp_path / "empty.txt").write_bytes(b"")
    with pytest.raises(ValueError, match="empty"):
        read_text(tmp_path / "empty.txt")
    (tmp_path / "binary.bin").write_bytes(b"ok so far \xff\xfe\x00\x81 then junk")
    with pytest.raises(ValueError, match=r"binary.bin is not UTF-8 text.*0xff.*offset 10"):
        read_text(tmp_path / "binary.bin")
    with pytest.raises(IsADirectoryError):
        read_text(tmp_path)


def test_read_text_utf8_and_bom(tmp_path):
    (tmp_path / "t.txt").write_bytes("\ufeffhé😀\n".encode("utf-8"))
    assert read_text(tmp_path / "t.txt") == "hé😀\n"


TEXTS = {
    "plain": "First Citizen:\nBefore we proceed any further, hear me speak.\n\nAll:\nSpeak, speak.\n" * 7,
    "bom_crlf": "\ufeffline one\r\nline two \r\n\r\n  indented\r\nend",
    "multibyte": "h\u00e9\u00e9\U0001f600 \u2713\nna\u00efve caf\u00e9\n\U0001f600\U0001f600\n" * 5,
    "no_breaks": "one long line without any line break at all " * 20,
    "space_before_breaks": "a \n \n\t\nb\n",
}


@pytest.mark.parametrize("name", sorted(TEXTS))
@pytest.mark.parametrize("read_bytes", [1, 3, 7, 64, 1 << 20])
def test_iter_text_pieces_make_the_text_and_end_before_a_line_break(tmp_path, name, read_bytes):
    path = tmp_path / "t.txt"
    path.write_bytes(TEXTS[name].encode("utf-8"))
    pieces = list(fdata.iter_text(path, read_bytes=read_bytes))
    assert "".join(pieces) == read_text(path) == path.read_bytes().decode("utf-8-sig")
    for piece, following in zip(pieces, pieces[1:]):  # every cut: a non-space, then ASCII whitespace
        assert piece and not piece[-1].isspace() and following[0] in " \t\r\n"
    if len(path.read_bytes()) <= read_bytes:
        assert len(pieces) == 1  # the last block read is never cut


@pytest.mark.parametrize("read_bytes", [1, 2, 3, 5, 1 << 20])
@pytest.mark.parametrize("data", [
    b"ok so far \xff then junk",               # a byte that never starts a character
    "\ufeffbom then ".encode() + b"\x80 bad",   # offsets count the BOM
    "ab\u00e9c".encode()[:3] + b"x\n",           # a character cut short, then more text
    "abc \U0001f600".encode()[:-1],               # a character cut short by the end of the file
    ("line\n" * 4).encode() + b"\xc3\x28",
])
def test_iter_text_names_the_offset_of_invalid_utf8(tmp_path, read_bytes, data):
    path = tmp_path / "bad.txt"
    path.write_bytes(data)
    skip = 3 if data.startswith(b"\xef\xbb\xbf") else 0
    with pytest.raises(UnicodeDecodeError) as want:
        data[skip:].decode("utf-8")
    at = skip + want.value.start  # an offset in the file, BOM included
    with pytest.raises(ValueError, match=rf"bad.txt is not UTF-8 text: byte 0x{data[at]:02x} at "
                                         rf"offset {at} is invalid"):
        list(fdata.iter_text(path, read_bytes=read_bytes))


def test_read_text_of_only_a_bom(tmp_path):
    (tmp_path / "bom.txt").write_bytes(b"\xef\xbb\xbf")
    with pytest.raises(ValueError, match="only a byte-order mark"):
        read_text(tmp_path / "bom.txt")


@pytest.mark.parametrize("kind", ["char", "byte", "bpe"])
def test_tokenizing_piece_by_piece_gives_the_whole_texts_ids(tmp_path, monkeypatch, kind):
    """load_tokens and make_tokenizer read the corpus piece by piece (4 KiB here, so hundreds of
    pieces): the vocabulary, a BPE's merges and the ids are those of the whole text at once."""
    from femtogpt.tokenizer import make_tokenizer

    if kind == "bpe":
        pytest.importorskip("tokenizers")
    text = read_text(bundled_corpus_path())[:300_000] + "\r\nna\u00efve \U0001f600  \n\n"
    path = write(tmp_path / "c.txt", text)
    monkeypatch.setattr(fdata, "PIECE_BYTES", 4096)
    assert len(list(fdata.iter_text(path))) > 50
    vocab = 300 if kind == "bpe" else None
    whole = make_tokenizer(kind, text, vocab_size=vocab)
    pieced = make_tokenizer(kind, fdata.iter_text(path), vocab_size=vocab)
    assert pieced.to_dict() == whole.to_dict()
    assert pieced.encodes_pieces_alike
    ids = load_tokens(path, pieced)
    np.testing.assert_array_equal(ids, whole.encode(text))


def test_a_tokenizer_that_may_not_encode_pieces_alike_gets_the_whole_text(tmp_path, monkeypatch):
    class Whole(CharTokenizer):
        encodes_pieces_alike = False
        texts = []

        def encode(self, text):
            self.texts.append(text)
            return super().encode(text)

    text = "to be\nor not\nto be\n" * 400
    path = write(tmp_path / "c.txt", text)
    monkeypatch.setattr(fdata, "PIECE_BYTES", 64)
    ids = load_tokens(path, Whole.from_text(text))
    assert Whole.texts == [text]
    np.testing.assert_array_equal(ids, CharTokenizer.from_text(text).encode(text))


def test_a_bpe_that_may_encode_pieces_differently_says_so():
    tk = pytest.importorskip("tokenizers")
    from femtogpt.tokenizer import BPETokenizer

    def trained():
        return BPETokenizer.train("hello world\n" * 50, 260)

    assert trained().encodes_pieces_alike
    tok = trained()
    tok.backend.pre_tokenizer = tk.pre_tokenizers.ByteLevel(add_prefix_space=True)  # a space before each piece
    assert not tok.encodes_pieces_alike
    tok = trained()
    tok.backend.add_special_tokens(["<|endoftext|>"])  # as GPT-2's files have: matched as it is
    assert tok.encodes_pieces_alike
    for added in (tk.AddedToken("<sep>", rstrip=True), tk.AddedToken("x\n", special=True)):
        tok = trained()
        tok.backend.add_special_tokens([added])  # takes the whitespace after it / holds some
        assert not tok.encodes_pieces_alike


def test_pieces_are_cut_at_word_boundaries_only(tmp_path, monkeypatch):
    """Lines with trailing spaces cut before the space; whitespace alone is never cut; text with no
    ASCII whitespace is cut at MAX_PIECE_CHARS; _last_cut searches only from where it is told."""
    path = write(tmp_path / "a.txt", "word \n" * 100)
    pieces = list(fdata.iter_text(path, read_bytes=16))
    assert len(pieces) > 10 and all(p.endswith("word") for p in pieces[:-1])
    path = write(tmp_path / "b.txt", " \n\t\r\n" * 100)
    assert list(fdata.iter_text(path, read_bytes=16)) == [" \n\t\r\n" * 100]
    monkeypatch.setattr(fdata, "MAX_PIECE_CHARS", 50)
    path = write(tmp_path / "c.txt", "x" * 200)
    pieces = list(fdata.iter_text(path, read_bytes=16))
    assert "".join(pieces) == "x" * 200 and all(50 <= len(p) < 80 for p in pieces[:-1])
    assert fdata._last_cut("ab cd ef", 0) == 5 and fdata._last_cut("ab cd ef", 6) == 0
    assert fdata._last_cut("ab cd ef", 5) == 5 and fdata._last_cut("  \n  ", 0) == 0


def test_read_text_of_a_pipe(tmp_path):
    """A FIFO (or /dev/stdin) has no size to check: read_text reads it; load_tokens, which reads its
    file twice, says it needs a regular file."""
    import threading

    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    writer = threading.Thread(target=lambda: fifo.write_bytes(b"\xef\xbb\xbfpiped text\n"))
    writer.start()
    assert read_text(fifo) == "piped text\n"
    writer.join()
    with pytest.raises(ValueError, match="not a regular file"):
        load_tokens(fifo, CharTokenizer("abc"))


def test_user_cache_dir(monkeypatch, tmp_path):
    assert user_cache_dir() == tmp_path / "user-cache"
    monkeypatch.delenv("FEMTOGPT_CACHE")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert user_cache_dir() == tmp_path / "xdg" / "femtogpt"


# ---------------------------------------------------------------------------- token cache

def test_load_tokens_caches_next_to_data(tmp_path, counting):
    data = write(tmp_path / "corpus.txt", "hello world\n" * 500)
    ids = load_tokens(data, counting)
    assert counting.calls == 1
    assert isinstance(ids, np.memmap) and ids.dtype == np.uint16 and not ids.flags.writeable
    np.testing.assert_array_equal(ids, counting.encode(read_text(data)))
    counting.calls = 0
    caches = list(tmp_path.glob("corpus.txt.*.tokens.npy"))
    assert len(caches) == 1 and caches[0] == token_cache_path(data, counting)
    assert not list(tmp_path.glob(".*.tmp"))  # no temporary files left behind
    mtime = caches[0].stat().st_mtime_ns

    again = load_tokens(data, counting)
    assert counting.calls == 0  # served from the cache
    assert caches[0].stat().st_mtime_ns == mtime
    np.testing.assert_array_equal(again, ids)


def test_load_tokens_writes_the_cache_once(tmp_path, monkeypatch):
    """The ids go straight into the cache's temporary file, after room for the header: no second
    copy on disk while the text is tokenized (there used to be a scratch .ids file, copied after)."""
    seen = []

    class Watching(CharTokenizer):
        encodes_pieces_alike = True

        def encode(self, text):
            seen.append(sorted(p.name for p in tmp_path.iterdir() if p.name != "corpus.txt"))
            return super().encode(text)

    monkeypatch.setattr(fdata, "PIECE_BYTES", 1000)  # several pieces
    text = "hello world\n" * 500
    data = write(tmp_path / "corpus.txt", text)
    tok = Watching.from_text(text)
    ids = load_tokens(data, tok)
    np.testing.assert_array_equal(ids, tok.encode(text))
    assert len(seen) > 3 and all(len(names) == 1 and names[0].endswith(".tmp") for names in seen[:-1]), seen
    assert [p.name for p in tmp_path.glob("*.npy")] == [token_cache_path(data, tok).name]


@pytest.mark.parametrize("n", [0, 1, 7, 10**12])
def test_npy_header_is_numpys(n, tmp_path):
    """_npy_header writes numpy's own header, and a longer one padded with spaces that np.load reads."""
    import io

    for dtype in (np.dtype(np.uint16), np.dtype(np.uint32)):
        ref = io.BytesIO()
        np.lib.format.write_array_header_1_0(
            ref, {"descr": np.lib.format.dtype_to_descr(dtype), "fortran_order": False, "shape": (n,)})
        assert fdata._npy_header(dtype, n) == ref.getvalue()
    if n < 100:
        f = tmp_path / "a.npy"
        f.write_bytes(fdata._npy_header(np.dtype(np.uint16), n, 192) + np.arange(n, dtype=np.uint16).tobytes())
        np.testing.assert_array_equal(np.load(f, mmap_mode="r"), np.arange(n))
    with pytest.raises(ValueError, match="cannot hold"):
        fdata._npy_header(np.dtype(np.uint16), n, 100)


def test_load_tokens_cache_invalidated_when_file_changes(tmp_path, counting):
    data = write(tmp_path / "corpus.txt", "abc abc abc\n" * 100)
    first = load_tokens(data, counting)
    old_cache = token_cache_path(data, counting)
    write(data, "xyz xyz\n" * 100)
    second = load_tokens(data, counting)
    assert counting.calls == 2
    assert len(second) == 800 and len(first) == 1200
    np.testing.assert_array_equal(second, counting.encode("xyz xyz\n" * 100))
    # The stale cache of the same file and tokenizer is gone.
    assert not old_cache.exists()
    assert len(list(tmp_path.glob("corpus.txt.*.tokens.npy"))) == 1


def test_load_tokens_same_size_edit_keeps_mtime_detection(tmp_path, counting):
    data = write(tmp_path / "corpus.txt", "aaaa\n")
    load_tokens(data, counting)
    st = data.stat()
    write(data, "bbbb\n")
    os.utime(data, ns=(st.st_atime_ns, st.st_mtime_ns))  # same size and mtime, new content
    np.testing.assert_array_equal(load_tokens(data, counting), counting.encode("bbbb\n"))
    assert counting.calls == 3  # 2 loads + the reference encode


def test_load_tokens_cache_per_tokenizer(tmp_path):
    data = write(tmp_path / "corpus.txt", "héllo\n" * 50)
    chars = load_tokens(data, CharTokenizer.from_text(read_text(data)))
    raw = load_tokens(data, ByteTokenizer())
    assert len(chars) == 300 and len(raw) == 350
    assert len(list(tmp_path.glob("corpus.txt.*.tokens.npy"))) == 2


def test_load_tokens_falls_back_to_user_cache(tmp_path, counting, monkeypatch):
    datadir = tmp_path / "site-packages"
    datadir.mkdir()
    data = write(datadir / "corpus.txt", "read only data\n" * 20)
    # We run as root, where chmod does not stop writes: simulate the read-only directory.
    real = fdata._dir_is_writable
    monkeypatch.setattr(fdata, "_dir_is_writable",
                        lambda d: False if d.resolve() == datadir.resolve() else real(d))
    ids = load_tokens(data, counting)
    assert list(datadir.iterdir()) == [data]
    cache = tmp_path / "user-cache"
    assert len(list(cache.glob("corpus.txt.*.tokens.npy"))) == 1
    assert token_cache_path(data, counting).parent == cache
    load_tokens(data, counting)
    assert counting.calls == 1
    np.testing.assert_array_equal(ids, counting.encode("read only data\n" * 20))


def test_load_tokens_explicit_cache_dir(tmp_path, counting):
    data = write(tmp_path / "corpus.txt", "abc\n" * 20)
    load_tokens(data, counting, cache_dir=tmp_path / "mine")
    assert len(list((tmp_path / "mine").glob("*.tokens.npy"))) == 1
    assert not list(tmp_path.glob("*.tokens.npy"))


def test_load_tokens_rebuilds_a_damaged_cache(tmp_path, counting):
    data = write(tmp_path / "corpus.txt", "abc\n" * 20)
    load_tokens(data, counting)
    token_cache_path(data, counting).write_bytes(b"\x93NUMPY garbage")
    np.testing.assert_array_equal(load_tokens(data, counting), counting.encode("abc\n" * 20))
    assert counting.calls == 3


@pytest.mark.parametrize("bad_at", [0, 79])
def test_load_tokens_rebuilds_a_cache_with_ids_outside_the_vocabulary(tmp_path, counting, monkeypatch, bad_at):
    """A cache of the right dtype and length whose ids are >= vocab_size was returned as it was (ids up
    to 60000 for a vocabulary of 28; the model failed later). It is checked a few ids at a time."""
    monkeypatch.setattr(fdata, "READ_BYTES", 16)  # 8 uint16 ids per chunk: the bad one is in the last
    data = write(tmp_path / "corpus.txt", "abc\n" * 20)
    want = load_tokens(data, counting).copy()
    bad = want.copy()
    bad[bad_at] = 60000
    np.save(token_cache_path(data, counting), bad)
    got = load_tokens(data, counting)
    np.testing.assert_array_equal(got, want)
    assert counting.calls == 2 and int(got.max()) < counting.vocab_size
    np.testing.assert_array_equal(np.load(token_cache_path(data, counting)), want)  # rebuilt


def test_load_tokens_unknown_char_and_missing_file(tmp_path):
    data = write(tmp_path / "corpus.txt", "abc!")
    with pytest.raises(ValueError, match="'!'"):
        load_tokens(data, CharTokenizer.from_text("abc"))
    with pytest.raises(FileNotFoundError, match="nothere.txt"):
        load_tokens(tmp_path / "nothere.txt", ByteTokenizer())


def test_load_tokens_bundled_corpus(tmp_path, monkeypatch):
    # A copy stands in for the installed corpus; its directory is "read-only".
    shutil.copy(bundled_corpus_path(), tmp_path / "shakespeare.txt")
    monkeypatch.setattr(fdata, "_dir_is_writable", lambda d: d != tmp_path)
    tok = CharTokenizer.from_text(read_text(tmp_path / "shakespeare.txt"))
    ids = load_tokens(tmp_path / "shakespeare.txt", tok)
    assert ids.shape == (1_151_343,) and ids.dtype == np.uint16
    assert tok.decode(ids[:6]) == "HAMLET"


def test_token_dtype():
    assert fdata._token_dtype(76) == np.uint16
    assert fdata._token_dtype(65536) == np.uint16
    assert fdata._token_dtype(65537) == np.uint32
    assert fdata._token_dtype(50257) == np.uint16


# ---------------------------------------------------------------------------- batches

def make_ids(n=10_000, vocab=50, seed=1):
    return np.random.default_rng(seed).integers(0, vocab, size=n).astype(np.uint16)


def test_batches_shapes_and_shift():
    ids = make_ids()
    ds = TokenDataset(ids, block_size=17, batch_size=5)
    x, y = ds.get_batch("train")
    assert x.shape == y.shape == (5, 17)
    assert x.dtype == y.dtype == np.int64 and type(x) is np.ndarray
    np.testing.assert_array_equal(x[:, 1:], y[:, :-1])
    # Each row is a contiguous window of the train split.
    for row_x, row_y in zip(x, y):
        starts = [i for i in range(9000 - 17) if ids[i] == row_x[0] and
                  np.array_equal(ids[i:i + 17], row_x)]
        assert starts and np.array_equal(ids[starts[0] + 1:starts[0] + 18], row_y)


def test_val_split_is_last_fraction():
    ids = np.arange(1000, dtype=np.int64)
    ds = TokenDataset(ids, block_size=8, batch_size=64, val_fraction=0.1)
    np.testing.assert_array_equal(ds.data["train"], np.arange(900))
    np.testing.assert_array_equal(ds.data["val"], np.arange(900, 1000))
    xv, yv = ds.get_batch("val")
    assert xv.min() >= 900 and yv.max() <= 999
    xt, yt = ds.get_batch("train")
    assert yt.max() <= 899
    np.testing.assert_array_equal(yv - xv, 1)


def test_batches_are_deterministic_and_splits_independent():
    ids = make_ids()
    a = TokenDataset(ids, 16, 4, seed=7)
    b = TokenDataset(ids, 16, 4, seed=7)
    c = TokenDataset(ids, 16, 4, seed=8)
    ta = [a.get_batch("train")[0] for _ in range(5)]
    # b evaluates in between: the train batches must not change.
    tb = []
    for _ in range(5):
        b.get_batch("val")
        tb.append(b.get_batch("train")[0])
    for u, v in zip(ta, tb):
        np.testing.assert_array_equal(u, v)
    assert not np.array_equal(ta[0], c.get_batch("train")[0])


def test_resume_draws_the_uninterrupted_batches():
    ids = make_ids()
    full = TokenDataset(ids, 32, 8, seed=3)
    ref = [full.get_batch("train") for _ in range(10)]
    ref_val = [full.get_batch("val") for _ in range(3)]

    first = TokenDataset(ids, 32, 8, seed=3)
    for _ in range(4):
        first.get_batch("train")
    first.get_batch("val")
    state = json.loads(json.dumps(first.state_dict()))  # survives a JSON file
    assert state["batches_drawn"] == {"train": 4, "val": 1}

    resumed = TokenDataset(ids, 32, 8, seed=999)  # the seed comes from the state
    resumed.load_state_dict(state)
    assert resumed.batches_drawn == {"train": 4, "val": 1}
    for k in range(4, 10):
        x, y = resumed.get_batch("train")
        np.testing.assert_array_equal(x, ref[k][0])
        np.testing.assert_array_equal(y, ref[k][1])
    for k in range(1, 3):
        np.testing.assert_array_equal(resumed.get_batch("val")[0], ref_val[k][0])
    assert resumed.batches_drawn == {"train": 10, "val": 3}


def test_load_state_dict_checks():
    ids = make_ids()
    state = TokenDataset(ids, 32, 8).state_dict()
    other = TokenDataset(ids[:5000], 32, 8)
    with pytest.raises(ValueError, match="n_tokens: saved 10000, now 5000"):
        other.load_state_dict(state)
    other.load_state_dict(state, strict=False)
    with pytest.raises(ValueError, match="not a TokenDataset state"):
        other.load_state_dict({"seed": 0})


def test_too_short_data():
    with pytest.raises(ValueError, match=r"data has 50 tokens; need at least 330 for block_size 32"):
        TokenDataset(np.arange(50), block_size=32, batch_size=4)
    # Exactly enough works; one fewer does not.
    ds = TokenDataset(np.arange(330), block_size=32, batch_size=4)
    assert len(ds.data["val"]) == 33
    ds.get_batch("val")
    with pytest.raises(ValueError, match="need at least 330"):
        TokenDataset(np.arange(329), block_size=32, batch_size=4)
    # Without a validation split only the train split needs block_size + 1.
    ds = TokenDataset(np.arange(33), block_size=32, batch_size=2, val_fraction=0.0)
    x, y = ds.get_batch("train")
    np.testing.assert_array_equal(x[0], np.arange(32))
    with pytest.raises(ValueError, match="no validation split"):
        ds.get_batch("val")


def test_min_tokens_message_is_exact():
    for block, frac in [(1, 0.1), (7, 0.05), (64, 0.1), (5, 0.5), (3, 0.9), (10, 0.0)]:
        ds_need = None
        with pytest.raises(ValueError) as e:
            TokenDataset(np.arange(2), block, 1, val_fraction=frac)
        ds_need = int(str(e.value).split("need at least ")[1].split()[0])
        TokenDataset(np.arange(ds_need), block, 1, val_fraction=frac)
        with pytest.raises(ValueError):
            TokenDataset(np.arange(ds_need - 1), block, 1, val_fraction=frac)


@pytest.mark.parametrize("frac", [1e-300, 5e-324, 1e-12, 0.999999999999, 1 - 2**-53])
def test_min_tokens_of_extreme_fractions_is_quick_and_exact(frac):
    """1e-300 stepped towards 9e300 one token at a time (forever), 5e-324 overflowed, and a fraction
    near 1 stepped down through 1e12 candidates."""
    with pytest.raises(ValueError, match="need at least") as e:
        TokenDataset(np.arange(100), 8, 2, val_fraction=frac)
    need = int(str(e.value).split("need at least ")[1].split()[0])
    if need < 2**62:  # a length-need array of zeros that takes no memory
        TokenDataset(np.broadcast_to(np.int64(0), (need,)), 8, 2, val_fraction=frac)
        with pytest.raises(ValueError, match=f"need at least {need} "):
            TokenDataset(np.broadcast_to(np.int64(0), (need - 1,)), 8, 2, val_fraction=frac)
    else:  # float(need) rounds: n_val is as good as exact
        assert abs(need * Fraction(frac) / 9 - 1) < 1e-15


@pytest.mark.parametrize("kwargs, match", [
    (dict(block_size=0, batch_size=1), "block_size"),
    (dict(block_size=4, batch_size=0), "batch_size"),
    (dict(block_size=4, batch_size=1, val_fraction=1.0), "val_fraction"),
    (dict(block_size=4.5, batch_size=1), "block_size"),
])
def test_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        TokenDataset(np.arange(1000), **kwargs)


def test_bad_ids_and_split():
    with pytest.raises(ValueError, match="1-D"):
        TokenDataset(np.zeros((10, 10), dtype=np.int64), 4, 1)
    with pytest.raises(TypeError, match="integers"):
        TokenDataset(np.zeros(100), 4, 1)
    with pytest.raises(ValueError, match="unknown split"):
        TokenDataset(np.arange(100), 4, 1).get_batch("test")


def test_dataset_from_memmap(tmp_path):
    data = write(tmp_path / "c.txt", "the quick brown fox\n" * 200)
    tok = CharTokenizer.from_text(read_text(data))
    ids = load_tokens(data, tok)
    ds = TokenDataset(ids, 16, 3)
    x, y = ds.get_batch()
    assert x.dtype == np.int64
    assert all(s in "the quick brown fox\n" * 2 for s in map(tok.decode, x))


def test_load_tokens_with_nowhere_to_cache(tmp_path, counting, monkeypatch):
    data = write(tmp_path / "corpus.txt", "abc\n" * 20)
    monkeypatch.setattr(fdata, "_dir_is_writable", lambda d: False)
    ids = load_tokens(data, counting)
    assert ids.dtype == np.uint16 and not isinstance(ids, np.memmap)
    np.testing.assert_array_equal(ids, counting.encode("abc\n" * 20))
    assert list(tmp_path.glob("**/*.npy")) == []


def _disk_full_after_tokenizing(target, path, tokenizer, dtype):
    """_write_cache on a disk that fills up: the text is tokenized, then the write fails."""
    for _ in fdata._encode_pieces(path, tokenizer, dtype):
        pass
    raise OSError(28, "No space left on device")


def test_load_tokens_tokenizes_once_more_when_a_cache_write_fails(tmp_path, counting, monkeypatch):
    """A write that fails partway (disk full) keeps the ids in memory: the places after it get
    them written without tokenizing the corpus again (it used to tokenize once per place tried)."""
    data = write(tmp_path / "corpus.txt", "abc\n" * 20)
    full = (tmp_path / "full", tmp_path)  # cache_dir and the data's directory: both disks full
    real_cache, real_ids = fdata._write_cache, getattr(fdata, "_write_ids", None)

    def write_cache(target, *a):
        return _disk_full_after_tokenizing(target, *a) if target.parent in full else real_cache(target, *a)

    def write_ids(target, ids):
        if target.parent in full:
            raise OSError(28, "No space left on device")
        return real_ids(target, ids)

    monkeypatch.setattr(fdata, "_write_cache", write_cache)
    monkeypatch.setattr(fdata, "_write_ids", write_ids, raising=False)
    ids = load_tokens(data, counting, cache_dir=tmp_path / "full")
    assert counting.calls == 2  # the first place's failed write, then once into memory (was 3: once a place)
    assert isinstance(ids, np.memmap) and os.path.dirname(ids.filename) == str(tmp_path / "user-cache")
    np.testing.assert_array_equal(ids, counting.encode("abc\n" * 20))
    counting.calls = 0
    np.testing.assert_array_equal(load_tokens(data, counting), ids)
    assert counting.calls == 0  # served from the cache _write_ids wrote


def test_load_tokens_past_a_cache_dir_it_cannot_make(tmp_path, counting, monkeypatch):
    """A place that fails before any tokenizing (its directory cannot be made) costs nothing: the
    next place's cache is written a piece at a time, with no copy of the ids in memory."""
    data = write(tmp_path / "corpus.txt", "abc\n" * 20)
    write(tmp_path / "a-file", "")
    real, in_memory = getattr(fdata, "_encode_all", None), []
    monkeypatch.setattr(fdata, "_encode_all", lambda *a: in_memory.append(a) or real(*a), raising=False)
    ids = load_tokens(data, counting, cache_dir=tmp_path / "a-file" / "cache")
    assert counting.calls == 1 and not in_memory
    assert isinstance(ids, np.memmap) and os.path.dirname(ids.filename) == str(tmp_path)
    np.testing.assert_array_equal(ids, counting.encode("abc\n" * 20))


def test_load_tokens_when_every_cache_write_fails(tmp_path, counting, monkeypatch):
    data = write(tmp_path / "corpus.txt", "abc\n" * 20)
    monkeypatch.setattr(fdata, "_write_cache", _disk_full_after_tokenizing)
    def disk_full(target, ids):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(fdata, "_write_ids", disk_full, raising=False)  # (raising=False: the old code had none)
    ids = load_tokens(data, counting, cache_dir=tmp_path / "mine")  # three places to try
    assert counting.calls == 2  # the first place's write, then into memory (was 3 + 1)
    assert ids.dtype == np.uint16 and not isinstance(ids, np.memmap) and not ids.flags.writeable
    np.testing.assert_array_equal(ids, counting.encode("abc\n" * 20))


def test_load_tokens_with_bpe(tmp_path):
    pytest.importorskip("tokenizers")
    from femtogpt.tokenizer import BPETokenizer

    text = read_text(bundled_corpus_path())[:50_000] + "ünïcode ✓\n"
    data = write(tmp_path / "c.txt", text)
    tok = BPETokenizer.train(text, 300)
    ids = load_tokens(data, tok)
    assert ids.dtype == np.uint16 and tok.decode(ids) == text
    again = load_tokens(data, BPETokenizer.from_dict(tok.to_dict()))  # an equal one hits the cache
    assert again.filename == ids.filename
    assert len(list(tmp_path.glob("*.tokens.npy"))) == 1
