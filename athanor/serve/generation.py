"""One engine request as the routes see it: primed before any byte is sent, timed, counted, always aborted.

`Generation.start()` pulls the first delta so that a prompt too long for the context (or any other input
error the engine finds) becomes a 400 before a streaming response has begun. `merge()` interleaves the
deltas of n choices. `StreamResponse` closes its body when the client goes away, which aborts the engine
requests and frees their KV blocks. Not for API shapes (openai_api.py, ollama_api.py).
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time

from fastapi.responses import StreamingResponse

from athanor.runtime.async_engine import in_own_thread
from athanor.runtime.request_id import new_request_id
from athanor.runtime.results import Completion, RequestDelta
from athanor.serve.errors import ServeError, to_serve_error

log = logging.getLogger("athanor.serve")


def vocab_size(model) -> int:
    return model.llm.engine.runner.model.config.vocab_size


def check_request(model, prompts: list[list[int]], params, max_pending: int, n: int = 1) -> None:
    """Input the engine would only notice mid-batch (where it fails every request): out-of-vocab ids.
    And admission by sequences, not requests (each prompt x each of n choices is one): a request asking for
    more than `max_pending` sequences alone -> 400; with those already in flight over it -> 503 + Retry-After."""
    new = len(prompts) * n
    if new > max_pending:
        raise ServeError(f"this request asks for {new} sequences ({len(prompts)} prompts x n={n}); the server runs at "
                         f"most {max_pending} per model at once: split it", 400, "n")
    in_flight = max(model.num_active - 1, len(model.llm.engine.requests))  # num_active counts this request
    if in_flight + new > max_pending:
        raise ServeError(f"server busy: {in_flight} sequences in flight for {model.name} (limit {max_pending}); "
                         "retry soon", 503, code="overloaded", headers={"Retry-After": "1"})
    vocab = vocab_size(model)
    bad = [t for ids in prompts for t in ids if not 0 <= t < vocab]
    if bad:
        raise ServeError(f"prompt has token ids outside the vocabulary (size {vocab}): {bad[:5]}", 400, "prompt")
    params.validate_for_vocab(vocab)


async def compile_guide(make_guide, llm, param: str):
    """Build a request's grammar off the event loop (the first one per model builds a token trie, ~0.2 s);
    a schema the compiler rejects is the client's 400."""
    from athanor.text.grammar import GrammarError

    try:
        return await asyncio.to_thread(make_guide, llm)
    except GrammarError as e:
        raise ServeError(str(e), 400, param) from None


async def run_embed(model, inputs: list, truncate: bool) -> tuple[list[list[float]], int]:
    """LLM.embed off the event loop, in a thread that ends with it (async_engine.in_own_thread: a pooled thread would
    keep an OpenMP pool that slows the engine's decode steps); too-long or empty inputs are the client's 400."""
    try:
        return await in_own_thread(model.llm.embed, inputs, truncate)
    except Exception as e:  # noqa: BLE001 - mapped to 400/404, anything else re-raised
        err = to_serve_error(e)
        err.param = "input" if err.status == 400 else err.param
        raise err from None


def cut_dimensions(vectors: list[list[float]], dimensions: int | None) -> list[list[float]]:
    """`dimensions` on /v1/embeddings and /api/embed alike, as Ollama and OpenAI's v3 embedders do: keep the first
    `dimensions` values and L2-normalise again; outside 1..size is the client's 400."""
    if dimensions is None:
        return vectors
    size = len(vectors[0]) if vectors else 0
    if not 1 <= dimensions <= size:
        raise ServeError(f"dimensions must be between 1 and {size} (this model's embedding size), got {dimensions}",
                         400, "dimensions")
    out = []
    for v in vectors:
        head = v[:dimensions]
        norm = sum(x * x for x in head) ** 0.5 or 1.0
        out.append([x / norm for x in head])
    return out


def choice_params(params, index: int):
    """Choice `index` of n: the same options, but a seeded request gets seed + index so choices differ."""
    if params.seed is None or index == 0:
        return params
    return dataclasses.replace(params, seed=(params.seed + index) % 2**63)


Result = Completion  # a finished (or aborted) choice: one family of result types (runtime/results.py)


