"""recall@k, MRR, nDCG@10 against hand computation, and `evaluate` over a real base."""

from __future__ import annotations

import json
import math

import pytest

from athanor.rag.kb import KnowledgeBase
from athanor.rag.metrics import EvalQuery, evaluate, ndcg_at_k, read_queries, recall_at_k, reciprocal_rank


def test_metrics_by_hand():
    ranked, relevant = ["a", "x", "b", "y", "c"], {"a", "b", "z"}
    assert recall_at_k(ranked, relevant, 1) == pytest.approx(1 / 3)
    assert recall_at_k(ranked, relevant, 5) == pytest.approx(2 / 3)
    assert reciprocal_rank(ranked, relevant) == 1.0
    assert reciprocal_rank(["x", "y", "b"], relevant) == pytest.approx(1 / 3)
    assert reciprocal_rank(["x"], relevant) == 0.0
    # DCG = 1/log2(2) + 1/log2(4) = 1.5; ideal (3 relevant) = 1 + 1/log2(3) + 1/log2(4)
    assert ndcg_at_k(ranked, relevant, 10) == pytest.approx(1.5 / (1 + 1 / math.log2(3) + 0.5))
    assert ndcg_at_k(["a", "b"], {"a", "b"}, 10) == 1.0
    assert ndcg_at_k(["x", "a"], {"a"}, 10) == pytest.approx(1 / math.log2(3))
    assert ndcg_at_k(["x"] * 10 + ["a"], {"a"}, 10) == 0.0


def test_read_queries_validates(tmp_path):
    p = tmp_path / "q.jsonl"
    p.write_text('{"query": "q1", "relevant": "a.txt"}\n\n{"query": "q2", "relevant": ["b.md", "c.md"]}\n')
    assert read_queries(p) == [EvalQuery("q1", ["a.txt"]), EvalQuery("q2", ["b.md", "c.md"])]
    p.write_text('{"query": "q1"}\n')
    with pytest.raises(ValueError, match=":1:"):
        read_queries(p)


def test_evaluate_against_hand_ranking(tmp_path, embedder):
    folder = tmp_path / "facts"
    folder.mkdir()
    for name, text in {"mars.txt": "Mars is the red planet with the tallest volcano, Olympus Mons.",
                       "venus.txt": "Venus is the hottest planet, wrapped in clouds of sulfuric acid.",
                       "bread.txt": "Sourdough bread rises with a wild yeast starter."}.items():
        (folder / name).write_text(text)
    kb = KnowledgeBase.create("facts", embedder_obj=embedder)
    kb.add([folder])
    queries = [EvalQuery("Olympus Mons volcano", ["mars.txt"]), EvalQuery("wild yeast starter", ["bread.txt"]),
               EvalQuery("hottest planet", ["venus.txt", "mars.txt"])]
    result = evaluate(kb, queries, k=1, mode="keyword")
    # recompute from the ranked sources kb.query returns
    recall = mrr = ndcg = 0.0
    for q in queries:
        ranked = list(dict.fromkeys(h.source.rsplit("/", 1)[1] for h in kb.query(q.query, k=40, mode="keyword")))
        recall += recall_at_k(ranked, set(q.relevant), 1)
        mrr += reciprocal_rank(ranked, set(q.relevant))
        ndcg += ndcg_at_k(ranked, set(q.relevant), 10)
    assert result == {"mode": "keyword", "queries": 3, "recall@1": pytest.approx(recall / 3),
                      "mrr": pytest.approx(mrr / 3), "ndcg@10": pytest.approx(ndcg / 3)}
    assert result["mrr"] == 1.0  # each query's best source is ranked first
    assert result["recall@1"] == pytest.approx((1 + 1 + 0.5) / 3)  # the two-source query finds one at k=1
    (tmp_path / "q.jsonl").write_text("\n".join(json.dumps({"query": q.query, "relevant": q.relevant})
                                                for q in queries))
    assert evaluate(kb, read_queries(tmp_path / "q.jsonl"), k=1, mode="keyword") == result
