"""knowledge-retrieval: Dify's node over athanor's knowledge bases (rag/kb.py); dataset ids are kb names,
or are bound to kb names (Services.kb_bindings: a bindings file's `knowledge:` or `--bind-kb ID=NAME`).
A dataset that is neither is a validation warning (exports carry Dify's dataset UUIDs) and fails the node at
run time, under its error strategy.

Outputs `result`, Dify's list of {content, title, metadata{_source: "knowledge", dataset_id, dataset_name,
document_id, document_name, score, position, ...}}, best first, which an llm node's context reads.
retrieval_mode multiple: every dataset is queried, hits merged by score, cut to multiple_retrieval_config.top_k
and score_threshold. single: Dify lets a model route the query to one dataset; here the dataset whose best
hit scores highest is taken (no model call), with its default top_k. With a score threshold the search is
vector-only, so scores are cosine similarities (hybrid scores are rank fusions, not comparable to a
threshold); without one it is hybrid (vector + BM25).
Not for: indexing (rag/), reranking models (none here; a configured reranker is ignored and noted).
"""

from __future__ import annotations

from pathlib import Path

from athanor.workflow.nodes.base import Node, NodeResult, NodeWarning, RunContext, WorkflowNodeError, register

DEFAULT_TOP_K = 4


def kb_problems(dataset_ids, services=None) -> list[str]:
    """Datasets that are not knowledge bases under $ATHANOR_HOME, after bindings (a static check: no base
    is opened). Each is a NodeWarning: the app runs, this node fails."""
    from athanor.rag.kb import KnowledgeBase

    if not isinstance(dataset_ids, list) or not dataset_ids:
        return ["knowledge-retrieval has no dataset_ids"]
    problems = []
    for dataset in dataset_ids:
        name = kb_name(str(dataset), services)
        bound = f" (bound to {name!r})" if name != str(dataset) else ""
        try:
            missing = not (KnowledgeBase._path(name) / "kb.sqlite").exists()
        except ValueError as e:
            problems.append(NodeWarning(f"dataset {dataset!r}{bound}: {e}"))
            continue
        if missing:
            problems.append(NodeWarning(
                f"dataset {dataset!r}{bound} is not a knowledge base here (create it with `athanor kb create NAME`"
                " and bind it: --bind-kb DATASET_ID=NAME or a bindings file)"))
    return problems


def kb_name(dataset_id: str, services=None) -> str:
    """The local knowledge base a Dify dataset id reads (its binding, else the id itself)."""
    return (getattr(services, "kb_bindings", None) or {}).get(dataset_id, dataset_id)


@register
class KnowledgeRetrievalNode(Node):
    type = "knowledge-retrieval"

    def check(self, app) -> list[str]:
        problems = [] if self.data.get("dataset_ids") else ["knowledge-retrieval has no dataset_ids"]
        if not self.data.get("query_variable_selector"):
            problems.append("no query variable selected (query_variable_selector)")
        if self.data.get("retrieval_mode", "multiple") not in ("single", "multiple"):
            problems.append(f"retrieval_mode {self.data.get('retrieval_mode')!r} is not single or multiple")
        return problems

    def service_problems(self, services=None) -> list[str]:
        """Datasets that resolve to no local knowledge base (workflow/validate.py calls this)."""
        return kb_problems(self.data.get("dataset_ids"), services) if self.data.get("dataset_ids") else []

    def run(self, ctx: RunContext) -> NodeResult:
        data = self.data
        query = ctx.pool.get(list(data.get("query_variable_selector") or []))
        query = "" if query is None else str(query)
        if not query.strip():
            return NodeResult({"result": []}, inputs={"query": query}, process_data={"note": "empty query"})
        config = data.get("multiple_retrieval_config") or {}
        single = data.get("retrieval_mode", "multiple") == "single"
        top_k = DEFAULT_TOP_K if single else int(config.get("top_k") or DEFAULT_TOP_K)
        threshold = None if single else config.get("score_threshold")
        if threshold is not None and not config.get("score_threshold_enabled", True):
            threshold = None
        mode = "vector" if threshold is not None else "hybrid"
        per_base = {name: self._search(ctx, str(name), query, top_k, mode, threshold)
                    for name in data.get("dataset_ids") or []}
        if single:
            best = max(per_base, key=lambda n: per_base[n][0]["metadata"]["score"] if per_base[n] else float("-inf"))
            items = per_base[best] if per_base else []
        else:
            items = sorted((i for hits in per_base.values() for i in hits), key=lambda i: -i["metadata"]["score"])[:top_k]
        for position, item in enumerate(items, 1):
            item["metadata"]["position"] = position
        details = {"mode": mode, "top_k": top_k, "score_threshold": threshold,
                   "hits_per_dataset": {n: len(h) for n, h in per_base.items()}}
        if config.get("reranking_enable") or config.get("reranking_model"):
            details["note"] = "reranking is configured in the DSL; no reranker here, results are in search order"
        return NodeResult({"result": items}, inputs={"query": query}, process_data=details)

    def _search(self, ctx: RunContext, name: str, query: str, k: int, mode: str, threshold) -> list[dict]:
        kb = ctx.services.knowledge_base(name)
        try:
            hits = kb.query(query, k=k, mode=mode, threshold=None if threshold is None else float(threshold))
        except ValueError as e:
            raise WorkflowNodeError(f"knowledge retrieval on {name!r}: {e}") from None
        return [_item(name, hit) for hit in hits]


def _item(dataset: str, hit) -> dict:
    """One kb Hit in Dify's result shape."""
    document = Path(hit.source).name
    metadata = {"_source": "knowledge", "dataset_id": dataset, "dataset_name": dataset, "document_id": hit.source,
                "document_name": document, "data_source_type": "upload_file", "segment_id": str(hit.chunk_id),
                "retriever_from": "workflow", "score": float(hit.score), "position": 0,
                "doc_metadata": {k: v for k, v in hit.meta.items() if v is not None}, "location": hit.location()}
    return {"metadata": metadata, "title": document, "content": hit.text}
