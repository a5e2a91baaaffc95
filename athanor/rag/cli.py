"""`athanor kb …`: the typer sub-app `kb_app` (mounted by athanor/cli.py). Thin: parse → call kb.py → print.

Not for: logic. Heavy modules (sentence-transformers, faiss, the engine) load inside the commands.
`python -m athanor.rag.cli …` runs the sub-app on its own (the kill -9 test uses it).
"""

from __future__ import annotations

import json
from pathlib import Path

import typer

kb_app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                     help="knowledge bases: ingest files, search them, answer with citations")

Filters = typer.Option(None, "--filter", "-f", help="metadata KEY=VALUE (repeatable; * and ? glob), e.g. ext=pdf")
Mode = typer.Option("hybrid", "--mode", "-m", help="vector, keyword or hybrid")


def parse_filters(pairs: list[str] | None) -> dict | None:
    from athanor.keyvalue import parse_pairs

    return parse_pairs(pairs, "filter") or None  # JSON values: page=3 → 3, so it equals the stored number


@kb_app.command("create")
def create(
    name: str,
    embedder: str = typer.Option("all-minilm-l6-v2", help="all-minilm-l6-v2 or openai:http(s)://HOST/v1#MODEL"),
    chunk_size: int | None = typer.Option(None, help="tokens per chunk (default: min(500, embedder's max input))"),
    chunk_overlap: int = typer.Option(50, help="tokens shared by consecutive chunks"),
    parent_size: int | None = typer.Option(None, help="parent–child mode: parent section size in tokens"),
    vector_backend: str = typer.Option("faiss", help="faiss, qdrant (local, in the base's folder) or "
                                                     "qdrant:http://HOST:6333"),
    index: str = typer.Option("auto", help="faiss index: exact, hnsw (approximate) or auto (hnsw from 50k chunks)"),
) -> None:
    """Create an empty knowledge base."""
    from athanor.rag.kb import KnowledgeBase

    kb = KnowledgeBase.create(name, embedder, chunk_size, chunk_overlap, parent_size, vector_backend=vector_backend,
                              index=index)
    c = kb.config
    _notices(kb)
    typer.echo(f"created {name} (embedder {c.embedder}, chunks {c.chunk_size}/{c.chunk_overlap} tokens"
               + (f", parents {c.parent_size}" if c.parent_size else "") + f") at {kb.path}")


@kb_app.command("add")
def add(name: str, paths: list[Path] = typer.Argument(..., help="files or folders (recursive)"),
        no_prune: bool = typer.Option(False, "--no-prune", help="keep documents whose files left the folder")) -> None:
    """Add or update files; unchanged files are skipped, files gone from an added folder are removed."""
    from athanor.rag.kb import KnowledgeBase

    kb = KnowledgeBase.open(name)
    r = kb.add(paths, progress=True, prune=not no_prune)
    _notices(kb)
    for path, reason in r.failed:
        typer.echo(f"skipped {path}: {reason}", err=True)
    typer.echo(f"{len(r.added)} added, {len(r.updated)} updated, {len(r.unchanged)} unchanged, "
               f"{len(r.removed)} removed, {len(r.failed)} failed; {r.num_chunks} chunks, {r.num_embedded} embedded")


@kb_app.command("gc")
def gc(name: str) -> None:
    """Drop cached embeddings that no chunk uses (removals and updates already drop their own)."""
    from athanor.rag.kb import KnowledgeBase

    kb = KnowledgeBase.open(name)
    typer.echo(f"dropped {kb.gc()} unused cached embeddings")
    kb.close()


def _notices(kb) -> None:
    for note in kb.notices:
        typer.echo(f"note: {note}", err=True)


