"""Retrieval quality: recall@k, MRR and nDCG@k over a JSONL of queries with their relevant sources (`kb eval`).

QUERIES.jsonl, one object a line: {"query": "...", "relevant": ["path or file name", ...]} — a hit is relevant
when its source path equals a listed entry or ends with "/" + entry (so "os.path.txt" matches any folder).
Relevance is binary; ranks count distinct sources (several chunks of one relevant file are one hit).

Not for: generating queries, or judging answers of `kb ask` (ops/ evals).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path


def recall_at_k(ranked: list[str], relevant: set[str], k: int) -> float:
    """Fraction of the relevant items found in the top k."""
    return len(set(ranked[:k]) & relevant) / len(relevant) if relevant else 0.0


def reciprocal_rank(ranked: list[str], relevant: set[str]) -> float:
    """1 / rank of the first relevant item (0 if none)."""
    return next((1.0 / r for r, item in enumerate(ranked, start=1) if item in relevant), 0.0)


def ndcg_at_k(ranked: list[str], relevant: set[str], k: int = 10) -> float:
    """Binary-gain nDCG: Σ 1/log2(rank+1) over relevant hits in the top k, over the same for a perfect ranking."""
    dcg = sum(1.0 / math.log2(r + 1) for r, item in enumerate(ranked[:k], start=1) if item in relevant)
    ideal = sum(1.0 / math.log2(r + 1) for r in range(1, min(len(relevant), k) + 1))
    return dcg / ideal if ideal else 0.0


@dataclass
class EvalQuery:
    query: str
    relevant: list[str]


def read_queries(path: str | Path) -> list[EvalQuery]:
    out = []
    for n, line in enumerate(Path(path).read_text().splitlines(), start=1):
        if not line.strip():
            continue
        obj = json.loads(line)
        if not isinstance(obj, dict) or not obj.get("query") or not obj.get("relevant"):
            raise ValueError(f"{path}:{n}: each line needs \"query\" and a non-empty \"relevant\" list")
        rel = obj["relevant"]
        out.append(EvalQuery(obj["query"], [rel] if isinstance(rel, str) else list(rel)))
    if not out:
        raise ValueError(f"{path}: no queries")
    return out


def _canonical(source: str, relevant: list[str]) -> str:
    """The relevant entry this source stands for, or the source itself."""
    return next((r for r in relevant if source == r or source.endswith("/" + r.lstrip("/"))), source)


def evaluate(kb, queries: list[EvalQuery], k: int = 5, mode: str = "hybrid", **query_options) -> dict:
    """Mean recall@k, MRR and nDCG@10 of `kb.query` over the queries (ranked list: distinct sources, top 10+)."""
    depth = max(k, 10)
    totals = {f"recall@{k}": 0.0, "mrr": 0.0, "ndcg@10": 0.0}
    for q in queries:
        ranked: list[str] = []
        for hit in kb.query(q.query, k=4 * depth, mode=mode, **query_options):
            item = _canonical(hit.source, q.relevant)
            if item not in ranked:
                ranked.append(item)
        relevant = set(q.relevant)
        totals[f"recall@{k}"] += recall_at_k(ranked, relevant, k)
        totals["mrr"] += reciprocal_rank(ranked, relevant)
        totals["ndcg@10"] += ndcg_at_k(ranked, relevant, 10)
    return {"mode": mode, "queries": len(queries), **{m: v / len(queries) for m, v in totals.items()}}
