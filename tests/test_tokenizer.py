"""Tokenizers: round trips, error messages, save/load and format detection."""

import json
import sys

import numpy as np
import pytest

from femtogpt.data import bundled_corpus_path, read_text
from femtogpt.tokenizer import (
    DEFAULT_BPE_VOCAB_SIZE,
    MAX_BPE_VOCAB_SIZE,
    BPETokenizer,
    ByteTokenizer,
    CharTokenizer,
    load_tokenizer,
    make_tokenizer,
    tokenizer_fingerprint,
    tokenizer_from_dict,
)

UNICODE = "héllo wörld, ünïcode ✓ 日本語 😀 — done\n\ttabs  and  spaces \r\n"


@pytest.fixture(scope="module")
def corpus():
    return read_text(bundled_corpus_path())


@pytest.fixture(scope="module")
def bpe(corpus):
    pytest.importorskip("tokenizers")
    return BPETokenizer.train(corpus[:200_000], 400)


# ---------------------------------------------------------------------------- char

def test_char_vocab_is_sorted_distinct_chars():
    tok = CharTokenizer.from_text("hello world")
    assert tok.chars == " dehlorw"
    assert tok.vocab_size == 8
    np.testing.assert_array_equal(tok.encode("hello"), [3, 2, 4, 4, 5])


def test_char_round_trip_corpus(corpus):
    tok = CharTokenizer.from_text(corpus)
    assert tok.vocab_size == 76
    ids = tok.encode(corpus)
    assert ids.dtype == np.int64 and ids.shape == (len(corpus),)
    assert ids.min() >= 0 and ids.max() < tok.vocab_size
    assert tok.decode(ids) == corpus
    # A slow obvious twin of the vectorized encoder.
    stoi = {c: i for i, c in enumerate(sorted(set(corpus)))}
    np.testing.assert_array_equal(ids[:5000], [stoi[c] for c in corpus[:5000]])


def test_char_round_trip_non_ascii():
    tok = CharTokenizer.from_text(UNICODE)
    assert tok.decode(tok.encode(UNICODE)) == UNICODE
    assert tok.decode(tok.encode(UNICODE).tolist()) == UNICODE


def test_char_unknown_characters_are_listed_once():
    tok = CharTokenizer.from_text("abc ")
    with pytest.raises(ValueError) as e:
        tok.encode("a zebra ☃ b é ☃ zz")
    msg = str(e.value)
    for c in ("'z'", "'e'", "'r'", "'☃'", "'é'"):
        assert c in msg
    assert msg.count("'z'") == 1 and msg.count("'☃'") == 1
    assert "'a'" not in msg
    assert "training corpus" in msg


def test_char_unknown_character_above_vocab_code_points():
    tok = CharTokenizer.from_text("ab")
    with pytest.raises(ValueError, match="'\\\\U0001f600'|'😀'"):
        tok.encode("a😀")


def test_empty_prompt_encodes_to_empty_array(corpus, bpe):
    for tok in (CharTokenizer.from_text("abc"), ByteTokenizer(), bpe):
        ids = tok.encode("")
        assert ids.dtype == np.int64 and ids.shape == (0,)
        assert tok.decode(ids) == ""
        assert tok.decode([]) == ""


@pytest.mark.parametrize("bad, err", [([0, 3], ValueError), ([-1], ValueError),
                                      ([[0, 1]], ValueError), ([0.5], TypeError)])
def test_decode_rejects_bad_ids(bad, err):
    tok = CharTokenizer.from_text("abc")
    with pytest.raises(err):
        tok.decode(np.array(bad))


def test_char_rejects_duplicate_or_empty_vocab():
    with pytest.raises(ValueError, match="duplicates"):
        CharTokenizer("abca")
    with pytest.raises(ValueError):
        CharTokenizer.from_text("")


# ---------------------------------------------------------------------------- byte

def test_byte_round_trip_non_ascii():
    tok = ByteTokenizer()
    ids = tok.encode(UNICODE)
    assert tok.vocab_size == 256
    np.testing.assert_array_equal(ids, list(UNICODE.encode("utf-8")))
    assert ids.dtype == np.int64
    assert tok.decode(ids) == UNICODE


def test_byte_decode_replaces_invalid_utf8():
    tok = ByteTokenizer()
    ids = tok.encode("a😀")
    assert tok.decode(ids[:-1]) == "a\ufffd"
    with pytest.raises(ValueError, match="out of range"):
        tok.decode([256])


# ---------------------------------------------------------------------------- bpe

def test_bpe_round_trip(corpus, bpe):
    assert 256 < bpe.vocab_size <= 400
    for text in (corpus[:20_000], UNICODE, "  leading and trailing  ", "\n\n\n", "x"):
        ids = bpe.encode(text)
        assert ids.dtype == np.int64
        assert ids.max() < bpe.vocab_size
        assert bpe.decode(ids) == text
    # Merges compress the text they were trained on.
    assert len(bpe.encode(corpus[:20_000])) < 0.7 * len(corpus[:20_000].encode())


def test_bpe_rejects_too_small_vocab(corpus):
    pytest.importorskip("tokenizers")
    with pytest.raises(ValueError, match="256"):
        BPETokenizer.train(corpus[:1000], 100)


