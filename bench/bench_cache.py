"""Issue 8 benchmark: tokenising a big text file into the memmap cache, and reading it back.

    flock /work/bench.lock python bench/bench_cache.py [--mb 1024] [--kind word] [--out bench/results/cache.json]

Writes a text file of `--mb` megabytes (random words of a 20,000-word vocabulary, 24 per line) in a temporary
directory, trains the tokenizer on it (one streaming pass), then runs two fresh processes: the first tokenises
the file into the cache (`seqlab.data.cache.cached_token_ids`, a miss), the second finds the cache (hashing
the file, opening the memmap, reading every id once). Each phase's wall time and peak resident memory (the
process's ru_maxrss) are recorded with the machine's load average.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent

PHASE = """
import resource, sys, time
from seqlab.data.cache import cached_token_ids
from seqlab.data.lm import read_corpus_lines
from seqlab.data.subword import TextTokenizer
phase, path, cache, kind = sys.argv[1:5]
t0 = time.perf_counter()
if phase == "tokenizer":
    TextTokenizer.train(kind, read_corpus_lines(path, keep_newlines=kind == "char")).save(cache + ".tokenizer.json")
else:
    tk = TextTokenizer.load(cache + ".tokenizer.json")
    ids = cached_token_ids(path, tk, cache, add_eos_per_line=kind != "char")
    int(ids.sum(dtype="int64"))  # read every id once
print(time.perf_counter() - t0, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024)
"""


def _phase(name: str, path: Path, cache: Path, kind: str) -> dict:
    out = subprocess.run([sys.executable, "-c", PHASE, name, str(path), str(cache), kind], check=True,
                         capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(REPO)}).stdout
    secs, rss = out.split()
    return {"seconds": float(secs), "peak_rss_mb": int(rss) / 2**20}


def _write_corpus(path: Path, mb: int) -> None:
    rng = np.random.default_rng(0)
    words = np.array([f"w{i}" for i in range(20_000)])
    with open(path, "w", encoding="utf-8") as f:
        while f.tell() < mb * 2**20:
            f.write("\n".join(" ".join(row) for row in words[rng.integers(0, len(words), (20_000, 24))]) + "\n")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--mb", type=int, default=1024)
    ap.add_argument("--kind", default="word", choices=["word", "char"])
    ap.add_argument("--out", default="bench/results/cache.json")
    a = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        path, cache = Path(tmp) / "corpus.txt", Path(tmp) / "cache"
        cache.mkdir()
        _write_corpus(path, a.mb)
        load_before = os.getloadavg()[0]
        phases = {name: _phase(name, path, cache, a.kind) for name in ("tokenizer", "build", "hit")}
        tokens = json.loads(next(cache.glob("*.json")).read_text())["tokens"]
        size = path.stat().st_size
    result = {"file_mb": size / 2**20, "tokens": tokens, "kind": a.kind, "load_before": load_before,
              "load_after": os.getloadavg()[0], **phases,
              "hit_speedup": phases["build"]["seconds"] / phases["hit"]["seconds"]}
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(json.dumps(result, indent=1))
    for name, p in phases.items():
        print(f"{name:9s} {p['seconds']:8.1f} s  peak RSS {p['peak_rss_mb']:7.0f} MB")
    print(f"{size / 2**20:.0f} MB, {tokens:,} tokens: cache hit {result['hit_speedup']:.1f}x faster than "
          f"tokenising | load {load_before:.1f} -> {result['load_after']:.1f}")


if __name__ == "__main__":
    main()