@kb_app.command("query")
def query(name: str, text: str, k: int = typer.Option(5, "-k"), filter: list[str] | None = Filters,
          mode: str = Mode, threshold: float | None = typer.Option(None, help="drop hits scoring below"),
          fusion: str = typer.Option("rrf", help="hybrid fusion: rrf (k=60) or weighted"),
          as_json: bool = typer.Option(False, "--json", help="one JSON object per hit")) -> None:
    """Search a knowledge base; each hit with its source file and location."""
    from athanor.rag.kb import KnowledgeBase

    hits = KnowledgeBase.open(name).query(text, k=k, mode=mode, filters=parse_filters(filter),
                                         threshold=threshold, fusion=fusion)
    for n, h in enumerate(hits, start=1):
        if as_json:
            typer.echo(json.dumps({"rank": n, "score": h.score, "source": h.source, "location": h.location(),
                                   "meta": h.meta, "text": h.text}, ensure_ascii=False))
        else:
            typer.echo(f"[{n}] {h.score:.4f}  {h.citation()}\n    {' '.join(h.text.split())[:300]}")


@kb_app.command("list")
def list_kbs() -> None:
    """Knowledge bases under ATHANOR_HOME/kb."""
    from athanor.rag.kb import KnowledgeBase

    for info in KnowledgeBase.list():
        typer.echo(f"{info['name']:20s} {info['documents']:6d} docs {info['chunks']:8d} chunks  {info['embedder']}")


@kb_app.command("rm")
def rm(names: list[str]) -> None:
    """Delete knowledge bases."""
    from athanor.rag.kb import KnowledgeBase

    for name in names:
        KnowledgeBase.delete(name)
        typer.echo(f"deleted {name}")


@kb_app.command("eval")
def eval_(name: str, queries: Path, k: int = typer.Option(5, "-k", help="k of recall@k"),
          mode: list[str] | None = typer.Option(None, "--mode", "-m", help="modes (default: all three)")) -> None:
    """recall@k, MRR and nDCG@10 of each mode over QUERIES.jsonl (lines of {"query": ..., "relevant": ...})."""
    from athanor.rag.kb import KnowledgeBase
    from athanor.rag.metrics import evaluate, read_queries

    kb, qs = KnowledgeBase.open(name), read_queries(queries)
    typer.echo(f"{'mode':8s} {'recall@' + str(k):>9s} {'MRR':>7s} {'nDCG@10':>8s}   ({len(qs)} queries)")
    for m in mode or ["vector", "keyword", "hybrid"]:
        r = evaluate(kb, qs, k=k, mode=m)
        typer.echo(f"{m:8s} {r[f'recall@{k}']:9.3f} {r['mrr']:7.3f} {r['ndcg@10']:8.3f}")


@kb_app.command("ask")
def ask(name: str, question: str, model: str = typer.Option(..., "--model", help="model spec, e.g. smollm2"),
        k: int = typer.Option(2, "-k", help="sources given to the model"), filter: list[str] | None = Filters,
        mode: str = Mode, max_tokens: int = typer.Option(256, help="answer length limit"),
        min_score: float = typer.Option(0.30, help="answer 'I don't know' unless a chunk's cosine reaches this")
        ) -> None:
    """Answer from the knowledge base with numbered citations to source files and locations."""
    from athanor.llm.base import load_chat_model
    from athanor.rag import ask as ask_mod
    from athanor.rag.kb import KnowledgeBase

    kb = KnowledgeBase.open(name)
    hits, pieces, cites = ask_mod.ask_stream(kb, load_chat_model(model), question, k=k, mode=mode,
                                             filters=parse_filters(filter), min_score=min_score,
                                             max_tokens=max_tokens, temperature=0)
    for piece in pieces:
        typer.echo(piece, nl=False)
    if cites.invalid:
        typer.echo(f"\n(removed citations to sources that were not given: "
                   f"{', '.join(f'[{n}]' for n in cites.invalid)})", nl=False)
    if hits:
        typer.echo("\n\nSources:\n" + ask_mod.format_sources(hits))
    else:
        typer.echo("")


if __name__ == "__main__":
    kb_app()
