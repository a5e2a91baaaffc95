"""The OpenAI Agents SDK (`openai-agents`) running an Agent with a function tool against our /v1/responses, with
smollm2: `OpenAIResponsesModel` over `AsyncOpenAI(base_url=...)`, tracing off. tool_choice "required" on the
first turn makes the tool path deterministic (smollm2 is too weak to choose it reliably); the SDK then sends the
tool's output back as a function_call_output item and the run ends with the model's final text."""

from __future__ import annotations

import asyncio

import pytest

agents = pytest.importorskip("agents")


def test_agent_calls_the_tool_and_finishes(server):
    from openai import AsyncOpenAI

    calls: list[str] = []

    @agents.function_tool
    def get_weather(city: str) -> str:
        """Current weather of a city."""
        calls.append(city)
        return f"It is sunny and 21 C in {city}."

    agents.set_tracing_disabled(True)
    client = AsyncOpenAI(base_url=f"{server.url}/v1", api_key="unused", max_retries=0, timeout=300)
    model = agents.OpenAIResponsesModel(model="smollm2", openai_client=client)
    agent = agents.Agent(name="weather", instructions="Answer weather questions with the get_weather tool.",
                         tools=[get_weather], model=model,
                         model_settings=agents.ModelSettings(tool_choice="required", max_tokens=200, temperature=0,
                                                             parallel_tool_calls=False),
                         reset_tool_choice=True)  # after the tool ran, the model may answer in text
    result = asyncio.run(agents.Runner.run(agent, "What is the weather in Paris?", max_turns=3))
    assert calls, "the tool was never called"
    kinds = [item.type for item in result.new_items]
    assert kinds[:2] == ["tool_call_item", "tool_call_output_item"]
    assert isinstance(result.final_output, str) and result.final_output.strip()
    assert kinds[-1] == "message_output_item"


def test_streamed_agent_run(server):
    """Runner.run_streamed reads our Responses SSE events (created ... completed) through the SDK's stream."""
    from openai import AsyncOpenAI

    calls: list[str] = []

    @agents.function_tool
    def get_time(city: str) -> str:
        """Local time in a city."""
        calls.append(city)
        return f"It is 10:00 in {city}."

    agents.set_tracing_disabled(True)
    client = AsyncOpenAI(base_url=f"{server.url}/v1", api_key="unused", max_retries=0, timeout=300)
    agent = agents.Agent(name="clock", instructions="Answer time questions with the get_time tool.",
                         tools=[get_time], model=agents.OpenAIResponsesModel(model="smollm2", openai_client=client),
                         model_settings=agents.ModelSettings(tool_choice="required", max_tokens=200, temperature=0,
                                                             parallel_tool_calls=False),
                         reset_tool_choice=True)

    async def run():
        result = agents.Runner.run_streamed(agent, "What time is it in Tokyo?", max_turns=3)
        kinds = [e.type async for e in result.stream_events()]
        return result, kinds

    result, kinds = asyncio.run(run())
    assert calls and "raw_response_event" in kinds and "run_item_stream_event" in kinds
    assert isinstance(result.final_output, str) and result.final_output.strip()
