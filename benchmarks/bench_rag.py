"""RAG benchmarks, three parts (numbers go to benchmarks/RESULTS.md by hand; tests never assert timings):

  index   vector index choice: sqlite-vec vs FAISS flat vs numpy on random unit vectors (--n, --dim)
  eval    retrieval quality over a corpus this project did not write: the 79 topics of the Python language
          reference shipped in `pydoc_data.topics`, one file per topic, with EVAL_QUERIES written by hand (each
          query's relevant topics can be checked at docs.python.org/3/reference); vector vs keyword vs hybrid,
          plus ingest throughput (chunks/s) with the default embedder
  scale   query latency p50/p99 at --chunks (default 100k) chunks: synthetic text from the same corpus's
          vocabulary and random unit vectors (embedding 100k real chunks takes too long on 2 shared cores), and
          FAISS flat (exact) vs HNSW (approximate) recall@10

Run: OMP_NUM_THREADS=1 python benchmarks/bench_rag.py index|eval|scale
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
    kb = KnowledgeBase.create("pydoc")
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


# --- scale: latency at 100k chunks -------------------------------------------------------------------------


def run_scale(args) -> None:
    import os
    import re
    import tempfile
    from pathlib import Path
    from pydoc_data.topics import topics

    from athanor.rag.kb import KnowledgeBase
    from athanor.rag.store import NewChunk

    tmp = Path(tempfile.mkdtemp(prefix="bench_rag_scale_"))
    os.environ["ATHANOR_HOME"] = str(tmp / "home")
    rng = np.random.default_rng(0)
    vocab = sorted({w for t in topics.values() for w in re.findall(r"[A-Za-z_]{3,}", t)})
    kb = KnowledgeBase.create("scale")
    dim, per_doc = kb.embedder.dim, 100
    t = time.perf_counter()
    for d in range(args.chunks // per_doc):  # written through the same per-file transaction as `kb add`
        vecs = _unit(rng, per_doc, dim)
        chunks = [NewChunk(" ".join(rng.choice(vocab, 60)), {"source": f"/synthetic/{d}.txt", "ext": "txt"}, 60, v)
                  for v in vecs]
        kb.store.replace_document(f"/synthetic/{d}.txt", str(d), 0.0, [], chunks)
    print(f"wrote {args.chunks} synthetic chunks in {time.perf_counter() - t:.1f} s")
    t = time.perf_counter()
    n = len(kb.index)
    print(f"FAISS index rebuilt from SQLite ({n} vectors) in {time.perf_counter() - t:.2f} s")
    kb.embedder.embed(["warm up"])
    qs = [" ".join(rng.choice(vocab, 6)) for _ in range(args.queries)]
    for mode in ("vector", "keyword", "hybrid"):
        lat = []
        for q in qs:
            t = time.perf_counter()
            kb.query(q, k=10, mode=mode)
            lat.append(time.perf_counter() - t)
        print(f"{mode:8s} query at {n} chunks (vector, hybrid: incl. embedding the query): p50 {_pct(lat, 50) * 1000:.1f} ms  "
              f"p99 {_pct(lat, 99) * 1000:.1f} ms")
    _exact_vs_hnsw(rng, kb, args)


def _exact_vs_hnsw(rng, kb, args) -> None:
    import faiss

    _, vecs = kb.store.all_vectors(kb.embedder.dim)
    queries = _unit(rng, args.queries, vecs.shape[1])
    flat = faiss.IndexFlatIP(vecs.shape[1])
    flat.add(vecs)
    t = time.perf_counter()
    hnsw = faiss.IndexHNSWFlat(vecs.shape[1], 32, faiss.METRIC_INNER_PRODUCT)
    hnsw.hnsw.efConstruction = 64
    hnsw.add(vecs)
    print(f"HNSW(M=32, efConstruction=64) build {time.perf_counter() - t:.1f} s")
    for name, index in [("flat", flat), ("hnsw ef=64", hnsw)]:
        if name.startswith("hnsw"):
            index.hnsw.efSearch = 64
        lat, found = [], []
        for q in queries:
            t = time.perf_counter()
            found.append(index.search(q[None, :], 10)[1][0])
            lat.append(time.perf_counter() - t)
        truth = [flat.search(q[None, :], 10)[1][0] for q in queries]
        recall = statistics.mean(len(set(a) & set(b)) / 10 for a, b in zip(found, truth))
        print(f"{name:12s} p50 {_pct(lat, 50) * 1000:.2f} ms  p99 {_pct(lat, 99) * 1000:.2f} ms  "
              f"recall@10 vs exact {recall:.3f}")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("part", choices=["index", "eval", "scale"])
    ap.add_argument("--n", type=int, default=20000, help="index: vectors")
    ap.add_argument("--dim", type=int, default=384, help="index: dimensions")
    ap.add_argument("--queries", type=int, default=200)
    ap.add_argument("--chunks", type=int, default=100_000, help="scale: chunks in the base")
    ap.add_argument("-k", type=int, default=10)
    args = ap.parse_args()
    {"index": run_index, "eval": run_eval, "scale": run_scale}[args.part](args)


if __name__ == "__main__":
    main()