class Generation:
    def __init__(self, model, prompt_ids: list[int], params, metrics, index: int = 0) -> None:
        self.model, self.prompt_ids, self.params, self.metrics = model, prompt_ids, params, metrics
        self.index = index
        self.request_id = new_request_id()  # the HTTP request id + a counter (runtime/request_id.py)
        self.result = Result(num_prompt_tokens=len(prompt_ids))
        self.t_start = time.perf_counter()
        self.t_first: float | None = None
        self.t_last = 0.0  # when the latest token arrived
        self.t_end: float | None = None
        self._iter = None
        self._first: RequestDelta | None = None

    async def start(self) -> Generation:
        """Submit and wait for the first delta; engine input errors are raised here as ServeError."""
        self._iter = self.model.engine.generate(self.prompt_ids, self.params, self.request_id)
        try:
            self._first = await self._iter.__anext__()
        except Exception as e:  # noqa: BLE001 - mapped to 400/404, anything else re-raised
            raise to_serve_error(e) from None
        return self

    async def deltas(self):
        """The deltas, first one included; results and metrics are updated as they pass."""
        assert self._first is not None, "start() first"
        yield self._note(self._first)
        if self._first.finish_reason is not None:
            return
        async for delta in self._iter:
            yield self._note(delta)

    async def run(self) -> Result:
        async for _ in self.deltas():
            pass
        return self.result

    def abort(self) -> None:
        if self.result.finish_reason is None:
            self.model.engine.abort(self.request_id)

    def _note(self, d: RequestDelta) -> RequestDelta:
        r = self.result
        if d.token_ids:
            now = time.perf_counter()
            if self.t_first is None:
                self.t_first = now
                self.metrics.observe_ttft(now - self.t_start)
            else:
                self.metrics.observe_itl(now - self.t_last)
            self.t_last = now
            self.metrics.note_tokens(len(d.token_ids))
        r.text += d.text
        r.token_ids += d.token_ids
        r.logprobs += d.logprobs
        r.num_output_tokens = d.num_output_tokens or len(r.token_ids)
        r.num_prompt_tokens = d.num_prompt_tokens or r.num_prompt_tokens
        r.num_cached_tokens = d.num_cached_tokens
        if d.finish_reason is not None:
            r.finish_reason = d.finish_reason
            self.t_end = time.perf_counter()
            self.metrics.count_tokens(r.num_prompt_tokens, r.num_output_tokens)
        return d

    # Ollama reports nanoseconds
    def durations_ns(self, load_seconds: float = 0.0) -> dict[str, int]:
        end = self.t_end or time.perf_counter()
        first = self.t_first or end
        return {"total_duration": int((end - self.t_start + load_seconds) * 1e9),
                "load_duration": int(load_seconds * 1e9),
                "prompt_eval_count": self.result.num_prompt_tokens,
                "prompt_eval_duration": int((first - self.t_start) * 1e9),
                "eval_count": self.result.num_output_tokens,
                "eval_duration": int((end - first) * 1e9)}


async def run_all(request, gens: list[Generation]) -> bool:
    """Run every choice to the end (a non-streamed answer) while watching the connection: a client that goes
    away aborts them, as a streamed one does. -> False when the client left (nothing to answer)."""
    async def work() -> None:
        for g in gens:
            await g.run()

    async def gone() -> None:
        while (await request.receive())["type"] != "http.disconnect":
            pass  # the body was read already: the next message is the disconnect

    tasks = [asyncio.create_task(work()), asyncio.create_task(gone())]
    try:
        done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        if tasks[0] in done:
            tasks[0].result()  # raise the engine's error, if any
            return True
        log.info("client went away: aborting %d choice(s)", len(gens))
        return False
    finally:
        for t in tasks:
            t.cancel()
        for g in gens:
            g.abort()


async def start_all(gens: list[Generation]) -> list[Generation]:
    """Start every choice; if one fails, abort the others and raise its error."""
    try:
        await asyncio.gather(*(g.start() for g in gens))
    except BaseException:
        for g in gens:
            g.abort()
        raise
    return gens


async def merge(gens: list[Generation]):
    """(generation, delta) pairs from several choices as they arrive (one choice: no tasks needed)."""
    if len(gens) == 1:
        async for d in gens[0].deltas():
            yield gens[0], d
        return
    queue: asyncio.Queue = asyncio.Queue()

    async def pump(g: Generation) -> None:
        async for d in g.deltas():
            await queue.put((g, d))
        await queue.put((g, None))

    tasks = [asyncio.create_task(pump(g)) for g in gens]
    try:
        remaining = len(gens)
        while remaining:
            g, d = await queue.get()
            if d is None:
                remaining -= 1
            else:
                yield g, d
        for t in tasks:
            await t  # surface a pump's exception
    finally:
        for t in tasks:
            t.cancel()


class StreamResponse(StreamingResponse):
    """StreamingResponse that always closes its body: a client that disconnects mid-stream (the send fails
    or the task is cancelled) still runs the body's `finally`, which aborts the engine requests."""

    async def stream_response(self, send) -> None:
        try:
            await super().stream_response(send)
        finally:
            await self.body_iterator.aclose()


def stream_body(gens: list[Generation], lines, on_close, on_error):
    """Wrap an async iterator of str/bytes so leaving it (done, error, disconnect) aborts and releases.
    An engine failure after the stream began becomes one last `on_error(message)` chunk (status is sent)."""

    async def body():
        try:
            async for chunk in lines:
                yield chunk
        except Exception as e:
            log.exception("stream failed")
            yield on_error(f"generation failed: {type(e).__name__}: {e}")
        finally:
            for g in gens:
                g.abort()
            try:
                await lines.aclose()  # closes merge()'s pump tasks too
            finally:
                on_close()

    return body()
