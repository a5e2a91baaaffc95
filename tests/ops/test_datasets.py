"""Traces -> LLaMA-Factory data: spans written through the real tracing seam into a real traces.sqlite, exported,
then read back by athanor's own dataset loader and tokenized by `athanor train --check` with the model's template."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from athanor import tracing
from athanor.data.formats import PreferencePair
from athanor.data.registry import load_datasets
from athanor.ops.datasets import export_traces, parse_since, write_dataset
from athanor.ops.tracing_setup import TraceSettings, start_tracing

SYSTEM = "You are a calculator assistant."
TOOLS = [{"type": "function", "function": {"name": "calculator", "description": "Evaluate arithmetic.",
                                           "parameters": {"type": "object",
                                                          "properties": {"expression": {"type": "string"}},
                                                          "required": ["expression"]}}}]


def _llm_call(model: str, messages: list[dict], reply: dict, tools=None) -> None:
    with tracing.span(f"chat {model}", "llm", **{tracing.REQUEST_MODEL: model}) as s:
        s.set_content(input=messages, output=[reply])
        if tools:
            s.set("gen_ai.tool.definitions", json.dumps(tools))


def chat_trace(question: str, answer: str, model: str = "smollm2") -> str:
    with tracing.span("POST /v1/chat/completions", "http") as root:
        _llm_call(model, [{"role": "user", "content": question}], {"role": "assistant", "content": answer})
    return root.trace_id


def agent_trace(question: str, expression: str, result: str, answer: str) -> str:
    """What the native agent records: step 1 calls the tool, the tool runs, step 2 answers from its result."""
    call = {"role": "assistant", "content": None, "tool_calls": [
        {"id": "call_0", "type": "function", "function": {"name": "calculator",
                                                          "arguments": json.dumps({"expression": expression})}}]}
    first = [{"role": "system", "content": SYSTEM}, {"role": "user", "content": question}]
    with tracing.span("agent", "agent") as root:
        _llm_call("smollm2", first, call, TOOLS)
        with tracing.span("calculator", "tool", **{tracing.TOOL_NAME: "calculator"}) as t:
            t.set_content(arguments={"expression": expression}, result=result)
        step2 = first + [call, {"role": "tool", "tool_call_id": "call_0", "content": result}]
        _llm_call("smollm2", step2, {"role": "assistant", "content": answer}, TOOLS)
    return root.trace_id


@pytest.fixture()
def traced(tmp_path):
    t = start_tracing(TraceSettings(path=tmp_path / "traces.sqlite"))
    yield t
    t.stop()


def test_sft_and_dpo_records_from_rated_and_corrected_traces(traced, tmp_path):
    good = chat_trace("What is the capital of France?", "Paris.")
    dup = chat_trace("What is the capital of France?", "Paris.")
    unrated = chat_trace("Hi", "Hello!")
    held = chat_trace("What is 2+2?", "4")
    bad_agent = agent_trace("What is 17 * 23?", "17 * 23", "391", "The answer is 381.")
    wrong_call = agent_trace("What is 6 * 7?", "6 + 7", "13", "It is 13.")
    traced.flush()
    store = traced.store
    for tid in (good, dup, held):
        store.add_feedback(tid, 1.0)
    store.add_feedback(bad_agent, -1.0, correction="The answer is 391.")
    fixed = [{"role": "assistant", "content": None, "tool_calls": [
        {"type": "function", "function": {"name": "calculator", "arguments": {"expression": "6 * 7"}}}]},
        {"role": "tool", "content": "42"}, {"role": "assistant", "content": "It is 42."}]
    store.add_feedback(wrong_call, -1.0, correction=json.dumps(fixed))
    store.set_held_out([held])

    sft = export_traces(store, "sft")
    assert [r["_trace_id"] for r in sft] == [good, bad_agent, wrong_call]  # oldest first; dup, unrated, held gone
    assert unrated not in {r["_trace_id"] for r in sft}
    assert sft[0]["conversations"] == [{"from": "human", "value": "What is the capital of France?"},
                                       {"from": "gpt", "value": "Paris."}]
    agent = sft[1]
    assert agent["system"] == SYSTEM and json.loads(agent["tools"]) == TOOLS
    assert [t["from"] for t in agent["conversations"]] == ["human", "function_call", "observation", "gpt"]
    assert json.loads(agent["conversations"][1]["value"]) == {"name": "calculator",
                                                              "arguments": {"expression": "17 * 23"}}
    assert agent["conversations"][3]["value"] == "The answer is 391."  # the correction replaced the final answer
    assert json.loads(sft[2]["conversations"][1]["value"])["arguments"] == {"expression": "6 * 7"}
    assert sft[2]["conversations"][2:] == [{"from": "observation", "value": "42"}, {"from": "gpt", "value": "It is 42."}]

    dpo = export_traces(store, "dpo")
    assert [r["_trace_id"] for r in dpo] == [bad_agent]  # the rewritten tool path is not a one-reply pair
    assert dpo[0]["chosen"] == {"from": "gpt", "value": "The answer is 391."}
    assert dpo[0]["rejected"] == {"from": "gpt", "value": "The answer is 381."}
    assert [t["from"] for t in dpo[0]["conversations"]] == ["human", "function_call", "observation"]

    assert [r["_trace_id"] for r in export_traces(store, "sft", feedback="good")] == [good]
    assert export_traces(store, "sft", trace_ids=[held]) == []  # held out even when named
    assert export_traces(store, "sft", model="other") == []
    with pytest.raises(KeyError):
        export_traces(store, "sft", trace_ids=["0" * 32])


def test_written_files_load_in_athanors_trainer(traced, tmp_path):
    agent = agent_trace("What is 17 * 23?", "17 * 23", "391", "The answer is 381.")
    chat = chat_trace("Name a colour.", "Blue.")
    traced.flush()
    traced.store.add_feedback(agent, -1.0, correction="The answer is 391.")
    traced.store.add_feedback(chat, 0.5)
    data = tmp_path / "data"
    write_dataset(export_traces(traced.store, "sft"), data / "from_traces.jsonl", "sft")
    write_dataset(export_traces(traced.store, "dpo"), data / "prefs.jsonl", "dpo")
    info = json.loads((data / "dataset_info.json").read_text())
    assert info["from_traces"]["formatting"] == "sharegpt" and info["from_traces"]["_trace_ids"] == [agent, chat]
    assert info["prefs"]["ranking"] is True and info["prefs"]["_trace_ids"] == [agent]
    assert "_trace_id" not in (data / "from_traces.jsonl").read_text()

    samples, reports = load_datasets(["from_traces"], data)  # the registry name, as a YAML names it
    assert reports[0].num_valid == 2 and reports[0].num_invalid == 0
    call = samples[0].messages[2]
    assert call["tool_calls"][0]["function"] == {"name": "calculator", "arguments": {"expression": "17 * 23"}}
    assert samples[0].tools == TOOLS
    pairs, _ = load_datasets([str(data / "prefs.jsonl")])  # the bare file: the format is sniffed
    assert isinstance(pairs[0], PreferencePair) and pairs[0].chosen["content"] == "The answer is 391."


def test_train_check_tokenizes_the_export_with_the_models_template(traced, tmp_path, smollm2_path):
    from athanor.train.check import check_run

    tid = agent_trace("What is 17 * 23?", "17 * 23", "391", "The answer is 381.")
    traced.flush()
    traced.store.add_feedback(tid, -1.0, correction="The answer is 391.")
    write_dataset(export_traces(traced.store, "sft"), tmp_path / "data" / "loop.jsonl", "sft")
    yaml = tmp_path / "sft.yaml"
    yaml.write_text(f"model_name_or_path: {smollm2_path}\nstage: sft\nfinetuning_type: lora\nlora_target: all\n"
                    f"dataset: loop\ndataset_dir: {tmp_path / 'data'}\ncutoff_len: 1024\n"
                    f"output_dir: {tmp_path / 'out'}\nmax_steps: 1\n")
    lines: list[str] = []
    plan = check_run(yaml, echo=lines.append)
    assert plan.num_samples == 1 and plan.tokens_per_epoch > 50


def test_cli_export_and_parse_since(traced, tmp_path, monkeypatch):
    from athanor.cli import app

    tid = chat_trace("Name a colour.", "Blue.")
    traced.flush()
    traced.store.add_feedback(tid, 1.0)
    out = tmp_path / "d" / "good.jsonl"
    r = CliRunner().invoke(app, ["traces", "export", "--format", "sft", "--since", "1h", "--feedback", "good",
                                 "--db", str(traced.store.path), "-o", str(out)])
    assert r.exit_code == 0, r.output
    assert "wrote 1 sft records" in r.output
    assert json.loads(out.read_text())["conversations"][1] == {"from": "gpt", "value": "Blue."}
    r = CliRunner().invoke(app, ["traces", "export", "--format", "dpo", "--db", str(traced.store.path),
                                 "-o", str(tmp_path / "none.jsonl")])
    assert r.exit_code != 0 and "nothing written" in str(r.exception or r.output)
    assert parse_since("1h", now=10_000) == 10_000 - 3600 and parse_since("90", now=100) == 10
    with pytest.raises(ValueError):
        parse_since("yesterday")


def test_http_export_route(tmp_path):
    from fastapi.testclient import TestClient

    from athanor.serve.app import create_app

    app = create_app(trace=TraceSettings(path=tmp_path / "served.sqlite"))
    with TestClient(app) as client:  # the server's tracer is installed: spans made here land in its store
        good = chat_trace("Name a colour.", "Blue.")
        bad = agent_trace("What is 17 * 23?", "17 * 23", "391", "The answer is 381.")
        app.state.tracing.flush()
        app.state.tracing.store.add_feedback(good, 1.0)
        app.state.tracing.store.add_feedback(bad, -1.0, correction="The answer is 391.")
        r = client.post("/v1/traces/export", json={"format": "dpo"})
        assert r.status_code == 200 and r.headers["content-type"].startswith("application/jsonl")
        (pair,) = [json.loads(line) for line in r.text.splitlines()]
        assert pair["chosen"]["value"] == "The answer is 391." and r.headers["x-trace-ids"] == bad
        r = client.post("/v1/traces/export", json={"format": "sft", "since": 3600, "feedback": "good"})
        assert [json.loads(line)["conversations"][1]["value"] for line in r.text.splitlines()] == ["Blue."]
        for body, status in (({"format": "csv"}, 400), ({"since": "yesterday"}, 400),
                             ({"trace_ids": ["f" * 32]}, 404), ({"feedback": "meh"}, 400)):
            r = client.post("/v1/traces/export", json=body)
            assert r.status_code == status and set(r.json()["error"]) == {"message", "type", "param", "code"}, body


def test_tools_offered_to_a_model_call_reach_the_exported_record(traced):
    """The llm span the ChatModels record (llm/traced.py) keeps the offered tool definitions, so an exported agent
    trace carries `tools` for the template to render, as LLaMA-Factory's sharegpt format expects."""
    from athanor.llm.base import ChatResponse, Usage
    from athanor.llm.traced import close_llm_span, open_llm_span
    from athanor.text.tool_parsing import ToolCall

    messages = [{"role": "system", "content": SYSTEM}, {"role": "user", "content": "What is 17*23?"}]
    with tracing.span("agent", "agent") as root:
        span = open_llm_span("smollm2", "athanor", messages, {"temperature": 0}, TOOLS)
        call = ToolCall(id="call_0", name="calculator", arguments=json.dumps({"expression": "17*23"}))
        close_llm_span(span, ChatResponse("", [call], "tool_calls", Usage(30, 12)))
    traced.flush()
    traced.store.add_feedback(root.trace_id, 1.0)
    [record] = export_traces(traced.store, "sft", trace_ids=[root.trace_id])
    assert json.loads(record["tools"]) == TOOLS
    assert record["conversations"][-1]["from"] == "function_call"
