"""The ReAct agent end to end with the real built-in model: in-process, and unchanged through an OpenAI-compatible
server. The small model is not expected to be right; the run must END HONESTLY (an answer, or "stopped after N
steps" with no answer)."""

from __future__ import annotations

import functools
import io

import pytest

from athanor.agent.calculator import calculator
from athanor.agent.cli import agent_command
from athanor.agent.react import ReActAgent
from athanor.llm.base import load_chat_model
from tests.llm.openai_stub import serve_app, serve_stub
from tests.llm.smol import one_torch_thread, smollm2

pytestmark = pytest.mark.slow


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    with one_torch_thread():
        yield


QUESTION = "What is 17*23?"
OPTIONS = {"max_tokens": 64}


@functools.lru_cache(maxsize=1)
def direct_run():
    """The in-process run both server tests compare with (greedy: the same every time), computed once."""
    return ReActAgent(smollm2(), [calculator], max_iterations=2, options=OPTIONS).run(QUESTION)


def assert_ends_honestly(result, max_iterations):
    kinds = [e.kind for e in result.events]
    assert kinds[-1] in ("answer", "stopped") and kinds.count("answer") + kinds.count("stopped") == 1
    if kinds[-1] == "answer":
        assert result.answer and result.answer.strip() and result.stopped_reason is None
    else:
        assert result.answer is None and result.stopped_reason == f"stopped after {max_iterations} steps"
    assert 1 <= result.steps <= max_iterations


def test_react_agent_in_process_and_through_an_openai_server_ends_honestly_and_identically():
    """In-process first; then a stub OpenAI server backed by the same model: greedy decoding makes both runs
    identical, so the agent runs unchanged through openai_compat."""
    local = smollm2()

    def reply(messages, body):
        return local.chat(messages, stop=body.get("stop"), temperature=body.get("temperature"),
                          max_tokens=body.get("max_tokens")).text

    direct = direct_run()
    assert_ends_honestly(direct, 2)
    with serve_stub(reply, model_id="smollm2") as (url, requests):
        remote_model = load_chat_model(f"openai:{url}#smollm2", api_key="x")
        remote = ReActAgent(remote_model, [calculator], max_iterations=2, options=OPTIONS).run(QUESTION)
    assert_ends_honestly(remote, 2)
    assert [(e.kind, e.text) for e in remote.events] == [(e.kind, e.text) for e in direct.events]
    assert requests[0]["body"]["stop"] == ["\nObservation:", "Observation:"]


def test_cli_prints_steps_and_ends_honestly():
    out = io.StringIO()
    status = agent_command(smollm2(), "calculator", QUESTION, max_iterations=2, out=out)
    text = out.getvalue()
    last = text.strip().splitlines()[-1]
    if status == 0:
        assert last.startswith("AI: ") and len(last) > 4
    else:
        assert status == 2 and last == "Agent stopped after 2 steps without an answer."


def test_same_agent_against_a_real_athanor_serve():
    """`athanor serve` (when present in this checkout) on 127.0.0.1 with smollm2, through openai_compat."""
    app_module = pytest.importorskip("athanor.serve.app", reason="athanor serve is not in this checkout")
    from athanor.engine.config import EngineConfig

    app = app_module.create_app(engine_config=EngineConfig(kv_cache_bytes=64 * 2**20))
    with serve_app(app) as url:
        model = load_chat_model(f"openai:{url}/v1#smollm2", api_key="unused")
        reply = model.chat([{"role": "user", "content": "Say hi."}], temperature=0, max_tokens=8)
        assert reply.text and reply.usage.completion_tokens > 0
        streamed = "".join(d.text for d in model.stream([{"role": "user", "content": "Say hi."}],
                                                         temperature=0, max_tokens=8))
        assert streamed == reply.text
        result = ReActAgent(model, [calculator], max_iterations=2, options=OPTIONS).run(QUESTION)
    assert_ends_honestly(result, 2)
    assert [(e.kind, e.text) for e in result.events] == [(e.kind, e.text) for e in direct_run().events]


def test_wall_time_stop_frees_the_in_process_engine():
    local = smollm2()
    result = ReActAgent(local, [calculator], max_seconds=0.05, options={"max_tokens": 200}).run(QUESTION)
    assert result.answer is None and result.stopped_reason.startswith("stopped: wall-time limit")
    assert not local.llm.engine.has_unfinished()  # the abandoned request was aborted, its blocks freed
    assert local.chat([{"role": "user", "content": "Hi"}], max_tokens=2).usage.completion_tokens == 2


def test_conversation_outgrowing_the_context_stops_honestly_with_exit_0():
    """The built-in model with a 700-token context (num_ctx): the ReAct prompt (~450 tokens) fits, but each step adds the
    reply and an Observation, so the conversation stops fitting before max_iterations. The run must end with the
    honest stop, the trace printed so far, and exit 0."""
    from athanor.llm.local import LocalChatModel

    model = LocalChatModel.load("smollm2", num_ctx=700)
    assert model.llm.engine.max_model_len == 700
    out = io.StringIO()
    status = agent_command(model, "calculator", QUESTION, max_iterations=50, out=out)
    lines = out.getvalue().splitlines()
    assert status == 0, lines
    assert lines[-1] == "Agent stopped: the conversation no longer fits the 700-token context without an answer."
    assert any(line.startswith("[1] ") for line in lines)  # the partial trace came out first
    assert not any(line.startswith("AI:") for line in lines)
