"""llm, question-classifier and parameter-extractor nodes against a scripted model: the prompts they build,
the chunks they stream, how they read replies (every classifier class routes), and their failures."""

from __future__ import annotations

import json

import pytest

from athanor.llm.base import ChatResponse, ToolCall, Usage
from athanor.workflow.nodes.base import WorkflowNodeError
from athanor.workflow.nodes.classify import ParameterExtractorNode, QuestionClassifierNode
from athanor.workflow.nodes.model import LLMNode
from tests.workflow.w2_helpers import MODEL, Run, ScriptedChatModel, llm_data

# ------------------------------------------------------------------------------------------------ llm


def test_llm_renders_references_streams_every_chunk_and_reports_usage():
    model = ScriptedChatModel(["Paris is the capital of France."])
    run = Run({"start": {"country": "France"}}, model=model)
    data = llm_data([{"role": "system", "text": "You answer in one sentence."},
                     {"role": "user", "text": "Capital of {{#start.country#}}?"}])
    result = run.execute(LLMNode, data)

    call = model.calls[0]
    assert call["messages"] == [{"role": "system", "content": "You answer in one sentence."},
                                {"role": "user", "content": "Capital of France?"}]
    assert call["options"] == {"temperature": 0.3, "max_tokens": 64}  # response_format is not ours: dropped
    assert len(run.chunks) > 1 and all(sel == ["n1", "text"] for sel, _ in run.chunks)
    assert run.streamed() == result.outputs["text"] == "Paris is the capital of France."
    assert result.outputs["finish_reason"] == "stop"
    assert result.outputs["usage"]["completion_tokens"] == len("Paris is the capital of France.")
    assert result.metadata["total_tokens"] == result.outputs["usage"]["total_tokens"] > 0
    assert result.process_data["prompts"] == call["messages"]


def test_llm_context_from_knowledge_results_fills_the_context_slot():
    model = ScriptedChatModel(["ok"])
    results = [{"content": "Refunds take 5 days.", "title": "a.md", "metadata": {}},
               {"content": "Shipping is free over $50.", "title": "b.md", "metadata": {}}]
    run = Run({"kr": {"result": results}, "start": {"q": "refund time?"}}, model=model)
    data = llm_data([{"role": "system", "text": "Use this:\n{{#context#}}"},
                     {"role": "user", "text": "{{#start.q#}}"}],
                    context={"enabled": True, "variable_selector": ["kr", "result"]})
    result = run.execute(LLMNode, data)
    assert model.calls[0]["messages"][0]["content"] == "Use this:\nRefunds take 5 days.\nShipping is free over $50."
    assert result.inputs["#context#"].startswith("Refunds take 5 days.")


def test_llm_context_text_is_not_rendered_again():
    model = ScriptedChatModel(["ok"])
    run = Run({"x": {"doc": "literal {{#start.q#}} stays"}, "start": {"q": "Q"}}, model=model)
    data = llm_data([{"role": "user", "text": "{{#context#}} / {{#start.q#}}"}],
                    context={"enabled": True, "variable_selector": ["x", "doc"]})
    run.execute(LLMNode, data)
    assert model.calls[0]["messages"][0]["content"] == "literal {{#start.q#}} stays / Q"


def test_llm_memory_window_keeps_last_turns_then_appends_the_query():
    history = []
    for i in range(1, 4):
        history += [{"role": "user", "content": f"q{i}"}, {"role": "assistant", "content": f"a{i}"}]
    model = ScriptedChatModel(["a4"])
    run = Run(system={"query": "q4", "history": history}, model=model)
    memory = {"window": {"enabled": True, "size": 2}, "query_prompt_template": "{{#sys.query#}}!"}
    run.execute(LLMNode, llm_data([{"role": "system", "text": "sys"}], memory=memory))
    assert [m["content"] for m in model.calls[0]["messages"]] == ["sys", "q2", "a2", "q3", "a3", "q4!"]


def test_llm_memory_without_template_uses_sys_query_and_window_off_keeps_all():
    history = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]
    model = ScriptedChatModel(["x"])
    run = Run(system={"query": "and now?", "history": history}, model=model)
    run.execute(LLMNode, llm_data([{"role": "system", "text": "sys"}], memory={"window": {"enabled": False}}))
    assert [m["content"] for m in model.calls[0]["messages"]] == ["sys", "hi", "hello", "and now?"]


