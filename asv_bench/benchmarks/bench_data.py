"""Data loading: peak memory and time to build a tokenizer for a corpus and tokenize it into the
token cache, piece by piece (femtogpt) against the same with the corpus read whole (the
reference), in the same run. The corpus is the bundled Shakespeare repeated 10 times (11.5 MB);
each job runs in its own subprocess (data_load_script.py), so that its peak RSS is its own.
"""

import json
import os
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
REPEATS = 10
_cache = {}


def _corpus() -> str:
    from femtogpt import data

    path = os.path.join(tempfile.gettempdir(), f"femtogpt-bench-corpus-x{REPEATS}.txt")
    if not os.path.exists(path):
        text = data.read_text(data.bundled_corpus_path())
        with open(path + ".tmp", "w", encoding="utf-8") as f:
            for _ in range(REPEATS):
                f.write(text)
        os.replace(path + ".tmp", path)
    return path


def run(kind: str, mode: str) -> dict:
    key = (kind, mode)
    if key not in _cache:
        out = subprocess.run([sys.executable, os.path.join(HERE, "data_load_script.py"), _corpus(), kind, mode],
                             capture_output=True, text=True, check=True)
        _cache[key] = json.loads(out.stdout.strip().splitlines()[-1])
    return _cache[key]


class TokenizeCorpus:
    params = (["char", "bpe"], ["pieces", "whole"])
    param_names = ["tokenizer", "corpus_read"]
    timeout = 600

    def track_peak_rss(self, kind, mode):
        return run(kind, mode)["peak_rss_bytes"]

    track_peak_rss.unit = "bytes"

    def track_seconds(self, kind, mode):
        return run(kind, mode)["seconds"]

    track_seconds.unit = "seconds"
