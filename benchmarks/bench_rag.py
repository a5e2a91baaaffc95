"""RAG benchmarks, three parts (numbers go to benchmarks/RESULTS.md by hand; tests never assert timings):

  index   vector index choice: sqlite-vec vs FAISS flat vs numpy on random unit vectors (--n, --dim)
  eval    retrieval quality over a corpus this project did not write: the 79 topics of the Python language
          reference shipped in `pydoc_data.topics`, one file per topic, with EVAL_QUERIES written by hand (each
          query's relevant topics can be checked at docs.python.org/3/reference); vector vs keyword vs hybrid,
          plus ingest throughput (chunks/s) with the default embedder
  scale   at --chunks (default 100k) real chunks with real MiniLM vectors (benchmarks/rag_corpus.py: stdlib
          docs, docstrings and /usr/share/doc, 32-token chunks; its embeddings cached in --cache): recall@10 of
          the HNSW index (athanor/rag/ann.py) against exact search, p50/p99 of both, and kb.query latency per
          mode with each index

Run: OMP_NUM_THREADS=1 python benchmarks/bench_rag.py index|eval|scale   (eval --vector-backend qdrant: same on Qdrant)
"""

from __future__ import annotations

import argparse
import sqlite3
import statistics
import time

import numpy as np


def _unit(rng, n, dim):
    x = rng.standard_normal((n, dim)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def _pct(xs, p):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(p / 100 * len(xs)))]


def bench_sqlite_vec(vecs, queries, k):
    import sqlite_vec

    db = sqlite3.connect(":memory:")
    db.enable_load_extension(True)
    sqlite_vec.load(db)
    db.enable_load_extension(False)
    t = time.perf_counter()
    db.execute(f"CREATE VIRTUAL TABLE v USING vec0(embedding float[{vecs.shape[1]}] distance_metric=cosine)")
    with db:
        db.executemany("INSERT INTO v(rowid, embedding) VALUES (?, ?)", ((i + 1, v.tobytes()) for i, v in enumerate(vecs)))
    build = time.perf_counter() - t
    lat, ids = [], []
    for q in queries:
        t = time.perf_counter()
        rows = db.execute("SELECT rowid FROM v WHERE embedding MATCH ? AND k = ? ORDER BY distance",
                          (q.tobytes(), k)).fetchall()
        lat.append(time.perf_counter() - t)
        ids.append([r[0] - 1 for r in rows])
    return build, lat, ids


def bench_faiss(vecs, queries, k):
    import faiss

    faiss.omp_set_num_threads(1)
    t = time.perf_counter()
    index = faiss.IndexFlatIP(vecs.shape[1])
    index.add(vecs)
    build = time.perf_counter() - t
    lat, ids = [], []
    for q in queries:
        t = time.perf_counter()
        _, idx = index.search(q[None, :], k)
        lat.append(time.perf_counter() - t)
        ids.append(list(idx[0]))
    return build, lat, ids


def bench_numpy(vecs, queries, k):
    lat, ids = [], []
    for q in queries:
        t = time.perf_counter()
        s = vecs @ q
        top = np.argpartition(-s, k)[:k]
        top = top[np.argsort(-s[top])]
        lat.append(time.perf_counter() - t)
        ids.append(list(top))
    return 0.0, lat, ids


def run_index(args) -> None:
    rng = np.random.default_rng(0)
    vecs, queries = _unit(rng, args.n, args.dim), _unit(rng, args.queries, args.dim)
    results = {}
    for name, fn in [("numpy", bench_numpy), ("faiss-flat", bench_faiss), ("sqlite-vec", bench_sqlite_vec)]:
        try:
            results[name] = fn(vecs, queries, args.k)
        except AttributeError as e:  # CPython built without SQLITE_ENABLE_LOAD_EXTENSION
            print(f"{name}: cannot run here ({e})")
    truth = results["numpy"][2]
    print(f"n={args.n} dim={args.dim} queries={args.queries} k={args.k}")
    for name, (build, lat, ids) in results.items():
        recall = statistics.mean(len(set(a) & set(b)) / args.k for a, b in zip(ids, truth))
        print(f"{name:12s} build {build*1000:8.1f} ms  p50 {_pct(lat,50)*1000:7.2f} ms  "
              f"p99 {_pct(lat,99)*1000:7.2f} ms  recall@{args.k} vs numpy {recall:.3f}")