def test_llm_completion_mode_fills_histories_and_query():
    history = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]
    model = ScriptedChatModel(["x"])
    run = Run({"start": {"topic": "tea"}}, system={"query": "more?", "history": history}, model=model)
    data = llm_data({"text": "Topic {{#start.topic#}}\n#histories#\nUser: #sys.query#"},
                    memory={"role_prefix": {"user": "U", "assistant": "A"}, "window": {"enabled": False}})
    data["model"]["mode"] = "completion"
    run.execute(LLMNode, data)
    assert model.calls[0]["messages"] == [{"role": "user", "content": "Topic tea\nU: hi\nA: hello\nUser: more?"}]


def test_llm_jinja2_prompt_uses_declared_variables():
    model = ScriptedChatModel(["x"])
    run = Run({"start": {"items": ["a", "b"]}}, model=model)
    data = llm_data([{"role": "user", "edition_type": "jinja2", "text": "",
                      "jinja2_text": "{% for i in items %}<{{ i }}>{% endfor %}"}],
                    prompt_config={"jinja2_variables": [{"variable": "items", "value_selector": ["start", "items"]}]})
    run.execute(LLMNode, data)
    assert model.calls[0]["messages"][0]["content"] == "<a><b>"


SCHEMA = {"type": "object", "properties": {"city": {"type": "string"}, "days": {"type": "integer"}},
          "required": ["city", "days"]}


def test_llm_structured_output_valid_is_parsed_and_the_schema_is_asked_for():
    model = ScriptedChatModel(['```json\n{"city": "Oslo", "days": 3}\n```'])
    run = Run({"start": {"q": "3 days in Oslo"}}, model=model)
    data = llm_data([{"role": "system", "text": "Plan trips."}, {"role": "user", "text": "{{#start.q#}}"}],
                    structured_output_enabled=True, structured_output={"schema": SCHEMA})
    result = run.execute(LLMNode, data)
    assert result.outputs["structured_output"] == {"city": "Oslo", "days": 3}
    system = model.calls[0]["messages"][0]["content"]
    assert system.startswith("Plan trips.") and json.dumps(SCHEMA) in system


@pytest.mark.parametrize("reply, words", [('{"city": "Oslo", "days": "three"}', ["days", "integer"]),
                                          ('{"city": "Oslo"}', ["days", "required"]),
                                          ("Oslo for three days", ["not a JSON object"])])
def test_llm_structured_output_invalid_fails_the_node(reply, words):
    run = Run(model=ScriptedChatModel([reply]))
    data = llm_data([{"role": "user", "text": "plan"}], structured_output_enabled=True,
                    structured_output={"schema": SCHEMA})
    with pytest.raises(WorkflowNodeError) as e:
        run.execute(LLMNode, data)
    assert all(w in str(e.value) for w in words), str(e.value)


def test_llm_static_problems_and_unresolvable_model():
    from athanor.workflow.services import Services

    bad = LLMNode("n", {"type": "llm", "model": {"provider": "openai"}, "prompt_template": "text",
                        "context": {"enabled": True}, "structured_output_enabled": True})
    problems = bad.check(None)
    assert any("model" in p for p in problems) and any("prompt_template" in p for p in problems)
    assert any("context" in p for p in problems) and any("schema" in p for p in problems)
    assert LLMNode("n", llm_data([{"role": "user", "text": "hi"}])).check(None) == []
    run = Run(services=Services())  # no map, no default
    with pytest.raises(WorkflowNodeError, match="gpt-4o-mini.*no default model"):
        run.execute(LLMNode, llm_data([{"role": "user", "text": "hi"}]))


def test_llm_missing_reference_is_a_node_error():
    run = Run(model=ScriptedChatModel(["x"]))
    with pytest.raises(WorkflowNodeError, match="start.nope"):
        run.execute(LLMNode, llm_data([{"role": "user", "text": "{{#start.nope#}}"}]))


# ------------------------------------------------------------------------------------------------ classifier

CLASSES = [{"id": "c-billing", "name": "Billing"}, {"id": "c-tech", "name": "Technical problem"},
           {"id": "c-other", "name": "Other"}]


