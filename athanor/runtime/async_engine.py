"""AsyncEngine: many concurrent requests share one engine loop (continuous batching) for servers and apps.

One background thread owns the LLMEngine and calls `step()` while any request is unfinished; asyncio
callers get an async iterator of deltas per request. All engine state is touched only by that thread:
callers send "add" and "abort" through a queue. Text (detokenization, stop strings) is produced in the
engine thread so a stop string frees the request's blocks at once. Model work outside the engine (loading,
embeddings, prompt logprobs) goes through `in_own_thread`. Not for HTTP (serve/).
"""

from __future__ import annotations

import asyncio
import contextvars
import queue
import threading
import time
from dataclasses import dataclass
from typing import AsyncIterator

from athanor.engine.sampling_params import SamplingParams
from athanor.runtime.llm import LLM, TextStream
from athanor.runtime.results import RequestDelta


async def in_own_thread(fn, *args):
    """fn(*args) off the event loop in a new thread that ends with it, not asyncio.to_thread's pooled one. Model work
    runs OpenMP regions (torch, our kernels), and libgomp keeps a pool of workers for every thread that ran one, as
    long as that thread lives; managing more threads than cores, it cuts every worker's spin-wait to ~100 turns, so
    the engine thread's worker sleeps between a decode step's ~200 parallel regions and is woken by futex each time
    (SmolLM2 through `athanor serve`: 10-20% fewer tokens/s). When a thread ends, libgomp releases its pool and the
    engine's worker spins again (benchmarks/bench_serve_threads.py shows it per thread)."""
    loop = asyncio.get_running_loop()
    done = loop.create_future()
    context = contextvars.copy_context()  # as asyncio.to_thread: the caller's context variables

    def run() -> None:
        try:
            result, error = context.run(fn, *args), None
        except BaseException as e:  # noqa: BLE001 - handed to the awaiting coroutine, raised there
            result, error = None, e
        try:
            loop.call_soon_threadsafe(_settle, done, result, error)
        except RuntimeError:  # the loop closed meanwhile (shutdown): nobody is waiting
            pass

    threading.Thread(target=run, name="athanor-load", daemon=True).start()
    return await done


def _settle(future: asyncio.Future, result, error: BaseException | None) -> None:
    if future.cancelled():  # the caller gave up (a client went away): the result is dropped
        return
    if error is not None:
        future.set_exception(error)
    else:
        future.set_result(result)


@dataclass
class _Request:
    prompt_ids: list[int]
    params: SamplingParams
    request_id: str
    loop: asyncio.AbstractEventLoop
    out: asyncio.Queue
    text: TextStream | None = None


class AsyncEngine:
    def __init__(self, llm: LLM) -> None:
        self.llm = llm
        self._commands: queue.Queue = queue.Queue()
        self._live: dict[str, _Request] = {}
        self._wake = threading.Event()
        self._stopping = False
        self.last_step_time = time.monotonic()  # heartbeat: /health checks that the loop is alive
        self._thread = threading.Thread(target=self._loop, name="athanor-engine", daemon=True)
        self._thread.start()

    # --- caller side (any asyncio task) ------------------------------------------------------------------

    async def generate(self, prompt_ids: list[int], params: SamplingParams, request_id: str) -> AsyncIterator[RequestDelta]:
        """Add a request and yield its deltas until it finishes; leaving early (cancel, break) aborts it."""
        req = _Request(list(prompt_ids), params, request_id, asyncio.get_running_loop(), asyncio.Queue())
        self._send(("add", req))
        finished = False
        try:
            while True:
                item = await req.out.get()
                if isinstance(item, BaseException):
                    raise item
                finished = item.finish_reason is not None
                yield item
                if finished:
                    return
        finally:
            if not finished:
                self.abort(request_id)

    def abort(self, request_id: str) -> None:
        self._send(("abort", request_id))

    def abort_and_wait(self, request_id: str, timeout: float = 10.0) -> None:
        """Abort from a thread that is not the engine's, returning once the engine has freed the request's blocks."""
        done = threading.Event()
        self._send(("abort", (request_id, done)))
        done.wait(timeout)

    def shutdown(self) -> None:
        self._stopping = True
        self._wake.set()
        self._thread.join(timeout=10)

    def _send(self, cmd) -> None:
        self._commands.put(cmd)
        self._wake.set()

    # --- engine thread ------------------------------------------------------------------------------------

    def _loop(self) -> None:
        engine = self.llm.engine
        while not self._stopping:
            self._drain_commands()
            if not engine.has_unfinished():
                self.last_step_time = time.monotonic()
                self._wake.wait(timeout=0.5)
                self._wake.clear()
                continue
            try:
                outputs = engine.step()
            except Exception as e:  # a failing step must not hang every caller: fail them all, keep serving
                self._fail_all(e)
                continue
            self.last_step_time = time.monotonic()
            for out in outputs:
                self._deliver(out)

    def _drain_commands(self) -> None:
        while True:
            try:
                kind, arg = self._commands.get_nowait()
            except queue.Empty:
                return
            if kind == "add":
                self._add(arg)
            elif isinstance(arg, tuple):  # abort_and_wait: tell the waiting thread once it is done
                self._abort(arg[0])
                arg[1].set()
            else:
                self._abort(arg)

    def _add(self, req: _Request) -> None:
        try:
            self.llm.engine.add_request(req.prompt_ids, req.params, req.request_id)
        except Exception as e:  # bad request (too long, duplicate id): tell only that caller
            self._put(req, e)
            return
        req.text = TextStream(self.llm.tokenizer, req.params, req.prompt_ids)
        self._live[req.request_id] = req

    def _abort(self, request_id: str) -> None:
        req = self._live.pop(request_id, None)
        self.llm.engine.abort(request_id)
        if req is not None:
            self._put(req, RequestDelta(request_id, finish_reason="abort", num_prompt_tokens=len(req.prompt_ids)))

    def _deliver(self, out) -> None:
        req = self._live.get(out.request_id)
        if req is None:
            return
        text, stopped = req.text.feed(out.new_token_ids, out.finished)
        reason = out.finish_reason
        if stopped:  # a stop string, possibly on the token that also hit a length limit
            if reason is None:
                self.llm.engine.finish(out.request_id, "stop")
            reason = "stop"
        seq = out.seq
        delta = RequestDelta(out.request_id, text, out.new_token_ids, out.logprobs, reason,
                             seq.num_prompt_tokens, seq.num_output_tokens, seq.num_cached_tokens)
        if reason is not None:
            self._live.pop(out.request_id, None)
        self._put(req, delta)

    def _fail_all(self, error: Exception) -> None:
        for request_id, req in list(self._live.items()):
            self.llm.engine.abort(request_id)
            self._put(req, error)
        self._live.clear()

    @staticmethod
    def _put(req: _Request, item) -> None:
        try:
            req.loop.call_soon_threadsafe(req.out.put_nowait, item)
        except RuntimeError:  # the caller's event loop is gone; nothing to tell
            pass
