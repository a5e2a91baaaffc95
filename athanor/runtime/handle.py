"""ModelHandle: a registry model held for sync, in-process use (the CLI's chat, `LocalChatModel`).

A handle acquires the model from the process's registry (runtime/registry.py) and sends each request to the
model's AsyncEngine on the registry's event loop, so in-process requests are batched with HTTP traffic, share
the loaded weights and count in the same memory budget. `stream` yields `Delta`s ending with a `Completion`
(the same types `LLM.stream` yields), from any thread except the registry loop's own.
Not for: async callers (they `await registry.acquire` and use `model.engine.generate`), or HTTP shapes (serve/).
"""

from __future__ import annotations

import asyncio
import queue
import time
from collections.abc import Iterator

from athanor.runtime.registry import LoadedModel, ModelRegistry, get_registry
from athanor.runtime.request_id import new_request_id
from athanor.runtime.results import Completion, Delta

_END = object()


def _last(deltas) -> Completion:
    *_, last = deltas
    return last.completion


class ModelHandle:
    def __init__(self, registry: ModelRegistry, model: LoadedModel) -> None:
        self.registry, self.model = registry, model
        self._open = True

    @classmethod
    def open(cls, name: str, registry: ModelRegistry | None = None, num_ctx: int | None = None,
             keep_alive=None, manifest=None) -> ModelHandle:
        """Acquire `name` (a store name, or a .gguf file / HF directory when `manifest` is None and it is a path)."""
        registry = registry or get_registry()
        if manifest is None and name not in registry.models:
            manifest = _path_manifest(registry, name)
            name = manifest.name if manifest is not None else name
        model = registry.call(registry.acquire(name, keep_alive, num_ctx, manifest=manifest))
        return cls(registry, model)

    # --- the LLM's face ------------------------------------------------------------------------------------

    @property
    def llm(self):
        return self.model.llm

    @property
    def name(self) -> str:
        return self.model.name

    def __getattr__(self, attr: str):  # tokenizer, defaults, info, engine, load_seconds, chat_prompt, embed, ...
        # (stream / generate / chat are the handle's own: only the engine thread steps a registry model's engine)
        if attr in ("model", "registry"):
            raise AttributeError(attr)
        return getattr(self.model.llm, attr)

    # --- requests -------------------------------------------------------------------------------------------

    def stream(self, prompt_ids: list[int], params=None, request_id: str | None = None) -> Iterator[Delta]:
        """One request on the shared engine; text as it comes, then `Delta("", Completion)`. Stopping early aborts."""
        sp = self.llm.sampling_params(params)
        out: queue.Queue = queue.Queue()
        engine, request_id = self.model.engine, request_id or new_request_id()

        async def pump() -> None:
            try:
                async for delta in engine.generate(prompt_ids, sp, request_id):
                    out.put(delta)
            except Exception as e:  # noqa: BLE001 - handed to the caller's thread
                out.put(e)
            finally:
                out.put(_END)

        t0 = time.perf_counter()
        future = asyncio.run_coroutine_threadsafe(pump(), self.registry.sync_loop())
        first, last, pieces, token_ids, logprobs = None, None, [], [], []
        try:
            while (item := out.get()) is not _END:
                if isinstance(item, BaseException):
                    raise item
                if item.token_ids and first is None:
                    first = time.perf_counter()
                token_ids += item.token_ids
                logprobs += item.logprobs
                pieces.append(item.text)
                last = item
                if item.text:
                    yield Delta(item.text)
        finally:
            if last is None or last.finish_reason is None:  # left early: free the blocks before returning
                engine.abort_and_wait(request_id)
                future.cancel()
        end = time.perf_counter()
        first = first or end
        yield Delta("", Completion("".join(pieces), token_ids, last.finish_reason or "abort", last.num_prompt_tokens,
                                   last.num_cached_tokens, logprobs, first - t0, end - first))

    def generate_ids(self, prompt_ids: list[list[int]], params=None) -> list[Completion]:
        """Completions of several prompts (raw ids, no template), in order."""
        return [_last(self.stream(p, params)) for p in prompt_ids]

    def generate(self, prompts: list[str] | str, params=None) -> list[Completion]:
        """Raw completion (no chat template) of one or more prompts."""
        prompts = [prompts] if isinstance(prompts, str) else prompts
        return self.generate_ids([self.llm.tokenizer.encode(p) for p in prompts], params)

    def chat(self, messages: list[dict], params=None) -> Completion:
        return _last(self.stream(self.llm.chat_prompt(messages), params))

    def close(self) -> None:
        """Release the model (it stays loaded for its keep_alive, then unloads when idle)."""
        if self._open:
            self._open = False
            self.registry.sync_loop().call_soon_threadsafe(self.registry.release, self.model)

    def __enter__(self) -> ModelHandle:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _path_manifest(registry: ModelRegistry, name: str):
    """A manifest for a .gguf file / HF directory given by path (keyed by its absolute path), else None."""
    from athanor.errors import AthanorError

    try:
        registry.store.get(name)
        return None
    except AthanorError:  # not a store name (unknown, or not even a name's shape): maybe a path
        pass
    manifest = registry.store.resolve(name)  # not a path either -> the store's error
    return manifest.model_copy(update={"name": manifest.weights})