def classifier_data(**extra) -> dict:
    return {"type": "question-classifier", "model": dict(MODEL), "classes": CLASSES,
            "query_variable_selector": ["start", "q"], "instruction": "Support desk of {{#start.shop#}}.", **extra}


@pytest.mark.parametrize("index", range(len(CLASSES)))
@pytest.mark.parametrize("style", ["number", "name", "json", "chatty"])
def test_classifier_routes_each_class(index, style):
    cls = CLASSES[index]
    reply = {"number": f"{index + 1}", "name": cls["name"].lower() + ".",
             "json": json.dumps({"category_id": cls["id"], "category_name": cls["name"]}),
             "chatty": f"I think this is about {cls['name']}, clearly."}[style]
    model = ScriptedChatModel([reply])
    run = Run({"start": {"q": "my invoice is wrong", "shop": "Acme"}}, model=model)
    result = run.execute(QuestionClassifierNode, classifier_data())
    assert result.handle == cls["id"]
    assert result.outputs["class_name"] == cls["name"] and result.outputs["class_id"] == cls["id"]
    system, user = model.calls[0]["messages"]
    assert "Support desk of Acme." in system["content"] and "2. Technical problem" in system["content"]
    assert user == {"role": "user", "content": "my invoice is wrong"}
    assert "note" not in result.process_data


def test_classifier_unreadable_reply_falls_back_to_the_first_class_with_a_note():
    run = Run({"start": {"q": "??", "shop": "Acme"}}, model=ScriptedChatModel(["banana"]))
    result = run.execute(QuestionClassifierNode, classifier_data())
    assert result.handle == "c-billing" and result.process_data["matched_by"] == "fallback"
    assert "first class" in result.process_data["note"]


def test_classifier_checks():
    assert QuestionClassifierNode("q", classifier_data()).check(None) == []
    problems = QuestionClassifierNode("q", classifier_data(classes=[], query_variable_selector=[])).check(None)
    assert any("no classes" in p for p in problems) and any("query" in p for p in problems)


# ------------------------------------------------------------------------------------------------ extractor

PARAMS = [{"name": "city", "type": "string", "description": "destination", "required": True},
          {"name": "nights", "type": "number", "required": True},
          {"name": "pets", "type": "bool", "required": False},
          {"name": "room", "type": "select", "options": ["single", "double"], "required": False},
          {"name": "extras", "type": "array[string]", "required": False}]


def extractor_data(mode="function_call") -> dict:
    return {"type": "parameter-extractor", "model": dict(MODEL), "parameters": PARAMS, "query": ["start", "q"],
            "instruction": "Hotel bookings.", "reasoning_mode": mode}


Q = {"start": {"q": "Two nights in Rome, double room, with my dog, breakfast please"}}


def test_extractor_function_call_mode_uses_the_tool_call():
    args = json.dumps({"city": "Rome", "nights": "2", "pets": "true", "room": "double", "extras": ["breakfast"]})
    model = ScriptedChatModel([ChatResponse("", [ToolCall("c1", "extract_parameters", args)], "tool_calls", Usage())])
    result = Run(Q, model=model).execute(ParameterExtractorNode, extractor_data())
    assert result.outputs | {"__usage": None} == {"city": "Rome", "nights": 2, "pets": True, "room": "double",
                                                  "extras": ["breakfast"], "__is_success": 1, "__reason": None,
                                                  "__usage": None}
    tool = model.calls[0]["tools"][0]["function"]
    assert tool["name"] == "extract_parameters" and tool["parameters"]["required"] == ["city", "nights"]
    assert tool["parameters"]["properties"]["room"]["enum"] == ["single", "double"]


def test_extractor_reads_json_text_in_prompt_mode_and_when_the_model_skips_the_tool():
    reply = 'Sure! {"city": "Rome", "nights": 2}'
    for mode in ("prompt", "function_call"):
        model = ScriptedChatModel([reply])
        result = Run(Q, model=model).execute(ParameterExtractorNode, extractor_data(mode))
        assert result.outputs["city"] == "Rome" and result.outputs["nights"] == 2
        assert result.outputs["__is_success"] == 1 and result.outputs["pets"] is False
        assert (model.calls[0]["tools"] is None) == (mode == "prompt")
        if mode == "prompt":
            assert '"required": ["city", "nights"]' in model.calls[0]["messages"][0]["content"]


