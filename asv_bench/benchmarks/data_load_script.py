"""Build a tokenizer for a corpus and tokenize it, in this process, and print JSON: seconds and
peak RSS. Used by bench_data.py in a subprocess, so that the peak belongs to this one job.

mode "pieces": what femtogpt does (make_tokenizer from data.iter_text, load_tokens into a fresh
cache directory). mode "whole": the reference, a corpus read whole and encoded at once (as
nanoGPT's prepare.py does, and femtogpt did before), ids kept as the cache's dtype.
"""

import json
import sys
import tempfile
import time

import numpy as np

from femtogpt import data, tokenizer

if __package__:  # imported by asv's discovery, as benchmarks.<this module>
    from ._util import peak_rss_bytes
else:  # run as a script: its directory is sys.path[0]
    from _util import peak_rss_bytes


def main(path: str, kind: str, mode: str) -> dict:
    vocab = 512 if kind == "bpe" else None
    t0 = time.perf_counter()
    if mode == "pieces":
        tok = tokenizer.make_tokenizer(kind, data.iter_text(path), vocab_size=vocab)
        with tempfile.TemporaryDirectory() as cache:
            n = len(data.load_tokens(path, tok, cache_dir=cache))
    else:
        text = data.read_text(path)
        tok = tokenizer.make_tokenizer(kind, text, vocab_size=vocab)
        n = len(tok.encode(text).astype(np.uint16))
    return {"seconds": time.perf_counter() - t0, "tokens": n,
            "peak_rss_bytes": peak_rss_bytes()}


if __name__ == "__main__":
    print(json.dumps(main(*sys.argv[1:4])))