# --- eval: pydoc_data topics -------------------------------------------------------------------------------

EVAL_QUERIES = [  # (query, relevant topic files): paraphrased so that not every answer is a keyword match
    ("what happens when the expression in an assert statement is false", ["assert"]),
    ("x += 1 evaluates the target only once and may update it in place", ["augassign"]),
    ("suspend a coroutine until an awaitable completes", ["await"]),
    ("leave the nearest enclosing loop early", ["break"]),
    ("skip to the next cycle of the enclosing loop", ["continue"]),
    ("remove a name binding or delete items from a list", ["del"]),
    ("declare that identifiers refer to module-level names inside a function", ["global"]),
    ("rebind a variable of the nearest enclosing function scope", ["nonlocal"]),
    ("anonymous functions created with an expression", ["lambda"]),
    ("a statement that does nothing, used as a placeholder", ["pass"]),
    ("raise an exception and chain it with a cause using from", ["raise"]),
    ("leave a function and give a value back to the caller", ["return"]),
    ("repeat while a condition stays true, with an else clause", ["while"]),
    ("iterate over the items of a sequence or other iterable", ["for"]),
    ("__enter__ and __exit__ methods of context managers", ["with", "context-managers"]),
    ("generator functions that produce a series of values lazily", ["yield"]),
    ("handle exceptions with except clauses and always run cleanup code in finally", ["try"]),
    ("how is a class definition executed and decorated", ["class"]),
    ("default parameter values are evaluated once when the function is defined", ["function"]),
    ("bind a module in the local namespace, from package import name", ["import"]),
    ("format specification mini-language fill align width precision", ["formatstrings"]),
    ("split a string, join strings, strip whitespace, replace substrings", ["string-methods"]),
    ("dictionary operations get setdefault keys values items", ["typesmapping", "dict"]),
    ("append, extend, insert and pop on mutable sequences", ["typesseq-mutable"]),
    ("which objects are considered false in a boolean context", ["truth"]),
    ("operator precedence from lowest to highest binding", ["operator-summary"]),
    ("extract a subsequence with start, stop and step", ["slicings"]),
    ("set breakpoints and step through code in the interactive debugger", ["debugger"]),
    ("hexadecimal, octal and binary integer literals with underscores", ["integers"]),
    ("floating point literal syntax with an exponent", ["floating"]),
    ("imaginary literals with a j suffix for complex numbers", ["imaginary"]),
    ("the power operator binds more tightly than unary minus on its left", ["power"]),
    ("shift an integer left or right by a number of bits", ["shifting"]),
    ("bitwise and, exclusive or, inclusive or of integers", ["bitwise"]),
    ("chained comparisons and identity tests with is not", ["comparisons"]),
    ("membership tests: whether a container holds a value", ["in"]),
    ("customize object creation and representation: __new__, __init__, __repr__", ["customization"]),
    ("intercept attribute lookup with __getattr__ and __getattribute__", ["attribute-access"]),
    ("how names are bound and resolved in blocks and scopes", ["naming", "execmodel"]),
    ("the object that signals the absence of a value, returned by functions without return", ["bltin-null-object"]),
    ("short-circuit evaluation of and, or and not", ["booleans"]),
    ("call a callable with positional and keyword arguments and unpacking", ["calls"]),
]


def _write_topics(folder):
    from pydoc_data.topics import topics

    folder.mkdir(parents=True, exist_ok=True)
    for name, text in topics.items():
        (folder / f"{name}.txt").write_text(text)
    return len(topics)


