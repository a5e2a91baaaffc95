"""A large real-text corpus for the RAG scale benchmark, and its real MiniLM embeddings cached on disk.

Text this project did not write, gathered from what is installed on the machine:
  1. the Python reference topics in `pydoc_data.topics`;
  2. docstrings of the Python standard library's own .py files (read with `ast`, nothing imported);
  3. the text files under /usr/share/doc (README, NEWS, changelogs, gz ones decompressed; licences skipped;
     the first 20k characters of each), in path order until n chunks are reached.
Each text is split by our own chunker (athanor.rag.chunking) into short chunks (default 32 MiniLM tokens, no
overlap), exact duplicates dropped, and the list shuffled with a fixed seed so every source is spread through it.

Why short chunks: all-MiniLM-L6-v2 embeds about 11 chunks/s at 254 tokens but about 50–80/s at 32 tokens on one
core of this shared CPU, so 100k *real* embeddings fit in about half an hour only at sentence size. The vectors
are genuine model outputs for genuine text (what a base with `--chunk-size 32` would hold), not random vectors.

Embeddings are written in shards (`vec_00000.npy`, ...) under --cache so an interrupted run resumes.

Run: OMP_NUM_THREADS=1 python benchmarks/rag_corpus.py --n 101000 --cache /tmp/athanor_rag_corpus
(bench_rag.py scale uses the same n = 101000 list, its first --chunks as the base, the next 200 as queries.)
"""

from __future__ import annotations

import argparse
import ast
import gzip
import random
import sys
import time
from pathlib import Path

import numpy as np


def _pydoc_texts():
    from pydoc_data.topics import topics

    for name, text in sorted(topics.items()):
        yield f"pydoc:{name}", text


def _stdlib_docstrings():
    import sysconfig

    root = Path(sysconfig.get_paths()["stdlib"])
    for path in sorted(root.rglob("*.py")):
        if "site-packages" in path.parts or "test" in path.parts or "tests" in path.parts:
            continue
        try:
            tree = ast.parse(path.read_bytes())
        except (SyntaxError, ValueError, OSError):
            continue
        for node in ast.walk(tree):
            if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
                doc = ast.get_docstring(node)
                if doc and len(doc) > 40:
                    yield f"stdlib:{path.relative_to(root)}:{getattr(node, 'name', '')}", doc


def _usr_share_doc(root: Path = Path("/usr/share/doc"), max_chars: int = 20_000):
    for path in sorted(root.rglob("*")):
        if not path.is_file() or path.is_symlink() or path.name == "copyright":
            continue
        try:
            data = gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()
            if path.suffix not in (".gz", ".txt", ".md", "") and not path.name.isupper():
                continue
            text = data.decode("utf-8")
        except (OSError, UnicodeDecodeError, EOFError, gzip.BadGzipFile):
            continue
        yield f"doc:{path.relative_to(root)}", text[:max_chars]  # a few huge changelogs would dominate


def build_chunks(n: int, chunk_size: int = 32, seed: int = 0) -> list[tuple[str, str]]:
    """Up to n (source, chunk text) pairs, deduplicated, shuffled with `seed`."""
    from athanor.rag.chunking import chunk_blocks
    from athanor.rag.embed import get_embedder
    from athanor.rag.loaders import Block

    count = get_embedder("all-minilm-l6-v2").count_tokens
    seen, out = set(), []
    for gen in (_pydoc_texts(), _stdlib_docstrings(), _usr_share_doc()):
        for source, text in gen:
            for c in chunk_blocks([Block(text)], count, chunk_size, 0):
                t = " ".join(c.text.split())
                if len(t) >= 20 and t not in seen:  # a chunk of a few characters says nothing
                    seen.add(t)
                    out.append((source, t))
            if len(out) >= n:
                break
        if len(out) >= n:
            break
    random.Random(seed).shuffle(out)
    return out[:n]


def chunks_cached(n: int, cache: Path, chunk_size: int = 32) -> list[tuple[str, str]]:
    """build_chunks(n), kept as JSON in `cache` (gathering and chunking takes 1–5 minutes on the shared CPU)."""
    import json

    f = cache / f"chunks_{n}_{chunk_size}.json"
    if f.exists():
        return [tuple(x) for x in json.loads(f.read_text())]
    chunks = build_chunks(n, chunk_size)
    cache.mkdir(parents=True, exist_ok=True)
    f.write_text(json.dumps(chunks))
    return chunks


def embed_cached(texts: list[str], cache: Path, limit: int | None = None, shard: int = 2000) -> np.ndarray:
    """(limit, 384) float32 MiniLM vectors of texts[:limit], computed shard by shard and kept in `cache`.
    Always pass the same full `texts` (build_chunks with the same n): shard files are named by position."""
    from athanor.rag.embed import get_embedder

    emb = get_embedder("all-minilm-l6-v2")
    cache.mkdir(parents=True, exist_ok=True)
    parts, limit = [], len(texts) if limit is None else limit
    for i in range(0, limit, shard):
        f = cache / f"vec_{i // shard:05d}.npy"
        if not f.exists():
            t = time.perf_counter()
            v = emb.embed(texts[i: i + shard])
            np.save(f.with_suffix(".tmp.npy"), v)
            f.with_suffix(".tmp.npy").rename(f)
            print(f"  shard {i // shard}: {len(v)} chunks in {time.perf_counter() - t:.0f} s", file=sys.stderr,
                  flush=True)
        parts.append(np.load(f))
        assert len(parts[-1]) == len(texts[i: i + shard]), f  # a shard of another corpus: clear the cache
    return np.concatenate(parts)[:limit]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=101_000)
    ap.add_argument("--chunk-size", type=int, default=32)
    ap.add_argument("--cache", type=Path, default=Path("/tmp/athanor_rag_corpus"))
    args = ap.parse_args()
    import torch

    torch.set_num_threads(1)
    t = time.perf_counter()
    chunks = build_chunks(args.n, args.chunk_size)
    kinds = {}
    for s, _ in chunks:
        kinds[s.split(":")[0]] = kinds.get(s.split(":")[0], 0) + 1
    print(f"{len(chunks)} chunks {kinds} in {time.perf_counter() - t:.0f} s", flush=True)
    t = time.perf_counter()
    vecs = embed_cached([c for _, c in chunks], args.cache)
    print(f"embedded {len(vecs)} in {time.perf_counter() - t:.0f} s", flush=True)


if __name__ == "__main__":
    main()