@pytest.mark.parametrize("reply, reason", [('{"city": "Rome"}', "nights is required"),
                                           ('{"city": "Rome", "nights": "many"}', "expected a number"),
                                           ('{"city": "Rome", "nights": 2, "room": "suite"}', "not one of"),
                                           ("I cannot help with that", "no JSON object")])
def test_extractor_failure_is_reported_not_raised(reply, reason):
    result = Run(Q, model=ScriptedChatModel([reply])).execute(ParameterExtractorNode, extractor_data("prompt"))
    assert result.outputs["__is_success"] == 0 and reason in result.outputs["__reason"]
    assert result.outputs["extras"] == [] and result.outputs["pets"] is False


def test_extractor_checks():
    assert ParameterExtractorNode("p", extractor_data()).check(None) == []
    bad = extractor_data()
    bad["parameters"] = [{"name": "x", "type": "date"}, {"name": "__reason", "type": "string"}]
    problems = ParameterExtractorNode("p", bad).check(None)
    assert any("unknown type 'date'" in p for p in problems) and any("reserved" in p for p in problems)


def test_classifier_mentions_are_whole_words_and_cjk_names_match_inside_text():
    from athanor.workflow.nodes.classify import pick_class

    short = [{"id": "b", "name": "Billing"}, {"id": "o", "name": "Other"}]
    assert pick_class("You're right, it is about other things", short) == (short[1], "mention")
    assert pick_class("Nothing fits", short) == (short[0], "fallback")  # "o" inside words is no mention
    cjk = [{"id": "1715846546749", "name": "健康咨询"}, {"id": "1715846565625", "name": "使用帮助"}]
    assert pick_class("这个问题属于使用帮助类别", cjk) == (cjk[1], "mention")


@pytest.mark.parametrize("kind, value, expected", [("array[number]", ["1", 2.5], [1, 2.5]),
                                                    ("array[bool]", ["yes", False], [True, False]),
                                                    ("array[object]", [{"a": 1}], [{"a": 1}]),
                                                    ("number", "1e3", 1000), ("string", {"k": "v"}, '{"k": "v"}')])
def test_extractor_coerces_types(kind, value, expected):
    from athanor.workflow.nodes.classify import coerce

    assert coerce({"name": "p", "type": kind}, value) == expected


@pytest.mark.parametrize("kind, value", [("array[object]", ["x"]), ("array[number]", "1,2"), ("bool", "maybe")])
def test_extractor_refuses_wrong_types(kind, value):
    from athanor.workflow.nodes.classify import coerce

    with pytest.raises(ValueError, match="parameter p"):
        coerce({"name": "p", "type": kind}, value)


def test_llm_context_variable_unset_renders_empty():
    model = ScriptedChatModel(["x"])
    run = Run({"start": {"q": "Q"}}, model=model)
    data = llm_data([{"role": "user", "text": "[{{#context#}}] {{#start.q#}}"}],
                    context={"enabled": True, "variable_selector": ["kr", "result"]})
    result = run.execute(LLMNode, data)
    assert model.calls[0]["messages"][0]["content"] == "[] Q" and result.inputs == {}


def test_llm_completion_mode_without_memory_drops_the_histories_slot():
    model = ScriptedChatModel(["x"])
    data = llm_data({"text": "<h>#histories#</h> go"})
    data["model"]["mode"] = "completion"
    Run(model=model).execute(LLMNode, data)
    assert model.calls[0]["messages"] == [{"role": "user", "content": "<h></h> go"}]


def test_llm_stops_streaming_when_the_run_deadline_passes():
    import time

    from athanor.workflow.nodes.base import RunContext

    model = ScriptedChatModel(["a long reply that would stream in many pieces"])
    run = Run(model=model)
    ctx = RunContext(run.pool, run.services, "n1", "r", on_stream=lambda s, t: run.chunks.append((s, t)),
                     deadline=time.monotonic() - 1)
    with pytest.raises(WorkflowNodeError, match="time limit"):
        LLMNode("n1", llm_data([{"role": "user", "text": "go"}])).run(ctx)
    assert len(run.chunks) == 1  # the first piece went out, then the node stopped reading the stream