def run_eval(args) -> None:
    import os
    import tempfile
    from pathlib import Path

    from athanor.rag.kb import KnowledgeBase
    from athanor.rag.metrics import EvalQuery, evaluate

    tmp = Path(tempfile.mkdtemp(prefix="bench_rag_"))
    os.environ["ATHANOR_HOME"] = str(tmp / "home")
    num_files = _write_topics(tmp / "topics")
    kb = KnowledgeBase.create("pydoc", vector_backend=args.vector_backend)
    kb.embedder.embed(["warm up"])  # model load is not ingest throughput
    t = time.perf_counter()
    report = kb.add([tmp / "topics"])
    dt = time.perf_counter() - t
    print(f"ingest: {num_files} files, {report.num_chunks} chunks in {dt:.1f} s = {report.num_chunks / dt:.1f} chunks/s "
          f"(chunk size {kb.config.chunk_size}/{kb.config.chunk_overlap} tokens, embedder {kb.config.embedder})")
    queries = [EvalQuery(q, [f"{r}.txt" for r in rel]) for q, rel in EVAL_QUERIES]
    print(f"{len(queries)} queries; k=5")
    for mode, opts in [("vector", {}), ("keyword", {}), ("hybrid", {}), ("hybrid", {"fusion": "weighted"})]:
        r = evaluate(kb, queries, k=5, mode=mode, **opts)
        label = mode + ("/weighted" if opts else "/rrf" if mode == "hybrid" else "")
        print(f"{label:16s} recall@5 {r['recall@5']:.3f}  MRR {r['mrr']:.3f}  nDCG@10 {r['ndcg@10']:.3f}")


# --- scale: exact vs approximate at 100k real chunks ---------------------------------------------------------


CORPUS_SIZE = 101_000  # real chunks gathered by rag_corpus.py (100k in the base + held-out queries)


def run_scale(args) -> None:
    """Real text, real MiniLM vectors (benchmarks/rag_corpus.py: how they are made and why chunks are short)."""
    import os
    import sys
    import tempfile
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).parent))
    import torch
    from rag_corpus import chunks_cached, embed_cached

    from athanor.rag.ann import HNSWIndex
    from athanor.rag.kb import KnowledgeBase
    from athanor.rag.search import VectorIndex
    from athanor.rag.store import NewChunk

    torch.set_num_threads(1)
    t = time.perf_counter()
    chunks = chunks_cached(CORPUS_SIZE, Path(args.cache))  # always the same list: the embedding cache lines up
    assert args.chunks + args.queries <= CORPUS_SIZE, f"--chunks + --queries must be at most {CORPUS_SIZE}"
    vecs = embed_cached([c for _, c in chunks], Path(args.cache), limit=args.chunks + args.queries)
    held = slice(args.chunks, args.chunks + args.queries)
    print(f"{args.chunks} real chunks + {args.queries} held-out query chunks, vectors from {args.cache} "
          f"({time.perf_counter() - t:.0f} s)")
    tmp = Path(tempfile.mkdtemp(prefix="bench_rag_scale_"))
    os.environ["ATHANOR_HOME"] = str(tmp / "home")
    kb = KnowledgeBase.create("scale", index="exact")
    t = time.perf_counter()
    for d in range(0, args.chunks, 100):  # written through the same per-file transaction as `kb add`
        rows = [NewChunk(text, {"source": src, "ext": "txt"}, 0, v)
                for (src, text), v in zip(chunks[d: min(d + 100, args.chunks)], vecs[d: min(d + 100, args.chunks)])]
        kb.store.replace_document(f"/corpus/{d // 100}.txt", str(d), 0.0, [], rows)
    print(f"wrote them to SQLite in {time.perf_counter() - t:.1f} s")
    ids, stored = kb.store.all_vectors(kb.embedder.dim)
    queries = [c for _, c in chunks[held]][: args.queries - len(EVAL_QUERIES)] + [q for q, _ in EVAL_QUERIES]
    qvecs = np.concatenate([vecs[held][: args.queries - len(EVAL_QUERIES)],
                            kb.embedder.embed([q for q, _ in EVAL_QUERIES])])
    exact = VectorIndex(kb.embedder.dim)
    exact.add(ids, stored)
    t = time.perf_counter()
    hnsw = HNSWIndex(kb.embedder.dim, lambda xs: kb.store.vectors_for(xs, kb.embedder.dim), kb.path)
    hnsw.add(ids, stored)
    print(f"HNSW build (M=32, efConstruction=80, 1 thread): {time.perf_counter() - t:.1f} s")
    t = time.perf_counter()
    hnsw.save()
    again = HNSWIndex(kb.embedder.dim, hnsw.fetch, kb.path)
    again.reconcile(ids, stored)
    print(f"HNSW save + load + reconcile with SQLite: {time.perf_counter() - t:.1f} s "
          f"({(kb.path / 'hnsw.npz').stat().st_size / 1e6:.0f} MB file)")
    _index_recall(exact, hnsw, qvecs)
    _end_to_end(kb, exact, hnsw, queries)


