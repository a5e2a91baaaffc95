"""AsyncEngine: concurrent requests share the loop, outputs equal one-at-a-time, abort/cancel free the blocks."""

from __future__ import annotations

import asyncio
import time

import pytest

from athanor.engine.config import EngineConfig
from athanor.engine.sampling_params import SamplingParams
from athanor.runtime.async_engine import AsyncEngine
from athanor.runtime.llm import LLM


@pytest.fixture(scope="module")
def llm(tiny_hf_dir):
    return LLM.load(str(tiny_hf_dir), EngineConfig(num_kvcache_blocks=64, block_size=8))


def all_free(llm) -> bool:
    bm = llm.engine.block_manager
    return bm.num_free_blocks == len(bm.blocks) and not llm.engine.requests


async def until(condition, message: str, timeout_s: float = 30.0) -> None:
    """Poll `condition` (the engine runs in its own thread) until it holds or the deadline passes."""
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, message
        await asyncio.sleep(0.01)


async def collect(engine, ids, params, rid):
    text, tokens, last = "", [], None
    async for d in engine.generate(ids, params, rid):
        text += d.text
        tokens += d.token_ids
        last = d
    return text, tokens, last


def test_concurrent_requests_match_sequential(llm):
    prompts = ["hello world", "The capital of France", "数字 12345", "emoji 🙂 too and more words here"]
    ids = [llm.tokenizer.encode(p) for p in prompts]
    params = SamplingParams(temperature=0, max_tokens=16, ignore_eos=True)
    alone = [llm.generate_ids([i], params)[0] for i in ids]
    engine = AsyncEngine(llm)
    try:
        async def main():
            return await asyncio.gather(*(collect(engine, i, params, f"r{n}") for n, i in enumerate(ids)))
        results = asyncio.run(main())
    finally:
        engine.shutdown()
    for (text, tokens, last), ref in zip(results, alone):
        assert tokens == ref.token_ids and text == ref.text
        assert last.finish_reason == "length" and last.num_output_tokens == 16
    assert all_free(llm)


def test_abort_and_cancel_free_blocks(llm):
    engine = AsyncEngine(llm)
    params = SamplingParams(temperature=0, max_tokens=200, ignore_eos=True)
    ids = llm.tokenizer.encode("hello world")
    try:
        async def main():
            # 1. explicit abort while streaming
            got = []
            async for d in engine.generate(ids, params, "a"):
                got.append(d)
                if len(got) == 3:
                    engine.abort("a")
            assert got[-1].finish_reason == "abort"
            # 2. consumer walks away (break) -> the generator's cleanup aborts the request
            async for d in engine.generate(ids, params, "b"):
                break
            # 3. a cancelled task
            task = asyncio.create_task(collect(engine, ids, params, "c"))
            await until(lambda: "c" in llm.engine.requests, "request c never reached the engine")
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            await until(lambda: all_free(llm), "the engine thread never processed the aborts")
        asyncio.run(main())
    finally:
        engine.shutdown()
    assert all_free(llm)


def test_stop_string_ends_request_and_bad_request_fails_alone(llm):
    engine = AsyncEngine(llm)
    ids = llm.tokenizer.encode("hello world")
    ref = llm.generate_ids([ids], SamplingParams(temperature=0, max_tokens=30, ignore_eos=True))[0]
    stop = ref.text[len(ref.text) // 2 : len(ref.text) // 2 + 2]
    assert stop.strip(), f"pick a visible stop string from {ref.text!r}"
    try:
        async def main():
            text, tokens, last = await collect(engine, ids, SamplingParams(temperature=0, max_tokens=30, stop=[stop], ignore_eos=True), "s")
            assert last.finish_reason == "stop" and stop not in text and ref.text.startswith(text)
            with pytest.raises(Exception, match="context holds"):
                await collect(engine, list(range(5)) * 1000, SamplingParams(max_tokens=5), "too-long")
        asyncio.run(main())
    finally:
        engine.shutdown()
    assert all_free(llm)
