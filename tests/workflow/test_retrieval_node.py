"""knowledge-retrieval against real knowledge bases (MiniLM embedder, SQLite, FAISS) made in the test,
and its result feeding an llm node's context."""

from __future__ import annotations

import pytest

from athanor.workflow.nodes.base import WorkflowNodeError
from athanor.workflow.nodes.model import LLMNode
from athanor.workflow.nodes.retrieval import KnowledgeRetrievalNode
from tests.workflow.w2_helpers import Run, ScriptedChatModel, llm_data


@pytest.fixture
def bases():
    from athanor.rag.embed import get_embedder
    from athanor.rag.kb import KnowledgeBase

    emb = get_embedder("all-minilm-l6-v2")
    shop = KnowledgeBase.create("shop-faq", embedder_obj=emb)
    shop.add_texts([("refunds.md", "Refunds are paid back to your card within five working days."),
                    ("shipping.md", "Shipping is free for orders over fifty euros."),
                    ("hours.md", "The shop opens at nine in the morning on weekdays.")])
    pets = KnowledgeBase.create("pets", embedder_obj=emb)
    pets.add_texts([("cats.md", "Cats sleep up to sixteen hours a day."),
                    ("dogs.md", "Dogs need a walk at least twice a day.")])
    shop.close()
    pets.close()
    return ["shop-faq", "pets"]


def kr_data(datasets, mode="multiple", **config) -> dict:
    return {"type": "knowledge-retrieval", "query_variable_selector": ["start", "q"], "dataset_ids": datasets,
            "retrieval_mode": mode, "multiple_retrieval_config": {"top_k": 2, "reranking_enable": False, **config}}


def test_multiple_mode_returns_difys_result_shape_best_first(bases):
    run = Run({"start": {"q": "how long until my refund arrives?"}})
    result = run.execute(KnowledgeRetrievalNode, kr_data(bases))
    items = result.outputs["result"]
    assert len(items) == 2
    top = items[0]
    assert "five working days" in top["content"] and top["title"] == "refunds.md"
    meta = top["metadata"]
    assert meta["_source"] == "knowledge" and meta["dataset_id"] == "shop-faq" and meta["position"] == 1
    assert meta["document_name"] == "refunds.md" and items[1]["metadata"]["position"] == 2
    assert meta["score"] >= items[1]["metadata"]["score"]


def test_score_threshold_drops_weak_hits(bases):
    run = Run({"start": {"q": "how long until my refund arrives?"}})
    result = run.execute(KnowledgeRetrievalNode, kr_data(bases, score_threshold=0.45, top_k=5))
    items = result.outputs["result"]
    assert [i["title"] for i in items] == ["refunds.md"], [(i["title"], i["metadata"]["score"]) for i in items]
    assert result.process_data["mode"] == "vector"


def test_single_mode_takes_the_best_matching_dataset(bases):
    run = Run({"start": {"q": "how many hours do cats sleep"}})
    items = run.execute(KnowledgeRetrievalNode, kr_data(bases, mode="single")).outputs["result"]
    assert {i["metadata"]["dataset_id"] for i in items} == {"pets"}
    assert items[0]["title"] == "cats.md"


def test_results_feed_an_llm_context(bases):
    run = Run({"start": {"q": "when does the shop open?"}}, model=ScriptedChatModel(["At nine."]))
    run.pool.set("kr", "result", run.execute(KnowledgeRetrievalNode, kr_data(["shop-faq"])).outputs["result"])
    data = llm_data([{"role": "system", "text": "Context:\n{{#context#}}"}, {"role": "user", "text": "{{#start.q#}}"}],
                    context={"enabled": True, "variable_selector": ["kr", "result"]})
    result = run.execute(LLMNode, data)
    assert "nine in the morning" in result.inputs["#context#"]


def test_missing_dataset_is_a_validation_warning_and_a_node_error(bases):
    from athanor.workflow.nodes.base import NodeWarning
    from athanor.workflow.services import Services

    node = KnowledgeRetrievalNode("kr", kr_data(["shop-faq", "no-such-kb"]))
    assert node.check(None) == []
    problems = node.service_problems(None)
    assert len(problems) == 1 and "no-such-kb" in problems[0] and "athanor kb create" in problems[0]
    assert isinstance(problems[0], NodeWarning)
    assert node.service_problems(Services(kb_bindings={"no-such-kb": "pets"})) == []  # bound to a local base
    assert KnowledgeRetrievalNode("kr", kr_data(bases)).service_problems(None) == []
    with pytest.raises(WorkflowNodeError, match="no-such-kb"):
        Run({"start": {"q": "refund"}}).execute(KnowledgeRetrievalNode, kr_data(["no-such-kb"]))