def test_bpe_rejects_a_huge_vocab_or_a_negative_min_frequency_before_training():
    """tokenizers allocates for vocab_size up front and aborts the process when it cannot."""
    pytest.importorskip("tokenizers")
    with pytest.raises(ValueError, match=r"at most 1,048,576 \(2\*\*20\)"):
        BPETokenizer.train("some text", 10**9)
    with pytest.raises(ValueError, match="at most"):
        make_tokenizer("bpe", "some text", vocab_size=MAX_BPE_VOCAB_SIZE + 1)
    with pytest.raises(ValueError, match="min_frequency must be >= 0"):
        BPETokenizer.train("some text", 300, min_frequency=-1)
    with pytest.raises(ValueError, match="min_frequency"):
        BPETokenizer.train("some text", 300, min_frequency=2**64)
    with pytest.raises(TypeError, match="min_frequency"):
        BPETokenizer.train("some text", 300, min_frequency=1.5)
    assert BPETokenizer.train("some text", MAX_BPE_VOCAB_SIZE).vocab_size < 300


def test_bpe_save_load_and_gpt2_files(tmp_path, corpus, bpe):
    path = bpe.save(tmp_path / "ckpt")
    assert path.name == "tokenizer.json"
    again = load_tokenizer(tmp_path / "ckpt")
    assert isinstance(again, BPETokenizer) and again == bpe
    sample = corpus[5000:9000] + UNICODE
    np.testing.assert_array_equal(again.encode(sample), bpe.encode(sample))
    # GPT-2's distribution format: vocab.json + merges.txt.
    gpt2 = tmp_path / "gpt2"
    gpt2.mkdir()
    bpe.backend.model.save(str(gpt2))
    assert {p.name for p in gpt2.iterdir()} == {"vocab.json", "merges.txt"}
    from_files = load_tokenizer(gpt2)
    assert from_files.vocab_size == bpe.vocab_size
    np.testing.assert_array_equal(from_files.encode(sample), bpe.encode(sample))
    assert from_files.decode(from_files.encode(sample)) == sample


def test_missing_tokenizers_library_message(monkeypatch):
    monkeypatch.setitem(sys.modules, "tokenizers", None)  # makes `import tokenizers` fail
    with pytest.raises(ImportError, match=r"pip install femtogpt\[bpe\].*pip install tokenizers"):
        BPETokenizer.train("some text", 300)
    with pytest.raises(ImportError, match="tokenizers"):
        make_tokenizer("bpe", "some text")


# ---------------------------------------------------------------------------- save / load / make

@pytest.mark.parametrize("tok", [CharTokenizer.from_text(UNICODE), ByteTokenizer()], ids=repr)
def test_save_load_round_trip(tmp_path, tok):
    path = tok.save(tmp_path)
    d = json.loads(path.read_text())
    assert d["type"] == tok.kind
    for again in (load_tokenizer(tmp_path), load_tokenizer(path), tokenizer_from_dict(d)):
        assert type(again) is type(tok) and again == tok
        assert again.decode(again.encode(UNICODE)) == UNICODE
    assert tokenizer_fingerprint(load_tokenizer(tmp_path)) == tokenizer_fingerprint(tok)


def test_fingerprint_distinguishes_vocabularies():
    a, b = CharTokenizer.from_text("abc"), CharTokenizer.from_text("abd")
    assert tokenizer_fingerprint(a) != tokenizer_fingerprint(b)
    assert tokenizer_fingerprint(a) != tokenizer_fingerprint(ByteTokenizer())


def test_tokenizer_from_dict_rejects_unknown_formats():
    with pytest.raises(ValueError, match="unrecognized tokenizer"):
        tokenizer_from_dict({"type": "wordpiece"})
    with pytest.raises(ValueError, match="unrecognized tokenizer"):
        tokenizer_from_dict({"vocab": {}})
    with pytest.raises(ValueError, match="chars"):
        tokenizer_from_dict({"type": "char"})


def test_load_tokenizer_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="tokenizer.json"):
        load_tokenizer(tmp_path)
    with pytest.raises(FileNotFoundError, match="nope.json"):
        load_tokenizer(tmp_path / "nope.json")
    (tmp_path / "tokenizer.json").write_text("{not json")
    with pytest.raises(ValueError, match="tokenizer.json"):
        load_tokenizer(tmp_path)


def test_load_tokenizer_of_deeply_nested_json(tmp_path):
    """json's RecursionError was not caught: a traceback from the CLI."""
    (tmp_path / "tokenizer.json").write_text("[" * 100_000 + "]" * 100_000)
    with pytest.raises(ValueError, match="tokenizer.json: not a valid tokenizer JSON file: nested too deeply"):
        load_tokenizer(tmp_path)


def test_make_tokenizer(corpus):
    assert make_tokenizer("char", "abcab").chars == "abc"
    assert isinstance(make_tokenizer("byte", corpus), ByteTokenizer)
    assert isinstance(make_tokenizer("byte"), ByteTokenizer)
    with pytest.raises(ValueError) as e:
        make_tokenizer("wordpiece", corpus)
    assert all(k in str(e.value) for k in ("char", "byte", "bpe"))
    with pytest.raises(ValueError, match="only to the bpe"):
        make_tokenizer("char", corpus, vocab_size=100)
    with pytest.raises(ValueError, match="text"):
        make_tokenizer("char")


def test_make_tokenizer_bpe(corpus):
    pytest.importorskip("tokenizers")
    tok = make_tokenizer("bpe", corpus[:100_000], vocab_size=300)
    assert isinstance(tok, BPETokenizer) and tok.vocab_size == 300
    assert DEFAULT_BPE_VOCAB_SIZE >= 256
