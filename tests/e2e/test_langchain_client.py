"""LangChain's ChatOpenAI (unchanged, pointed at athanor) answers, streams and runs concurrent batches."""

from __future__ import annotations

import pytest

langchain_openai = pytest.importorskip("langchain_openai")


@pytest.fixture(scope="module")
def chat(server):
    return langchain_openai.ChatOpenAI(model="smollm2", base_url=f"{server.url}/v1", api_key="unused",
                                       temperature=0, max_tokens=20, max_retries=0, timeout=60)


def test_invoke_stream_and_batch(chat):
    answer = chat.invoke("What is the capital of France?")
    assert "Paris" in answer.content and answer.usage_metadata["output_tokens"] > 0
    streamed = "".join(chunk.content for chunk in chat.stream("What is the capital of France?"))
    assert streamed == answer.content
    batch = chat.batch(["What is the capital of France?"] * 3)
    assert [m.content for m in batch] == [answer.content] * 3
