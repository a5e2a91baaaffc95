"""The apps' spans, recorded by the real tracer into a real traces.sqlite: llm calls (in-process smollm2 and the
OpenAI SDK against a loopback server), the agent (run / step / tool), workflows (run / node / the llm node's
call, iteration rounds in threads) and RAG (retrieval, `kb ask`). Tree shapes are checked through parent ids,
token counts against the usage the caller received."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from athanor import tracing
from athanor.agent.calculator import calculator
from athanor.agent.native import ToolCallingAgent
from athanor.agent.react import ReActAgent
from athanor.agent.tools import ToolError, tool
from athanor.llm.base import load_chat_model
from athanor.ops.tracing_setup import TraceSettings, start_tracing
from tests.agent.scripted import ScriptedChatModel
from tests.llm.openai_stub import serve_stub
from tests.llm.smol import one_torch_thread, smollm2

WORKFLOWS = Path(__file__).parents[1] / "workflow" / "fixtures"


@pytest.fixture
def traces(tmp_path):
    t = start_tracing(TraceSettings(path=tmp_path / "traces.sqlite"))
    yield t
    t.stop()


@pytest.fixture
def one_thread():
    with one_torch_thread():
        yield


class Recording:
    """A ChatModel proxy that keeps the Usage each call returned to its caller."""

    def __init__(self, inner) -> None:
        self.inner, self.name, self.usages = inner, inner.name, []

    def chat(self, messages, *, tools=None, **options):
        r = self.inner.chat(messages, tools=tools, **options)
        self.usages.append((r.usage.prompt_tokens, r.usage.completion_tokens))
        return r

    def stream(self, messages, *, tools=None, **options):
        for d in self.inner.stream(messages, tools=tools, **options):
            if d.usage is not None:
                self.usages.append((d.usage.prompt_tokens, d.usage.completion_tokens))
            yield d

    def embed(self, texts):
        return self.inner.embed(texts)


def stored(t) -> list[dict]:
    """Every stored trace, oldest first, with its spans."""
    t.flush()
    return [t.store.get(row["trace_id"]) for row in reversed(t.store.list())]


def only_trace(t) -> dict:
    traces = stored(t)
    assert len(traces) == 1, [tr["name"] for tr in traces]
    return traces[0]


def children(trace: dict, parent: dict | None, kind: str | None = None) -> list[dict]:
    pid = parent["span_id"] if parent else None
    return [s for s in trace["spans"] if s["parent_id"] == pid and (kind is None or s["kind"] == kind)]


def usage_of(span: dict) -> tuple[int, int]:
    a = span["attributes"]
    return a[tracing.INPUT_TOKENS], a[tracing.OUTPUT_TOKENS]


# --- llm ---------------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_local_chat_span_has_the_returned_usage_ttft_params_and_messages(traces, one_thread):
    messages = [{"role": "user", "content": "Name a colour."}]
    r = smollm2().chat(messages, max_tokens=6, temperature=0)
    trace = only_trace(traces)
    [span] = trace["spans"]
    a = span["attributes"]
    assert span["kind"] == "llm" and span["parent_id"] is None and span["status"] == "ok"
    assert a[tracing.OPERATION] == "chat" and a[tracing.REQUEST_MODEL] == "smollm2" and a[tracing.SYSTEM] == "athanor"
    assert a[tracing.MAX_TOKENS] == 6 and a[tracing.TEMPERATURE] == 0
    assert usage_of(span) == (r.usage.prompt_tokens, r.usage.completion_tokens) and r.usage.completion_tokens > 0
    assert (trace["input_tokens"], trace["output_tokens"]) == usage_of(span)
    assert a[tracing.FINISH_REASONS] == [r.finish_reason]
    assert 0 < a[tracing.TTFT] <= span["end_time"] - span["start"]
    assert json.loads(a[tracing.INPUT_MESSAGES]) == messages
    assert json.loads(a[tracing.OUTPUT_MESSAGES]) == {"role": "assistant", "content": r.text}


@pytest.mark.slow
def test_an_abandoned_local_stream_ends_its_span_marked_aborted(traces, one_thread):
    stream = smollm2().stream([{"role": "user", "content": "Count to ten."}], max_tokens=32, temperature=0)
    first = next(stream)
    stream.close()
    [span] = only_trace(traces)["spans"]
    assert span["attributes"]["athanor.aborted"] is True and span["end_time"] is not None
    assert json.loads(span["attributes"][tracing.OUTPUT_MESSAGES])["content"] == first.text
    assert tracing.INPUT_TOKENS not in span["attributes"]  # no final delta: no usage is claimed


def test_openai_compat_spans_streamed_and_not_carry_the_servers_usage_and_model(traces):
    with serve_stub(lambda messages, body: "blue is a colour", model_id="stub-model") as (url, _):
        model = load_chat_model(f"openai:{url}#stub-model", api_key="x")
        whole = model.chat([{"role": "user", "content": "colour?"}], temperature=0.5, max_tokens=9)
        streamed = Recording(model)
        text = "".join(d.text for d in streamed.stream([{"role": "user", "content": "colour?"}], seed=3))
    first, second = stored(traces)
    a = first["spans"][0]["attributes"]
    assert usage_of(first["spans"][0]) == (whole.usage.prompt_tokens, whole.usage.completion_tokens) == (11, 4)
    assert a[tracing.SYSTEM] == "openai" and a[tracing.RESPONSE_MODEL] == "stub-model"
    assert a[tracing.TEMPERATURE] == 0.5 and a[tracing.MAX_TOKENS] == 9 and a[tracing.FINISH_REASONS] == ["stop"]
    b = second["spans"][0]["attributes"]
    assert [usage_of(second["spans"][0])] == streamed.usages and b[tracing.SEED] == 3 and b[tracing.TTFT] > 0
    assert json.loads(b[tracing.OUTPUT_MESSAGES])["content"] == text == "blue is a colour"


# --- agents ------------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_react_agent_over_smollm2_nests_one_llm_span_per_step(traces, one_thread):
    model = Recording(smollm2())
    result = ReActAgent(model, [calculator], max_iterations=2, options={"max_tokens": 24}).run("What is 17*23?")
    trace = only_trace(traces)
    [agent] = children(trace, None)
    assert agent["kind"] == "agent" and trace["name"] == agent["name"] == "invoke_agent react"
    assert agent["attributes"][tracing.OPERATION] == "invoke_agent"
    assert agent["attributes"][tracing.AGENT_NAME] == "react"
    steps = children(trace, agent)
    assert [s["kind"] for s in steps] == ["chain"] * result.steps
    assert [s["attributes"]["athanor.agent.step"] for s in steps] == list(range(1, result.steps + 1))
    llm = [children(trace, s, "llm") for s in steps]
    assert all(len(calls) == 1 for calls in llm)
    assert [usage_of(calls[0]) for calls in llm] == model.usages  # each step's tokens = what the agent received
    assert trace["input_tokens"] == sum(u[0] for u in model.usages)
    tool_calls = [e for e in result.events if e.kind == "tool_call"]
    assert sum(len(children(trace, s, "tool")) for s in steps) == len(tool_calls)
    if result.answer is not None:
        assert agent["attributes"][tracing.OUTPUT_MESSAGES] == result.answer  # text is stored as is
    else:
        assert agent["attributes"]["athanor.agent.stopped_reason"] == result.stopped_reason


def test_react_tool_spans_carry_arguments_results_and_errors(traces):
    @tool
    def weather(city: str) -> str:
        """Weather in a city.

        Args:
            city: the city
        """
        raise ToolError(f"no weather station in {city}")

    replies = ["Thought: Do I need to use a tool? Yes\nAction: calculator\nAction Input: {\"expression\": \"17*23\"}",
               "Thought: Do I need to use a tool? Yes\nAction: weather\nAction Input: Paris",
               "Thought: Do I need to use a tool? Yes\nAction: telescope\nAction Input: moon",
               "Thought: Do I need to use a tool? No\nAI: 391"]
    result = ReActAgent(ScriptedChatModel(replies), [calculator, weather], max_iterations=5).run("17*23?")
    assert result.answer == "391"
    trace = only_trace(traces)
    [agent] = children(trace, None)
    steps = children(trace, agent)
    tools = [children(trace, s, "tool") for s in steps]
    assert [len(t) for t in tools] == [1, 1, 1, 0]
    calc, weather_span, unknown = (t[0] for t in tools[:3])
    assert calc["attributes"][tracing.TOOL_NAME] == "calculator" and calc["status"] == "ok"
    assert json.loads(calc["attributes"][tracing.TOOL_ARGUMENTS]) == {"expression": "17*23"}
    assert calc["attributes"][tracing.TOOL_RESULT] == "391"
    assert weather_span["status"] == "error" and "no weather station in Paris" in weather_span["error"]
    assert unknown["status"] == "error" and "'telescope' is not a valid tool" in unknown["error"]
    assert trace["status"] == "error"  # the trace shows that something in it failed
    assert agent["attributes"][tracing.OUTPUT_MESSAGES] == "391" and agent["status"] == "ok"


def test_native_agent_parallel_tool_calls_nest_under_their_step_through_the_openai_sdk(traces):
    with serve_stub(lambda messages, body: "17*23 is 391 and 2+2 is 4") as (url, _):
        model = Recording(load_chat_model(f"openai:{url}#stub-model", api_key="x"))
        result = ToolCallingAgent(model, [calculator], max_iterations=3).run("17*23 and 2+2?")
    assert result.answer == "17*23 is 391 and 2+2 is 4"
    trace = only_trace(traces)
    [agent] = children(trace, None)
    assert agent["attributes"][tracing.AGENT_NAME] == "tool_calling"
    first, second = children(trace, agent)
    calls = sorted(children(trace, first, "tool"), key=lambda s: s["attributes"][tracing.TOOL_CALL_ID])
    assert [c["attributes"][tracing.TOOL_CALL_ID] for c in calls] == ["call_0", "call_1"]  # ran in threads
    assert [c["attributes"][tracing.TOOL_RESULT] for c in calls] == ["391", "4"]
    assert [json.loads(c["attributes"][tracing.TOOL_ARGUMENTS]) for c in calls] == [{"expression": "17*23"},
                                                                                     {"expression": "2+2"}]
    [ask1], [ask2] = children(trace, first, "llm"), children(trace, second, "llm")
    assert [usage_of(ask1), usage_of(ask2)] == model.usages
    out = json.loads(ask1["attributes"][tracing.OUTPUT_MESSAGES])
    assert [c["function"]["name"] for c in out["tool_calls"]] == ["calculator", "calculator"]
    assert ask1["attributes"][tracing.FINISH_REASONS] == ["tool_calls"]


def test_a_failing_model_fails_the_step_and_the_agent(traces):
    with pytest.raises(AssertionError, match="ran out of replies"):
        ReActAgent(ScriptedChatModel([]), [calculator]).run("hi")
    trace = only_trace(traces)
    [agent] = children(trace, None)
    [step] = children(trace, agent)
    assert agent["status"] == step["status"] == "error" and "ran out of replies" in agent["error"]


# --- workflows ---------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_workflow_llm_node_call_nests_under_its_node_span(traces, one_thread):
    from athanor.workflow.dsl import load_app
    from athanor.workflow.engine import run_workflow
    from athanor.workflow.services import Services

    model = Recording(smollm2())
    services = Services(default_model="smollm2")
    services.register_model("smollm2", model)
    result = run_workflow(load_app(WORKFLOWS / "w2" / "llm_chat_w2.yml"), {"topic": "the sea"}, services)
    assert result.status == "succeeded", result.error
    trace = only_trace(traces)
    [run] = children(trace, None)
    assert run["kind"] == "workflow" and run["attributes"]["athanor.workflow.run_id"] == result.run_id
    assert run["attributes"]["athanor.workflow.app"] == "llm-chat-w2"
    assert json.loads(run["attributes"][tracing.INPUT_MESSAGES]) == {"topic": "the sea"}
    assert json.loads(run["attributes"][tracing.OUTPUT_MESSAGES]) == result.outputs
    nodes = {s["attributes"]["athanor.workflow.node_id"]: s for s in children(trace, run, "node")}
    assert set(nodes) == {"start", "llm", "end"}
    assert nodes["llm"]["attributes"]["athanor.workflow.node_type"] == "llm"
    assert nodes["llm"]["attributes"]["athanor.workflow.status"] == "succeeded"
    [call] = children(trace, nodes["llm"], "llm")
    assert [usage_of(call)] == model.usages and sum(usage_of(call)) == result.total_tokens
    assert json.loads(call["attributes"][tracing.OUTPUT_MESSAGES])["content"] == result.outputs["answer"]
    assert not children(trace, nodes["start"]) and not children(trace, nodes["end"])


@pytest.mark.parametrize("parallel", [False, True])
def test_iteration_rounds_nest_under_the_iteration_node_even_in_threads(traces, parallel):
    from athanor.workflow.dsl import load_app
    from athanor.workflow.engine import WorkflowEngine

    app = load_app(WORKFLOWS / "w1" / "iteration_format_w1.yml")
    app.nodes["loop1"].data["is_parallel"] = parallel
    result = WorkflowEngine(app).run({})
    assert result.outputs == {"output": ["output: 1", "output: 2", "output: 3"]}
    trace = only_trace(traces)
    [run] = children(trace, None)
    nodes = {s["attributes"]["athanor.workflow.node_id"]: s for s in children(trace, run, "node")}
    inner = children(trace, nodes["loop1"], "node")
    ids = {s["attributes"]["athanor.workflow.node_id"] for s in inner}
    assert "fmt" in ids and "loop1" not in ids  # the round's nodes (its iteration-start and the template)
    for nid in ids:
        assert sorted(s["attributes"]["athanor.workflow.index"] for s in inner
                      if s["attributes"]["athanor.workflow.node_id"] == nid) == [0, 1, 2]
    assert len(trace["spans"]) == 1 + len(nodes) + len(inner) == 1 + len(nodes) + 3 * len(ids)


def test_a_failed_node_fails_its_span_and_the_run(traces):
    from athanor.workflow.dsl import load_app
    from athanor.workflow.engine import WorkflowEngine
    from athanor.workflow.services import Services

    services = Services(default_model="scripted")
    services.register_model("scripted", ScriptedChatModel([]))  # the llm node's model call raises
    result = WorkflowEngine(load_app(WORKFLOWS / "w2" / "llm_chat_w2.yml"), services).run({"topic": "x"})
    assert result.status == "failed"
    trace = only_trace(traces)
    [run] = children(trace, None)
    [llm_node] = [s for s in children(trace, run) if s["attributes"]["athanor.workflow.node_id"] == "llm"]
    assert run["status"] == llm_node["status"] == "error" and "ran out of replies" in llm_node["error"]
    assert run["error"] == result.error


# --- RAG ---------------------------------------------------------------------------------------------------


@pytest.fixture
def tiny_kb():
    from athanor.rag.kb import KnowledgeBase

    kb = KnowledgeBase.create("bikes")
    kb.add_texts([("tyres.md", "To patch a punctured tyre, find the hole, roughen it, glue a patch over it."),
                  ("chains.md", "Oil the chain every few hundred kilometres and wipe off the excess.")])
    yield kb
    kb.close()


def test_retrieval_span_records_the_search(traces, tiny_kb):
    hits = tiny_kb.query("how do I patch a tyre", k=1, mode="hybrid")
    trace = only_trace(traces)
    [span] = trace["spans"]
    a = span["attributes"]
    assert span["kind"] == "retrieval" and a["athanor.retrieval.kb"] == "bikes"
    assert a["athanor.retrieval.top_k"] == 1 and a["athanor.retrieval.mode"] == "hybrid"
    assert a["athanor.retrieval.results"] == len(hits) == 1
    assert a[tracing.INPUT_MESSAGES] == "how do I patch a tyre"
    got = json.loads(a[tracing.OUTPUT_MESSAGES])
    assert [(g["chunk_id"], g["source"]) for g in got] == [(h.chunk_id, h.meta["source"]) for h in hits]
    assert got[0]["score"] == pytest.approx(hits[0].score, abs=1e-6)


@pytest.mark.slow
@pytest.mark.parametrize("streamed", [False, True])
def test_kb_ask_is_a_chain_of_retrievals_and_the_answer(traces, tiny_kb, one_thread, streamed):
    from athanor.rag.ask import ask, ask_stream

    model = Recording(smollm2())
    question = "How do I patch a punctured tyre?"
    if streamed:
        hits, pieces, _ = ask_stream(tiny_kb, model, question, k=1, max_tokens=12, temperature=0)
        text = "".join(pieces).strip()
    else:
        answer = ask(tiny_kb, model, question, k=1, max_tokens=12, temperature=0)
        hits, text = answer.sources, answer.text
    assert hits
    trace = only_trace(traces)
    [chain] = children(trace, None)
    assert chain["kind"] == "chain" and chain["name"] == "kb ask"
    retrievals = children(trace, chain, "retrieval")
    assert len(retrievals) == 2  # the min-score probe and the search the answer uses
    [call] = children(trace, chain, "llm")
    assert [usage_of(call)] == model.usages
    assert chain["attributes"][tracing.OUTPUT_MESSAGES] == text
    assert max(r["end_time"] for r in retrievals) <= call["start"]