def _index_recall(exact, hnsw, qvecs) -> None:
    truth, lat = [], []
    for q in qvecs:
        t = time.perf_counter()
        truth.append({i for i, _ in exact.search(q, 10)})
        lat.append(time.perf_counter() - t)
    print(f"{'index':18s} {'recall@10':>9s} {'p50 ms':>7s} {'p99 ms':>7s}   ({len(qvecs)} queries, 1 thread)")
    print(f"{'exact (flat IP)':18s} {1.0:9.3f} {_pct(lat, 50) * 1000:7.2f} {_pct(lat, 99) * 1000:7.2f}")
    for ef in (32, 64, 128, 256):
        hnsw.ef_search, lat, found = ef, [], []
        for q in qvecs:
            t = time.perf_counter()
            found.append({i for i, _ in hnsw.search(q, 10)})
            lat.append(time.perf_counter() - t)
        recall = statistics.mean(len(a & b) / 10 for a, b in zip(found, truth))
        print(f"{'hnsw ef=' + str(ef):18s} {recall:9.3f} {_pct(lat, 50) * 1000:7.2f} {_pct(lat, 99) * 1000:7.2f}")
    hnsw.ef_search = 128


def _end_to_end(kb, exact, hnsw, queries) -> None:
    """kb.query latency per mode with each index, incl. embedding the query; and hybrid top-10 agreement."""
    kb.embedder.embed(["warm up"])
    tops = {}
    for name, index in [("exact", exact), ("hnsw", hnsw)]:
        kb._index = index
        for mode in ("vector", "keyword", "hybrid"):
            if mode == "keyword" and name == "hnsw":
                continue  # no vectors involved
            lat, top = [], []
            for q in queries:
                t = time.perf_counter()
                top.append({h.chunk_id for h in kb.query(q, k=10, mode=mode)})
                lat.append(time.perf_counter() - t)
            tops[name, mode] = top
            print(f"kb.query {mode:7s} index={name:5s} p50 {_pct(lat, 50) * 1000:6.1f} ms  p99 {_pct(lat, 99) * 1000:6.1f} ms")
    for mode in ("vector", "hybrid"):
        agree = statistics.mean(len(a & b) / 10 for a, b in zip(tops["hnsw", mode], tops["exact", mode]))
        print(f"{mode} top-10 from hnsw vs exact: {agree:.3f} overlap")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("part", choices=["index", "eval", "scale"])
    ap.add_argument("--n", type=int, default=20000, help="index: vectors")
    ap.add_argument("--dim", type=int, default=384, help="index: dimensions")
    ap.add_argument("--queries", type=int, default=200)
    ap.add_argument("--chunks", type=int, default=100_000, help="scale: chunks in the base")
    ap.add_argument("--cache", default="/tmp/athanor_rag_corpus", help="scale: embedding cache (rag_corpus.py)")
    ap.add_argument("-k", type=int, default=10)
    ap.add_argument("--vector-backend", default="faiss", help="eval: faiss (default) or qdrant (local mode)")
    args = ap.parse_args()
    {"index": run_index, "eval": run_eval, "scale": run_scale}[args.part](args)


if __name__ == "__main__":
    main()
